"""training.model: PRDModel end to end at 64 px — the contract's outputs from uint8 NHWC, a student that matches the
teacher at every scale, gradients reaching every trainable part and never the teacher, plain RD when prototypes=0,
a loss that falls on a tiny set, and a checkpoint round trip without teacher weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from training.backbones import Teacher, build_teacher  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.loss import coherence_loss, distillation_loss  # noqa: E402
from training.memory import patch_descriptors  # noqa: E402
from training.model import (  # noqa: E402
    CHECKPOINT_FILE,
    PRDModel,
    RunError,
    ScoreOutput,
    load_run,
    save_checkpoint,
    with_resolved_taps,
)
from training.recognition import pooled_descriptor  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SIZE = 64
CATEGORIES = ["a", "b"]


def _config(**overrides: object) -> TrainConfig:
    # teacher_taps=None: the teacher's default taps, those of the shared `teacher` fixture
    values: dict = {
        "teacher": "efficientnet_lite0",
        "image_size": SIZE,
        "prototypes": 8,
        "embed_dim": 32,
        "decoder_width": 32,
        "teacher_taps": None,
    }
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    """Built once (≈0.5 s); frozen, so sharing it between tests cannot leak state."""
    return build_teacher("efficientnet_lite0")


def _model(teacher: Teacher, seed: int = 0, **overrides: object) -> PRDModel:
    torch.manual_seed(seed)
    return PRDModel(_config(**overrides), CATEGORIES, teacher=teacher)


def _textures(n: int, seed: int = 0) -> torch.Tensor:
    """Diagonal two-colour stripes with jittered phase and period plus pixel noise: uint8 NHWC, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = []
    for _ in range(n):
        period = SIZE / 6 * (1 + rng.normal(0, 0.05))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (0.8 * x + 0.6 * y) / period + rng.uniform(0, 2 * np.pi))
        image = np.array([40.0, 90.0, 160.0]) + wave[..., None] * np.array([160.0, 80.0, -100.0])
        images.append(np.clip(image + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images))


def _training_loss(model: PRDModel, features: list[torch.Tensor]) -> torch.Tensor:
    distilled = model.distill(features)
    config = model.config
    loss = distillation_loss(
        features,
        distilled.student,
        config.loss,
        config.hard_mining_quantile,
        config.magnitude_weight,
        config.loss_target,
    )
    if distilled.recall is not None:
        loss = loss + model.config.coherence_weight * coherence_loss(distilled.recall.best_similarity)
    return loss


def test_eval_forward_maps_uint8_nhwc_to_the_contract_outputs() -> None:
    model = PRDModel(_config(), CATEGORIES).eval()
    with torch.no_grad():
        out = model(_textures(3))
    assert isinstance(out, ScoreOutput)
    assert ScoreOutput._fields == ("score", "anomaly_map", "category_similarity")  # the ONNX output names
    assert out.score.shape == (3,)
    assert out.anomaly_map.shape == (3, 1, SIZE, SIZE)
    assert out.category_similarity.shape == (3, len(CATEGORIES))
    for tensor in out:
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    assert torch.all(out.anomaly_map >= -1e-5) and torch.all(out.score > 0)
    torch.testing.assert_close(out.score, out.anomaly_map.flatten(1).max(dim=1).values)  # default score rule: peak


def test_category_similarity_is_one_for_an_image_whose_descriptor_is_the_centroid(teacher: Teacher) -> None:
    model = _model(teacher).eval()
    images = _textures(2)
    descriptors = pooled_descriptor(model.teacher_features(images))
    per = model.centroids_per_category
    model.centroids.copy_(descriptors.flip(0).repeat_interleave(per, dim=0))  # category "a" ← image 1, "b" ← image 0
    with torch.no_grad():
        similarity = model(images).category_similarity
    torch.testing.assert_close(similarity.flip(1).diagonal(), torch.ones(2))  # image i ↔ category 1 - i
    assert torch.all(similarity <= 1 + 1e-5)


def test_each_image_is_measured_against_the_patch_memory_of_the_category_it_is_recognised_as(
    teacher: Teacher,
) -> None:
    model = _model(teacher, memory_entries=64, memory_per_category=True).eval()  # 64 = the 8×8 grid at 1/8 of 64 px
    images = torch.cat([_textures(1, seed=1), _textures(1, seed=2)])
    features = model.teacher_features(images)
    patches = patch_descriptors(features).flatten(2).transpose(1, 2)  # (2, 64, D): each image's own patches
    model.anomaly_map.memory.set_entries(patches.flip(0))  # memory of "a" ← image 1's patches, "b" ← image 0's
    per = model.centroids_per_category
    descriptors = pooled_descriptor(features)
    model.centroids.copy_(descriptors.flip(0).repeat_interleave(per, dim=0))  # image 0 is "b", image 1 is "a"
    with torch.no_grad():
        own, score_own = model.component_maps(features)[1], model(images).score
        model.centroids.copy_(descriptors.repeat_interleave(per, dim=0))  # now image 0 is "a", image 1 is "b"
        other = model.component_maps(features)[1]
        score_other = model(images).score
    # every patch is in the memory it was measured against (≈ 0 up to float32 cancellation in ‖q‖² − 2q·b + ‖b‖²);
    # the other image's memory has none of them
    assert other.amin(dim=(1, 2, 3)).min() > 10 * own.abs().max()
    assert torch.all(score_other > score_own)  # and the scoring forward picks the memory the same way


