"""Damaged bundles fail with a BundleError naming the file and the field (unit level; the service maps them to HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


from model_store.bundle import BundleError, load_bundle, sha256_file, verify_graph_io  # noqa: E402
from training.onnx_graph import OnnxScorer  # noqa: E402

pytestmark = pytest.mark.torch


def _edit_manifest(store: Path, edit) -> Path:
    path = store / "prd" / "1" / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return path


def test_truncated_onnx_file_is_refused_by_its_checksum(store_copy: Path) -> None:
    store = store_copy
    graph = store / "prd" / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"prd/1/model\.onnx: sha256 [0-9a-f]{64} does not match onnx\.sha256"):
        load_bundle(store, "prd")


def test_corrupt_onnx_file_with_a_matching_checksum_is_refused_when_loaded(store_copy: Path) -> None:
    store = store_copy
    graph = store / "prd" / "1" / "model.onnx"
    graph.write_bytes(b"\x08\x07 this is not a protobuf graph" * 20)
    _edit_manifest(store, lambda raw: raw["onnx"].update(sha256=sha256_file(graph)))
    bundle = load_bundle(store, "prd")  # schema and checksum are fine: only loading the graph can tell
    with pytest.raises(BundleError, match=r"prd/1/model\.onnx: ONNX Runtime cannot load the graph"):
        OnnxScorer(bundle.onnx_path)


def test_manifest_from_an_older_format_is_refused(store_copy: Path) -> None:
    store = store_copy
    _edit_manifest(store, lambda raw: raw.update(format_version=0))
    expected = r"prd/1/manifest\.json: invalid manifest: .*format_version 0 is not supported"
    with pytest.raises(BundleError, match=expected):
        load_bundle(store, "prd")


def test_checksum_mismatch_names_both_files(store_copy: Path) -> None:
    store = store_copy
    _edit_manifest(store, lambda raw: raw["onnx"].update(sha256="0" * 64))
    expected = r"model\.onnx: sha256 .* in .*prd/1/manifest\.json \(file replaced or corrupted\)"
    with pytest.raises(BundleError, match=expected):
        load_bundle(store, "prd")


@pytest.mark.parametrize("missing", ["blobs", "__global__"])
def test_missing_category_threshold_is_refused(store_copy: Path, missing: str) -> None:
    store = store_copy
    _edit_manifest(store, lambda raw: raw["calibration"]["per_category"].pop(missing))
    with pytest.raises(BundleError, match=rf"manifest\.json: invalid manifest: .*no threshold for \['{missing}'\]"):
        load_bundle(store, "prd")


def test_graph_io_that_disagrees_with_the_manifest_is_refused(store_copy: Path) -> None:
    store = store_copy
    _edit_manifest(store, lambda raw: raw["outputs"].update(anomaly_map="heatmap"))
    bundle = load_bundle(store, "prd")
    scorer = OnnxScorer(bundle.onnx_path)
    with pytest.raises(BundleError, match=r"model\.onnx: graph has no outputs \['heatmap'\]"):
        verify_graph_io(bundle, scorer.input_names, scorer.input_types, scorer.output_names)
