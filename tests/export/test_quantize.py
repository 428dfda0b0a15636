"""``python -m training quantize``: an int8 bundle from a float one, its memory float, served unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from standin_prd import StandInPRD  # noqa: E402

from model_store.bundle import load_bundle  # noqa: E402
from model_store.triton import CONFIG_FILE, check_config  # noqa: E402
from tests.fixtures.images import png  # noqa: E402
from tests.service.harness import run, serving, settings_for  # noqa: E402
from training.cli import main  # noqa: E402
from training.data import load_images  # noqa: E402
from training.export import export_model  # noqa: E402
from training.quantize import FLOAT_SCOPES, INT8_SCOPES, QuantizeError, QuantizeSettings, quantize_bundle  # noqa: E402

pytestmark = pytest.mark.torch
QDQ = {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory: pytest.TempPathFactory, dataset) -> Path:
    """A float bundle of the stand-in with a patch memory under ``/anomaly_map/memory/``, as the real model has."""
    model = StandInPRD(dataset.categories, input_size=48, memory_entries=64)
    by_category = {c: load_images(dataset.samples("train", c), 48, progress=False) for c in dataset.categories}
    model.fit_centroids(by_category)
    model.fit_memory(np.concatenate(list(by_category.values())))
    store = tmp_path_factory.mktemp("float_store")
    return export_model(model, store, dataset, name="prd")


@pytest.fixture(scope="module")
def int8_bundle(float_bundle: Path, dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = dataset.train[0].path.parents[3]
    store = tmp_path_factory.mktemp("int8_store")
    settings = QuantizeSettings(images_per_category=4, parity_images=6)
    return quantize_bundle(float_bundle, [root], store, "prd-int8", settings=settings)


def test_quantize_writes_an_int8_bundle_with_its_parity_against_the_float_graph(int8_bundle: Path) -> None:
    bundle = load_bundle(int8_bundle.parent.parent, "prd-int8", 1)  # schema and checksum verified
    manifest = bundle.manifest
    assert manifest.onnx.precision == "int8"
    assert manifest.metrics["recalibrated_from"] == "prd/1"
    record = manifest.metrics["quantization"]
    assert record["source"] == "prd/1"
    assert record["settings"]["per_channel"] is True
    assert record["quantized_nodes"] > 0 and record["calibration_inputs"] == 4 * 3
    parity = record["float_parity"]
    assert parity["n_images"] == 6
    assert 0.0 <= parity["score_mean_rel_diff"] <= parity["score_max_rel_diff"]
    assert 0.0 <= parity["category_agreement"] <= 1.0
    for entry in manifest.calibration.per_category.values():
        assert entry.threshold > entry.score_lo and entry.normal_quantiles  # calibrated on the int8 graph
    config = int8_bundle.parent / CONFIG_FILE
    check_config(config.read_text(), manifest)  # Triton's configuration is the float bundle's, unchanged


def test_only_the_convolution_scopes_past_the_stem_are_quantised_and_the_memory_stays_float(int8_bundle: Path) -> None:
    graph = onnx.load(str(int8_bundle / "model.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    memory = [n for n in graph.node if n.name.startswith("/anomaly_map/memory/")]
    assert memory and not [n.name for n in memory if n.op_type in QDQ or n.op_type.startswith("QLinear")]
    weights = {t.name: t for t in graph.initializer}
    for node in memory:  # what a memory node dequantises is the teacher's output, never one of its own weights
        dequantised = [producer[i].input[0] for i in node.input if i in producer and producer[i].op_type in QDQ]
        assert not [w for w in dequantised if w in weights], node.name
    read = [weights[i] for n in memory for i in n.input if i in weights and len(weights[i].dims) == 2]
    assert read and all(t.data_type == onnx.TensorProto.FLOAT for t in read)  # the entries, in float32
    convs = [n for n in graph.node if n.op_type == "Conv"]
    fed = {n.name: producer.get(n.input[0]) for n in convs}
    quantised = [name for name, src in fed.items() if src is not None and src.op_type == "DequantizeLinear"]
    assert quantised and all(name.startswith(INT8_SCOPES) for name in quantised)
    assert not [name for name in quantised if name.startswith(FLOAT_SCOPES)]  # the teacher's stem reads pixels
    assert [name for name in fed if name.startswith("/teacher/stem/")]  # and is there, a float convolution
    assert any(not name.startswith(INT8_SCOPES) for name in fed)  # the blur stays a float convolution
    assert all(fed[name] is None or fed[name].op_type != "DequantizeLinear" for name in fed if "blur" in name)


def test_the_service_serves_the_int8_bundle_unchanged(int8_bundle: Path) -> None:
    store = int8_bundle.parent.parent
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)

    async def scenario() -> None:
        async with serving(settings_for(store, model_name="prd-int8")) as h:
            models = (await h.client.get("/models")).json()
            assert models["precision"] == "int8"
            response = await h.score(("part.png", png(image)))
            assert response.status_code == 200, response.text
            [result] = response.json()["results"]
            assert np.isfinite(result["score"]) and result["threshold"] > 0

    run(scenario())


def test_quantize_refuses_a_folder_that_is_not_a_bundle_in_one_line(dataset, tmp_path: Path) -> None:
    root = dataset.train[0].path.parents[3]
    with pytest.raises(SystemExit, match=r"quantize failed: .*nothing: not a bundle folder \(no manifest.json"):
        main(["quantize", str(tmp_path / "nothing"), "--data", str(root), "--store", str(tmp_path), "--name", "q"])


def test_quantize_refuses_data_without_images_in_one_line(float_bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["quantize", str(float_bundle), "--data", str(empty), "--store", str(tmp_path / "s"), "--name", "q"]
    with pytest.raises(SystemExit, match=rf"quantize failed: no categories found under {empty}"):
        main(args)
    assert not (tmp_path / "s" / "q").exists()


def test_quantize_refuses_a_bundle_that_is_not_fp32(float_bundle: Path, dataset, tmp_path: Path) -> None:
    copy = tmp_path / "store" / "prd" / "1"
    shutil.copytree(float_bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["onnx"]["precision"] = "int8"
    (copy / "manifest.json").write_text(json.dumps(raw))
    root = dataset.train[0].path.parents[3]
    with pytest.raises(QuantizeError, match=r"manifest.json: onnx.precision is 'int8'; quantize needs an fp32"):
        quantize_bundle(copy, [root], tmp_path / "out", "q")


def test_quantize_settings_refuse_bad_values_before_any_work() -> None:
    with pytest.raises(QuantizeError, match="--images-per-category must be at least 1"):
        QuantizeSettings(images_per_category=0)
    with pytest.raises(QuantizeError, match="--method 'median'"):
        QuantizeSettings(method="median")  # type: ignore[arg-type]
