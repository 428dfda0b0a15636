"""One scoring rule: the shipped bundle scores real photos the same through training's path (calibration's
``OnnxScorer.score_files``) and the service's (``POST /score``), with the bundle's rule and with a similarity floor
that leaves some images of no known category."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from model_store.bundle import load_bundle
from tests.fixtures.real_data import PINNED_IMAGES, SHIPPED_STORE, require_real_data
from tests.service.harness import serving, settings_for

pytestmark = pytest.mark.torch

FLOOR = 0.9
"""Above the kolektor photos' best similarity (about 0.78–0.82) and below the others' (0.92–0.97)."""


def _served(paths: list[Path], floor: float | None) -> list[dict]:
    settings = settings_for(SHIPPED_STORE, model_name="prd", recognition_min_similarity=floor, max_batch_size=16)

    async def scenario() -> list[dict]:
        async with serving(settings) as h:
            files = [("files", (p.name, p.read_bytes())) for p in paths]
            response = await h.client.post("/score", files=files)
            assert response.status_code == 200, response.text
            return response.json()["results"]

    return asyncio.run(scenario())


@pytest.mark.parametrize("floor", [None, FLOOR], ids=["bundle-rule", "with-floor"])
def test_training_and_service_score_real_images_alike(floor: float | None) -> None:
    from training.onnx_graph import OnnxScorer

    data = require_real_data()
    paths = [data / name for name in PINNED_IMAGES]
    bundle = load_bundle(SHIPPED_STORE, "prd")
    planner = bundle.manifest.planner(floor)
    trained = OnnxScorer(bundle.onnx_path, planner).score_tiled(paths)
    served = _served(paths, floor)
    assert [r["score"] for r in served] == pytest.approx([t.score for t in trained], rel=1e-6)
    assert [r["category"] for r in served] == [t.category for t in trained]
    assert [r["tiles"] for r in served] == [t.tiles for t in trained]
    unknown = [r["filename"] for r in served if r["category"] is None]
    if floor is None:
        assert not unknown
    else:  # the floor does route some images away, and those are squashed, not tiled, on both paths
        assert sorted(unknown) == ["kos01_Part0.png", "kos10_Part3.png"]
        assert all(t.tiles == 1 for t in trained if t.category is None)
    np.testing.assert_allclose(
        OnnxScorer(bundle.onnx_path, planner).score_files(paths, batch_size=3).score,
        [t.score for t in trained],
        rtol=1e-6,
    )  # calibration scores in batches of files: the same answers
