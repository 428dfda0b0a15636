"""``python -m training recalibrate``: a released bundle's graph as a new version under today's scoring rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.bundle import load_bundle
from training.cli import main

pytestmark = pytest.mark.torch


def test_recalibrate_writes_the_next_version_with_the_same_graph(store_copy: Path, dataset) -> None:
    root = dataset.train[0].path.parents[3]
    source = load_bundle(store_copy, "prd", 1)
    raw = json.loads((source.directory / "manifest.json").read_text())
    raw["scoring"]["merge"]["scheme"] = "max-mean-squashed/1"  # as bundles before the crossfade were
    raw["scoring"]["routing"]["min_similarity"] = None
    for entry in raw["calibration"]["per_category"].values():
        entry.pop("normal_quantiles", None)
    (source.directory / "manifest.json").write_text(json.dumps(raw))
    assert main(["recalibrate", str(source.directory), "--data", str(root)]) == 0
    new = load_bundle(store_copy, "prd", 2)  # checksum verified against the copied graph
    assert new.manifest.onnx.sha256 == source.manifest.onnx.sha256
    assert new.manifest.scoring.merge.scheme == "max-feather-squashed/1"
    assert new.manifest.scoring.routing.min_similarity is not None  # derived, as an export derives it
    assert new.manifest.metrics["recalibrated_from"] == "prd/1"
    for key, entry in source.manifest.calibration.per_category.items():
        again = new.manifest.calibration.per_category[key]
        assert again.threshold == pytest.approx(entry.threshold, rel=1e-6), key  # same graph, same held-out normals
        assert again.normal_quantiles, key
    assert (store_copy / "prd" / "config.pbtxt").is_file()


def test_recalibrate_refuses_an_existing_version_in_one_line(store_copy: Path, dataset) -> None:
    root = dataset.train[0].path.parents[3]
    with pytest.raises(SystemExit, match=r"recalibrate failed: .*prd/1 already exists"):
        main(["recalibrate", str(store_copy / "prd" / "1"), "--data", str(root), "--version", "1"])
