"""The shipped default bundle's answers on real photos, pinned: a change that moves a score, a threshold, a
verdict, a recognised category or the tiles an image is cut into fails here, loudly. README quotes this table
("Pinned answers"); when a new default bundle ships, this table and README's change with it, on purpose."""

from __future__ import annotations

import asyncio

import pytest

from model_store.bundle import load_bundle
from tests.fixtures.real_data import PINNED_IMAGES, SHIPPED_STORE, require_real_data
from tests.service.harness import serving, settings_for

SHIPPED_VERSION = 7

PINNED = {  # image: (score, threshold, anomalous, category, tiles, share of held-out normals scoring as high)
    "kolektor/test/good/kos01_Part0.png": (6.5455, 7.9264, False, "kolektor", 3, 0.849),
    "kolektor/test/crack/kos10_Part3.png": (9.9013, 7.9264, True, "kolektor", 3, 0.000),
    "tire/test/good/000.png": (5.7096, 6.5319, False, "tire", 2, 0.286),
    "tire/test/hole/008.png": (7.9246, 6.5319, True, "tire", 2, 0.000),
    "wood/test/good/100.jpg": (7.8940, 10.8560, False, "wood", 1, 0.651),
    "wood/test/defect/100000007.jpg": (13.3549, 10.8560, True, "wood", 1, 0.000),
    "magnetic_tile/test/good/exp1_num_118871.jpg": (6.2885, 8.4335, False, "magnetic_tile", 1, 0.970),
    "magnetic_tile/test/blowhole/exp1_num_108719.jpg": (8.7179, 8.4335, True, "magnetic_tile", 1, 0.000),
}


def test_the_shipped_bundle_is_the_pinned_one() -> None:
    bundle = load_bundle(SHIPPED_STORE, "prd")  # verifies the graph's checksum too
    assert bundle.manifest.version == SHIPPED_VERSION
    assert list(PINNED) == list(PINNED_IMAGES)


def test_the_shipped_bundle_answers_real_photos_as_pinned() -> None:
    data = require_real_data()
    settings = settings_for(SHIPPED_STORE, model_name="prd", max_batch_size=16)

    async def scenario() -> list[dict]:
        async with serving(settings) as h:
            answers = []
            for name in PINNED:  # one request each, as a line camera sends them
                response = await h.client.post("/score", files=[("file", (name, (data / name).read_bytes()))])
                assert response.status_code == 200, response.text
                answers.extend(response.json()["results"])
            return answers

    for name, result in zip(PINNED, asyncio.run(scenario()), strict=True):
        score, threshold, anomalous, category, tiles, false_alarm = PINNED[name]
        assert result["score"] == pytest.approx(score, abs=1e-3), name
        assert result["threshold"] == pytest.approx(threshold, abs=1e-4), name
        assert (result["is_anomalous"], result["category"], result["tiles"]) == (anomalous, category, tiles), name
        assert result["category_source"] == "recognised" and result["unknown_part"] is False, name
        assert result["false_alarm_probability"] == pytest.approx(false_alarm, abs=1e-3), name
