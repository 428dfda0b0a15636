"""Export of a small stand-in model: bundle contents, ORT-vs-torch parity, file → score, fp16, versioning."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from standin_prd import StandInPRD  # noqa: E402

from model_store.bundle import load_bundle, read_manifest  # noqa: E402
from model_store.manifest import GLOBAL_KEY  # noqa: E402
from model_store.preprocess import load_model_input  # noqa: E402
from model_store.triton import CONFIG_FILE, check_config  # noqa: E402
from training.data import load_images  # noqa: E402
from training.export import ExportError, export_model  # noqa: E402
from training.onnx_graph import OnnxScorer  # noqa: E402
from training.parity import PARITY_RTOL, ParityError  # noqa: E402

pytestmark = pytest.mark.torch


def _torch_outputs(model: StandInPRD, images: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(images))
    return {name: value.numpy() for name, value in zip(out._fields, out, strict=True)}


def test_export_writes_a_bundle_that_load_bundle_accepts(store: Path, dataset) -> None:
    bundle = load_bundle(store, "prd", "latest")
    manifest = bundle.manifest
    assert bundle.directory == store / "prd" / "1"
    assert manifest.categories == dataset.categories
    assert set(manifest.calibration.per_category) == {*dataset.categories, GLOBAL_KEY}
    assert manifest.onnx.precision == "fp32" and manifest.onnx.opset >= 17
    assert (manifest.input.height, manifest.input.layout, manifest.input.dtype) == (48, "NHWC", "uint8")
    assert manifest.teacher == "standin_conv" and manifest.prd["top_k"] == 2
    assert manifest.metrics["mean"] == {"image_auroc": 0.5}  # RUN/metrics.json content is carried over
    assert manifest.metrics["export_parity"]["n_images"] == 8
    assert manifest.training_data["holdout"] == {"fraction": 0.1, "seed": 0}
    sources = {c: manifest.calibration.per_category[c].source for c in dataset.categories}
    assert sources["stripes"] == "validation/good" and sources["blobs"].startswith("train/good holdout")
    assert not list((store / "prd").glob(".export-*")), "the staging folder must not survive"


def test_graph_declares_exact_shapes_with_a_dynamic_batch(store: Path) -> None:
    graph = onnx.load(str(store / "prd" / "1" / "model.onnx")).graph

    def dims(value: onnx.ValueInfoProto) -> list[object]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in graph.input] == [("image", ["batch", 48, 48, 3])]
    assert [(v.name, dims(v)) for v in graph.output] == [
        ("score", ["batch"]),
        ("anomaly_map", ["batch", 1, 48, 48]),
        ("category_similarity", ["batch", 3]),
    ]


def test_onnx_runtime_matches_torch_on_generated_images(store: Path, model: StandInPRD) -> None:
    images = np.random.default_rng(3).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    served = OnnxScorer(store / "prd" / "1" / "model.onnx").run(images)
    reference = _torch_outputs(model, images)
    np.testing.assert_allclose(served.score, reference["score"], rtol=1e-4)
    peak = np.abs(reference["anomaly_map"]).max()
    assert np.abs(served.anomaly_map - reference["anomaly_map"][:, 0]).max() <= 1e-4 * peak
    np.testing.assert_allclose(served.category_similarity, reference["category_similarity"], atol=1e-5)


def test_file_scored_through_the_service_path_equals_the_training_score(store: Path, model, tmp_path: Path) -> None:
    """Odd sizes, grayscale and JPEG: bytes → preprocess → ORT equals training's loader → torch."""
    rng = np.random.default_rng(7)
    files = []
    for i, shape in enumerate([(90, 61, 3), (37, 120), (64, 64, 3)]):
        path = tmp_path / f"part{i}.{'jpg' if i == 0 else 'png'}"
        cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
        files.append(path)
    scorer = OnnxScorer(store / "prd" / "1" / "model.onnx")
    served = scorer.run(np.stack([load_model_input(p.read_bytes(), 48)[0] for p in files]))
    reference = _torch_outputs(model, load_images(files, 48, progress=False))
    np.testing.assert_allclose(served.score, reference["score"], rtol=1e-4)
    scores = scorer.score_files(files, batch_size=2)
    np.testing.assert_allclose(scores.score, served.score, rtol=1e-6)


def test_category_recognition_accuracy_is_recorded_from_the_test_images(store: Path, dataset) -> None:
    manifest = read_manifest(store / "prd" / "1" / "manifest.json")
    recorded = manifest.metrics["category_recognition"]
    scorer = OnnxScorer(store / "prd" / "1" / "model.onnx")
    similarity = scorer.score_files([s.path for s in dataset.test]).similarity
    predicted = [dataset.categories[i] for i in similarity.argmax(axis=1)]
    expected = np.mean([p == s.category for p, s in zip(predicted, dataset.test, strict=True)])
    assert recorded["n"] == len(dataset.test)
    assert recorded["accuracy"] == pytest.approx(expected)


def test_fp16_bundle_loads_and_stays_close_to_torch(store_copy: Path, model, dataset) -> None:
    store = store_copy
    target = export_model(model, store, dataset, name="prd", fp16=True)
    bundle = load_bundle(store, "prd", "latest")
    assert target == store / "prd" / "2" and bundle.manifest.onnx.precision == "fp16"
    proto = onnx.load(str(bundle.onnx_path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    images = np.random.default_rng(4).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    served = OnnxScorer(bundle.onnx_path).run(images)
    reference = _torch_outputs(model, images)
    np.testing.assert_allclose(served.score, reference["score"], rtol=PARITY_RTOL["fp16"])
    check_config((store / "prd" / CONFIG_FILE).read_text(), bundle.manifest)  # rewritten for the new latest


def test_export_never_overwrites_an_existing_version(store: Path, model, dataset) -> None:
    with pytest.raises(ExportError, match=r"prd/1 already exists"):
        export_model(model, store, dataset, name="prd", version=1)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"name": "my model"}, r"--name 'my model'"),
        ({"target_far": 0.0}, r"--target-far"),
        ({"version": 0}, "--version"),
    ],
)
def test_export_refuses_bad_options_before_any_work(model, dataset, tmp_path: Path, options, problem: str) -> None:
    with pytest.raises(ExportError, match=problem):
        export_model(model, tmp_path, dataset, **options)
    assert not any(tmp_path.iterdir())


class _DriftingModel(StandInPRD):
    """Python-side state the tracer freezes: the traced graph and later torch calls disagree."""

    calls = 0

    def forward(self, images: torch.Tensor):  # type: ignore[override]
        self.calls += 1
        out = super().forward(images)
        return type(out)(out.score + 0.01 * self.calls, out.anomaly_map, out.category_similarity)


def test_export_stops_and_leaves_nothing_when_parity_fails(dataset, tmp_path: Path) -> None:
    drifting = _DriftingModel(dataset.categories, input_size=48)
    with pytest.raises(ParityError, match=r"model\.onnx: ONNX Runtime and PyTorch disagree beyond 0\.0001"):
        export_model(drifting, tmp_path, dataset, name="prd")
    assert not (tmp_path / "prd" / "1").exists() and not list((tmp_path / "prd").glob(".export-*"))


def test_manifest_json_round_trips_through_the_schema(store: Path) -> None:
    raw = json.loads((store / "prd" / "1" / "manifest.json").read_text())
    assert (
        raw["format_version"] == 2
        and raw["scoring"]["tiling"]["scheme"] == "squash/1"
        and len(raw["onnx"]["sha256"]) == 64
    )
    assert raw["created_at"].endswith("+00:00")
