"""training.prototypes: MNP bank with SPR recall — each position rebuilt from exactly its top-k prototypes, gradient
reaching only recalled prototypes, dense recall for k=0, seeding on embeddings and re-seeding of dead prototypes."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.prototypes import PrototypeBank  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

K, D = 16, 8


def _embedding(n: int = 2, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, h, w, generator=torch.Generator().manual_seed(seed))


def _bank(count: int = K, topk: int = 2, temperature: float = 0.1) -> PrototypeBank:
    torch.manual_seed(0)
    return PrototypeBank(count, D, topk, temperature)


def test_recall_shapes_and_best_similarity_is_the_top_cosine() -> None:
    bank, z = _bank(), _embedding()
    recall = bank(z)
    assert recall.rebuilt.shape == z.shape
    assert recall.best_similarity.shape == (2, 3, 4)
    assert recall.indices.shape == (2, 3, 4, 2)
    cos = torch.einsum("ndhw,kd->nhwk", F.normalize(z, dim=1), F.normalize(bank.prototypes, dim=1))
    torch.testing.assert_close(recall.best_similarity, cos.max(dim=-1).values)


def test_each_position_is_a_convex_combination_of_exactly_its_k_recalled_prototypes() -> None:
    bank, z = _bank(topk=3), _embedding()
    recall = bank(z)
    with torch.no_grad():
        prototypes = F.normalize(bank.prototypes, dim=1)
        cos = torch.einsum("ndhw,kd->nhwk", F.normalize(z, dim=1), prototypes)  # (N, H, W, K)
        expected_top = cos.topk(3, dim=-1).indices
        assert torch.equal(recall.indices.sort(dim=-1).values, expected_top.sort(dim=-1).values)
        weights = torch.softmax(cos.gather(-1, recall.indices) / bank.temperature, dim=-1)  # (N, H, W, k)
        assert torch.all(weights > 0)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 3, 4))
        rebuilt = torch.einsum("nhwk,nhwkd->ndhw", weights, bank.prototypes[recall.indices])
    torch.testing.assert_close(recall.rebuilt, rebuilt)


def test_rebuilt_vectors_do_not_depend_on_prototypes_outside_the_top_k() -> None:
    bank, z = _bank(topk=2), _embedding()
    before = bank(z)
    unused = sorted(set(range(K)) - set(before.indices.unique().tolist()))
    assert unused, "the test needs at least one never-recalled prototype"
    with torch.no_grad():  # shrink (not rotate) unused prototypes: cosine order and recall stay the same
        bank.prototypes[unused] *= 0.5
    after = bank(z)
    assert torch.equal(after.indices, before.indices)
    torch.testing.assert_close(after.rebuilt, before.rebuilt)


def test_gradient_reaches_only_recalled_prototypes() -> None:
    bank, z = _bank(topk=2), _embedding(h=2, w=2)
    recall = bank(z)
    (recall.rebuilt.square().sum() + recall.best_similarity.sum()).backward()
    grad = bank.prototypes.grad
    recalled = torch.zeros(K, dtype=torch.bool)
    recalled[recall.indices.flatten()] = True
    assert 0 < recalled.sum() < K
    assert torch.all(grad[~recalled] == 0)
    assert torch.all(grad[recalled].abs().sum(dim=1) > 0)


def test_topk_zero_means_dense_recall_over_all_prototypes() -> None:
    bank, z = _bank(topk=0), _embedding()
    assert bank.topk == K
    recall = bank(z)
    assert recall.indices.shape[-1] == K
    assert torch.equal(recall.indices.sort(dim=-1).values[0, 0, 0], torch.arange(K))
    recall.rebuilt.sum().backward()
    assert torch.all(bank.prototypes.grad.abs().sum(dim=1) > 0)


def test_topk_larger_than_the_bank_is_clamped_and_empty_bank_is_refused() -> None:
    assert _bank(count=4, topk=10).topk == 4
    with pytest.raises(ValueError, match="at least one"):
        PrototypeBank(0, D, 2, 0.1)


def test_seed_from_puts_every_prototype_on_an_embedding_vector() -> None:
    bank, z = _bank(), _embedding()
    assert not bank.initialised
    bank.seed_from(z)
    assert bank.initialised
    vectors = z.permute(0, 2, 3, 1).reshape(-1, D)
    distances = torch.cdist(bank.prototypes.detach(), vectors)
    assert torch.all(distances.min(dim=1).values < 1e-5)
    assert len(set(distances.argmin(dim=1).tolist())) == K  # distinct positions
    assert bank(z).best_similarity.max() > 0.9999  # the seeded vectors are now recalled exactly


def test_usage_counts_only_in_training_mode() -> None:
    bank, z = _bank(), _embedding()
    bank.eval()
    bank(z)
    assert bank.usage.sum() == 0
    bank.train()
    bank(z)
    assert bank.usage.sum() == z.shape[0] * z.shape[2] * z.shape[3] * bank.topk  # every recalled place counts


def test_reseed_dead_moves_unused_prototypes_onto_worst_served_vectors_and_resets_usage() -> None:
    bank, z = _bank(), _embedding()
    bank.seed_from(z[:, :, :1, :1])  # prototypes 0-1 on real vectors; 2..K-1 stay random
    bank.train()
    bank(z)
    used = bank.usage > 0
    dead = (~used).nonzero().flatten()
    assert 0 < dead.numel() < K
    kept = bank.prototypes.detach()[used].clone()
    vectors = z.permute(0, 2, 3, 1).reshape(-1, D)
    served = (F.normalize(vectors, dim=1) @ F.normalize(bank.prototypes.detach(), dim=1).t()).max(dim=1).values
    worst = set(served.argsort()[: dead.numel()].tolist())
    moved = bank.reseed_dead(z)
    assert moved == dead.numel()
    assert bank.usage.sum() == 0
    torch.testing.assert_close(bank.prototypes.detach()[used], kept)
    distances = torch.cdist(bank.prototypes.detach()[dead], vectors)
    assert torch.all(distances.min(dim=1).values < 1e-5)
    assert set(distances.argmin(dim=1).tolist()) == worst


def test_reseed_dead_with_every_prototype_used_moves_nothing() -> None:
    bank = _bank(count=2, topk=1)
    z = bank.prototypes.detach().clone().reshape(2, D, 1, 1)  # each prototype recalls itself
    bank.train()
    bank(z)
    before = bank.prototypes.detach().clone()
    assert bank.reseed_dead(z) == 0
    assert torch.equal(bank.prototypes.detach(), before)
    assert bank.usage.sum() == 0