def test_student_maps_match_the_teacher_maps_at_all_three_scales(teacher: Teacher) -> None:
    model = _model(teacher)
    features = model.teacher_features(_textures(2))
    distilled = model.distill(features)
    assert [tuple(s.shape) for s in distilled.student] == [tuple(f.shape) for f in features]
    assert [f.shape[-1] for f in features] == [8, 4, 2]  # 64 px at 1/8, 1/16, 1/32
    assert distilled.embedding.shape == (2, 32, 2, 2)
    assert distilled.recall is not None and distilled.recall.rebuilt.shape == distilled.embedding.shape


def test_one_backward_pass_reaches_every_trainable_part_and_never_the_teacher(teacher: Teacher) -> None:
    model = _model(teacher).train()
    assert not model.teacher.training  # model.train() leaves the teacher in eval mode
    _training_loss(model, model.teacher_features(_textures(4))).backward()
    for prefix in ("bottleneck.", "decoder."):
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]
        assert named
        for name, parameter in named:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.bank is not None and model.bank.prototypes.grad.abs().sum() > 0
    for name, parameter in model.teacher.named_parameters():
        assert not parameter.requires_grad and (parameter.grad is None or not parameter.grad.any()), name


def test_trainable_parameters_are_exactly_the_non_teacher_parameters(teacher: Teacher) -> None:
    model = _model(teacher)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert len(trainable) == len(model.trainable_parameters())  # no duplicates for the optimiser
    assert not trainable & {id(p) for p in model.teacher.parameters()}
    expected = {id(p) for n, p in model.named_parameters() if not n.startswith("teacher.")}
    assert trainable == expected
    assert id(model.bank.prototypes) in trainable


def test_zero_prototypes_builds_plain_reverse_distillation(teacher: Teacher) -> None:
    model = _model(teacher, prototypes=0)
    assert model.bank is None
    assert not any("bank" in n for n, _ in model.named_parameters())
    features = model.teacher_features(_textures(2))
    distilled = model.distill(features)
    assert distilled.recall is None
    _training_loss(model.train(), features).backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    with torch.no_grad():
        out = model.eval()(_textures(2))
    assert out.anomaly_map.shape == (2, 1, SIZE, SIZE) and torch.isfinite(out.score).all()


def test_loss_falls_on_a_tiny_set_of_textures(teacher: Teacher) -> None:
    model = _model(teacher)
    features = model.teacher_features(_textures(8))  # cached: the teacher is frozen
    with torch.no_grad():
        model.bank.seed_from(model.bottleneck(features))
        initial = _training_loss(model.eval(), features).item()
    model.train()
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=model.config.lr, betas=model.config.betas)
    for _ in range(30):
        optimiser.zero_grad()
        _training_loss(model, features).backward()
        optimiser.step()
    with torch.no_grad():
        final = _training_loss(model.eval(), features).item()
    assert np.isfinite(final)
    assert final < 0.5 * initial


def test_checkpoint_round_trip_gives_identical_outputs_and_holds_no_teacher(teacher: Teacher, tmp_path: Path) -> None:
    model = _model(teacher).train()
    with torch.no_grad():
        model(_textures(4, seed=1))  # moves BatchNorm running statistics away from their defaults
        model.centroids.copy_(torch.randn_like(model.centroids))
    model.eval()
    images = _textures(2)
    with torch.no_grad():
        expected = model(images)
    save_checkpoint(model, tmp_path, epoch=3)

    payload = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    assert payload["epoch"] == 3 and payload["categories"] == CATEGORIES
    assert not [k for k in payload["model"] if k.startswith("teacher")]
    assert "bank.prototypes" in payload["model"] and "centroids" in payload["model"]
    assert not (tmp_path / (CHECKPOINT_FILE + ".tmp")).exists()

    loaded = load_run(tmp_path)
    assert not loaded.training and loaded.categories == CATEGORIES
    assert loaded.config.to_dict() == with_resolved_taps(model.config).to_dict()  # the taps it used, written out
    assert loaded.config.teacher_taps == list(model.teacher.taps)
    with torch.no_grad():
        got = loaded(images)
    for name, a, b in zip(ScoreOutput._fields, got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_load_run_without_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=CHECKPOINT_FILE) as caught:
        load_run(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_load_run_refuses_a_checkpoint_missing_trained_weights(teacher: Teacher, tmp_path: Path) -> None:
    save_checkpoint(_model(teacher), tmp_path)
    payload = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    payload["model"] = {k: v for k, v in payload["model"].items() if not k.startswith("decoder.")}
    torch.save(payload, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(RunError, match=CHECKPOINT_FILE):
        load_run(tmp_path)
