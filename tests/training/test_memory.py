"""The teacher-space patch memory: nearest distances, coreset selection, building from cached features."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.memory import (  # noqa: E402
    CHUNK_ENTRIES,
    PatchMemory,
    build_category_memories,
    build_memory,
    greedy_coreset,
    patch_descriptors,
)

pytestmark = pytest.mark.torch


def _features(n: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 6, 8, 8, generator=generator), torch.rand(n, 10, 4, 4, generator=generator)]


def test_descriptors_join_the_fine_grid_and_the_upsampled_coarse_map() -> None:
    descriptors = patch_descriptors(_features(2))
    assert descriptors.shape == (2, 16, 8, 8)


@pytest.mark.parametrize("count", [50, 2 * CHUNK_ENTRIES + 7], ids=["one-chunk", "three-chunks"])
def test_memory_distance_is_the_brute_force_nearest_neighbour_distance(count: int) -> None:
    features = _features(3, seed=1)
    entries = torch.rand(count, 16, generator=torch.Generator().manual_seed(2))
    memory = PatchMemory(len(entries), 16)
    memory.set_entries(entries)
    query = patch_descriptors(features).flatten(2).transpose(1, 2).reshape(-1, 16)
    expected = torch.cdist(query, entries).min(dim=1).values.reshape(3, 1, 8, 8)
    assert torch.allclose(memory(features), expected, atol=1e-4)


def test_a_patch_in_the_memory_is_at_distance_zero_and_others_are_not() -> None:
    features = _features(2, seed=3)
    descriptors = patch_descriptors(features).flatten(2).transpose(1, 2).reshape(-1, 16)
    memory = PatchMemory(64, 16)
    memory.set_entries(descriptors[:64])  # every position of the first image
    distances = memory(features)
    assert distances[0].abs().max() < 1e-3
    assert distances[1].min() > 1e-3


def test_greedy_coreset_keeps_a_rare_far_pattern_and_never_repeats_a_point() -> None:
    points = torch.randn(5000, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    points[1234] = 50.0  # one rare normal pattern far from the rest
    chosen = greedy_coreset(points, 20)
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
    assert 1234 in chosen.tolist()


def test_build_memory_selects_from_the_cached_features_and_fills_when_there_are_few_patches() -> None:
    features = [f.half() for f in _features(4, seed=4)]
    descriptors = patch_descriptors([f.float() for f in features]).flatten(2).transpose(1, 2).reshape(-1, 16)
    memory = build_memory(features, 100)
    assert memory.shape == (100, 16) and memory.dtype == torch.float32
    exact = "donot_use_mm_for_euclid_dist"
    distance_to_data = torch.cdist(memory, descriptors.half().float(), compute_mode=exact).min(dim=1).values
    assert distance_to_data.max() < 1e-3  # every entry is a real training patch
    full = build_memory(features, 300)  # 256 patches only: all of them, repeated to fill 300
    assert full.shape == (300, 16)
    assert torch.equal(full[256:], full[:44])


def test_set_entries_refuses_a_memory_of_another_shape() -> None:
    with pytest.raises(ValueError, match="memory entries must be"):
        PatchMemory(10, 16).set_entries(torch.zeros(11, 16))


def test_with_one_memory_per_bank_each_image_gets_the_nearest_distance_within_its_own_bank() -> None:
    features = _features(3, seed=5)
    banks = torch.rand(2, 2 * CHUNK_ENTRIES + 3, 16, generator=torch.Generator().manual_seed(6))
    memory = PatchMemory(banks.shape[1], 16, banks=2)
    memory.set_entries(banks)
    bank = torch.tensor([1, 0, 1])
    query = patch_descriptors(features).flatten(2).transpose(1, 2)  # (3, 64, 16)
    expected = torch.stack([torch.cdist(q, banks[b]).min(dim=1).values for q, b in zip(query, bank, strict=True)])
    assert torch.allclose(memory(features, bank), expected.reshape(3, 1, 8, 8), atol=1e-4)
    with pytest.raises(ValueError, match="2 banks"):
        memory(features)
    with pytest.raises(ValueError, match=r"\(2, 3, 16\)"):
        PatchMemory(3, 16, banks=2).set_entries(torch.zeros(3, 3, 16))


def test_category_memories_hold_only_their_own_categorys_patches() -> None:
    features = _features(4, seed=7)
    features = [torch.cat([f[:2], f[2:] + 100]) for f in features]  # images 2, 3 (category 1) far from the rest
    category_ids = torch.tensor([0, 0, 1, 1])
    memories = build_category_memories(features, category_ids, 2, 32)
    assert memories.shape == (2, 32, 16)
    assert memories[0].max() < 5 and memories[1].min() > 20  # each from its own images alone (zero-padded edges)
    with pytest.raises(ValueError, match="category index 2 has no training images"):
        build_category_memories(features, category_ids, 3, 32)
