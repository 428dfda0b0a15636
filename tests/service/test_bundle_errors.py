"""Bundles the service must refuse, each with a message naming the file (and the service stays up, not ready)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from model_store.bundle import MANIFEST_FILE, BundleError, load_bundle, sha256_file
from model_store.manifest import GLOBAL_KEY
from service.runtime import open_model
from tests.fixtures.tiny_bundle import make_tiny_bundle, tiny_graph
from tests.service.harness import run, serving, settings_for, until


def _edit_manifest(directory: Path, **changes: object) -> Path:
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return path


def _open(store: Path) -> None:
    open_model(load_bundle(store, "tiny"), settings_for(store))


def test_corrupt_onnx_with_matching_checksum_is_refused_naming_the_graph(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path)
    (directory / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf graph")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    _edit_manifest(directory, onnx={**manifest["onnx"], "sha256": sha256_file(directory / "model.onnx")})
    with pytest.raises(BundleError, match=r"model\.onnx: ONNX Runtime cannot load the graph"):
        _open(tmp_path)


def test_old_format_version_is_refused_naming_the_manifest(tmp_path: Path) -> None:
    path = _edit_manifest(make_tiny_bundle(tmp_path), format_version=0)
    with pytest.raises(BundleError, match="format_version 0 is not supported") as refused:
        load_bundle(tmp_path, "tiny")
    assert str(path) in str(refused.value)


def test_checksum_mismatch_is_refused_naming_graph_and_manifest(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path)
    onnx.save(tiny_graph(16, 2), directory / "model.onnx")  # a valid graph, but not the one the manifest signed
    with pytest.raises(BundleError, match="does not match onnx.sha256") as refused:
        load_bundle(tmp_path, "tiny")
    assert str(directory / "model.onnx") in str(refused.value) and MANIFEST_FILE in str(refused.value)


def test_missing_category_threshold_is_refused_naming_the_category(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    del manifest["calibration"]["per_category"]["beta"]
    path = _edit_manifest(directory, calibration=manifest["calibration"])
    with pytest.raises(BundleError, match=r"no threshold for \['beta'\]") as refused:
        load_bundle(tmp_path, "tiny")
    assert str(path) in str(refused.value)


def test_missing_global_calibration_is_refused(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    del manifest["calibration"]["per_category"][GLOBAL_KEY]
    _edit_manifest(directory, calibration=manifest["calibration"])
    with pytest.raises(BundleError, match=GLOBAL_KEY):
        load_bundle(tmp_path, "tiny")


def test_graph_with_other_input_name_is_refused(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    _edit_manifest(directory, input={**manifest["input"], "name": "pixels"})
    with pytest.raises(BundleError, match="graph inputs \\['image'\\] != manifest input.name 'pixels'"):
        _open(tmp_path)


def test_category_count_differing_from_graph_is_refused_at_warm_up(tmp_path: Path) -> None:
    directory = make_tiny_bundle(tmp_path, categories=("alpha", "beta", "gamma"))
    onnx.save(tiny_graph(32, 2), directory / "model.onnx")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    _edit_manifest(directory, onnx={**manifest["onnx"], "sha256": sha256_file(directory / "model.onnx")})
    model = open_model(load_bundle(tmp_path, "tiny"), settings_for(tmp_path))
    with pytest.raises(BundleError, match="category_similarity") as refused:
        model.warm_up(1)
    assert "model.onnx" in str(refused.value) and "3 categories" in str(refused.value)


def test_unknown_version_is_refused_listing_available_ones(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"no version '7'.*available: \[1\]"):
        load_bundle(tmp_path, "tiny", "7")


def test_service_with_broken_bundle_stays_alive_and_says_why_not_ready(tmp_path: Path) -> None:
    _edit_manifest(make_tiny_bundle(tmp_path), format_version=0)

    async def scenario() -> None:
        async with serving(settings_for(tmp_path), ready=False) as h:
            await until(lambda: "no model could be loaded" in h.state.manager.not_ready_reason, "load failed")
            ready = await h.client.get("/readyz")
            assert ready.status_code == 503
            assert "manifest.json" in ready.json()["reason"] and "format_version" in ready.json()["reason"]
            assert (await h.client.get("/healthz")).status_code == 200

    run(scenario())
