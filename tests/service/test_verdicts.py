"""What a result says beyond the verdict: how unusual its score is among held-out normals (false-alarm probability),
how well it matched its category, whether it is a part the model knows at all; and the legend on every heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_store.manifest import CategoryCalibration
from service.imaging import LEGEND_BAR, LEGEND_GAP, heatmap_png, legend_height, threshold_level
from tests.fixtures.images import png
from tests.fixtures.tiny_bundle import calibration_entry, make_tiny_bundle, square_image
from tests.service.harness import run, serving, settings_for

RED = (255, 0, 0)


def _with_quantile_table(store: Path) -> None:
    """Every category's held-out normals spread evenly over 0..0.5 (21 quantiles, 0.025 apart)."""
    path = store / "tiny" / "1" / "manifest.json"
    raw = json.loads(path.read_text())
    for entry in raw["calibration"]["per_category"].values():
        entry["normal_quantiles"] = [0.025 * i for i in range(21)]
    path.write_text(json.dumps(raw))


def test_result_carries_the_false_alarm_probability_read_off_the_quantile_table(tmp_path: Path) -> None:
    store = tmp_path / "store"
    make_tiny_bundle(store)
    _with_quantile_table(store)

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            [result] = (await h.score(("red.png", png(square_image(32, 8, RED))))).json()["results"]
            assert result["score"] == pytest.approx(0.3125, abs=1e-5)
            assert result["false_alarm_probability"] == pytest.approx(1 - 0.3125 / 0.5, abs=1e-4)
            assert result["unknown_part"] is False
            assert 0.5 < result["category_similarity"] <= 1.0

    run(scenario())


def test_bundles_without_a_quantile_table_answer_null_probability(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            [result] = (await h.score(("red.png", png(square_image(32, 8, RED))))).json()["results"]
            assert result["false_alarm_probability"] is None
            assert result["category_similarity"] is not None

    run(scenario())


def test_an_image_below_the_recognition_floor_is_flagged_as_an_unknown_part(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, recognition_min_similarity=0.99)) as h:
            [result] = (await h.score(("red.png", png(square_image(32, 8, RED))))).json()["results"]
            assert result["unknown_part"] is True
            assert (result["category"], result["category_source"]) == (None, "unknown")
            assert result["category_similarity"] < 0.99

    run(scenario())


def test_a_given_category_is_never_an_unknown_part(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, recognition_min_similarity=0.99)) as h:
            image = ("red.png", png(square_image(32, 8, RED)))
            response = await h.client.post("/score", files=[("file", image)], data={"category": "beta"})
            [result] = response.json()["results"]
            assert result["unknown_part"] is False and result["category"] == "beta"
            as_alpha = await h.client.post("/score", files=[("file", image)], data={"category": "alpha"})
            alpha = as_alpha.json()["results"][0]  # red is alpha's colour: as beta it matches less well
            assert result["category_similarity"] < alpha["category_similarity"]

    run(scenario())


def _decode_bgr(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("overlay", [False, True])
@pytest.mark.parametrize("width", [64, 400])
def test_every_heatmap_carries_its_colour_scale_with_the_threshold_marked(width: int, overlay: bool) -> None:
    calibration = CategoryCalibration.model_validate(calibration_entry(0.25))  # map scale 0..0.5: threshold mid
    photo = np.full((48, width, 3), 90, np.uint8) if overlay else None
    png_bytes = heatmap_png(np.zeros((32, 32), np.float32), calibration, width, 48, photo)
    image = _decode_bgr(png_bytes)
    assert image.shape == (48 + legend_height(width), width, 3)
    bar = image[48 + LEGEND_GAP + LEGEND_BAR // 2].astype(int)  # one row through the colour bar (BGR)
    assert bar[0, 0] > bar[0, 2] and bar[-1, 2] > bar[-1, 0]  # JET: blue at map_lo, red at map_hi
    white = np.flatnonzero((bar == 255).all(axis=1))
    assert white.size and abs(white.mean() - threshold_level(calibration) * (width - 1)) <= 1
    assert threshold_level(calibration) == pytest.approx(0.5)
    labels = image[48 + LEGEND_GAP + LEGEND_BAR :]
    assert labels.any() == (width >= 320)  # the values are written only where they fit
