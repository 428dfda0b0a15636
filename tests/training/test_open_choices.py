"""The choices the paper leaves open, as knobs: where the MNP filter sits (``filter_at``), Dinomaly's noisy bottleneck
(``bottleneck_dropout``) and the loose reconstruction targets (``loss_target``). Each trains (shapes, gradients to
every trainable part), changes nothing at inference that the exported graph does not reproduce, and its ablation
variant is a valid config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import torch  # noqa: E402

from training.ablate import VARIANTS  # noqa: E402
from training.backbones import Teacher, build_teacher  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.engine import training_step  # noqa: E402
from training.model import PRDModel  # noqa: E402
from training.onnx_graph import OnnxScorer, export_onnx  # noqa: E402

pytestmark = pytest.mark.torch

SIZE = 64
CATEGORIES = ["a", "b"]


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return build_teacher("efficientnet_lite0")


def _model(teacher: Teacher, **overrides: object) -> PRDModel:
    torch.manual_seed(0)
    values: dict = {"image_size": SIZE, "prototypes": 8, "embed_dim": 32, "decoder_width": 32, "memory_entries": 0}
    return PRDModel(TrainConfig(**{**values, **overrides}), CATEGORIES, teacher=teacher)


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))


def test_filter_on_the_teacher_keeps_prototypes_of_teacher_width_and_the_student_shapes(teacher: Teacher) -> None:
    model = _model(teacher, filter_at="teacher")
    features = model.teacher_features(_images())
    distilled = model.distill(features)
    assert model.bank is not None and model.bank.prototypes.shape == (8, sum(model.teacher.channels))
    assert distilled.filtered.shape == (2, sum(model.teacher.channels), 2, 2)  # the 1/32 grid of 64 px
    assert distilled.recall is not None and distilled.recall.rebuilt.shape == distilled.filtered.shape
    assert distilled.embedding.shape == (2, 32, 2, 2)
    assert [s.shape for s in distilled.student] == [f.shape for f in features]


def test_filter_on_the_teacher_hides_the_image_from_the_bottleneck(teacher: Teacher) -> None:
    """Every position is rebuilt from its one nearest prototype: two images whose fused vectors recall the same
    prototypes give the student identical inputs, whatever else differs in their teacher features."""
    model = _model(teacher, filter_at="teacher", recall_topk=1, prototypes=1).eval()
    with torch.no_grad():
        first, second = (model.distill(model.teacher_features(_images(1, seed))) for seed in (1, 2))
    torch.testing.assert_close(first.embedding, second.embedding)
    assert not torch.equal(first.filtered, second.filtered)


@pytest.mark.parametrize(
    "overrides",
    [{"filter_at": "teacher"}, {"bottleneck_dropout": 0.3}, {"loss_target": "global"}, {"loss_target": "group"}],
)
def test_one_training_step_reaches_every_trainable_part(teacher: Teacher, overrides: dict) -> None:
    model = _model(teacher, **overrides).train()
    loss, _ = training_step(model, [f.float() for f in model.teacher_features(_images(4))], model.config)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for name, parameter in model.named_parameters():
        if not name.startswith("teacher."):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bottleneck_dropout_is_noise_in_training_and_identity_in_eval(teacher: Teacher) -> None:
    noisy, clean = _model(teacher, bottleneck_dropout=0.5), _model(teacher)
    features = noisy.teacher_features(_images())
    noisy.train()
    first, second = noisy.distill(features).student[0], noisy.distill(features).student[0]
    assert not torch.allclose(first, second)  # a fresh mask each call
    clean.load_state_dict(noisy.state_dict())  # dropout has no weights: the same trained state fits both
    noisy.eval(), clean.eval()
    with torch.no_grad():
        torch.testing.assert_close(noisy(_images()).anomaly_map, clean(_images()).anomaly_map, rtol=0, atol=0)


@pytest.mark.parametrize("overrides", [{"filter_at": "teacher"}, {"bottleneck_dropout": 0.3}])
def test_exported_graph_scores_as_torch_and_holds_no_training_noise(
    teacher: Teacher, overrides: dict, tmp_path: Path
) -> None:
    model = _model(teacher, **overrides).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniformLike"}
    images = _images(3, seed=5)
    with torch.no_grad():
        expected = model(images)
    got = OnnxScorer(path).run(images.numpy())
    np.testing.assert_allclose(got.score, expected.score.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_every_ablation_variant_is_a_valid_config() -> None:
    for name, (description, overrides) in VARIANTS.items():
        assert description, name
        TrainConfig(**overrides)  # raises ConfigError naming the knob if a variant drifted out of range
    for name in ("prd_k64", "prd_k1024", "prd_top1", "prd_top16", "prd_filter_teacher", "prd_noise"):
        assert name in VARIANTS
    assert {VARIANTS[n][1]["loss_target"] for n in ("prd_global_loss", "prd_group_loss")} == {"global", "group"}


def test_defaults_keep_todays_model() -> None:
    config = TrainConfig()
    assert (config.filter_at, config.bottleneck_dropout, config.loss_target) == ("embedding", 0.0, "point")
    legacy = config.to_dict()
    for knob in ("filter_at", "bottleneck_dropout", "loss_target"):
        legacy.pop(knob)  # a config.json written before these knobs existed
    assert TrainConfig.from_dict(legacy) == TrainConfig.from_dict(config.to_dict())
