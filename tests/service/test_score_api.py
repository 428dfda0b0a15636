"""POST /score happy paths: single and multi image, every format, categories, heatmaps, the PNG answer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from service.imaging import legend_height
from tests.fixtures.images import encode, png, uniform
from tests.fixtures.tiny_bundle import square_image
from tests.service.harness import run, serving, settings_for

RED, GREEN = (255, 0, 0), (0, 255, 0)


def test_score_single_image_returns_predicted_score_and_recognised_category(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.score(("red.png", png(square_image(32, 8, RED))), field="file")
            assert response.status_code == 200
            body = response.json()
            assert body["model"] == {"name": "tiny", "version": 1}
            [result] = body["results"]
            assert result["filename"] == "red.png"
            assert result["score"] == pytest.approx((1 - 64 / 1024) / 3, abs=1e-5)
            assert (result["category"], result["category_source"]) == ("alpha", "recognised")
            assert result["threshold"] == 0.25 and result["is_anomalous"] is True
            assert (result["width"], result["height"]) == (32, 32)
            assert result["heatmap_png"] is None

    run(scenario())


def test_score_many_images_keeps_upload_order_across_formats_and_modes(store: Path) -> None:
    gray16 = np.full((40, 24), 30000, dtype=np.uint16)
    rgba = np.dstack([uniform(32), np.full((32, 32), 255, dtype=np.uint8)])
    files = [
        ("a.png", png(square_image(64, 16, GREEN))),
        ("b.jpg", encode(uniform(32, width=48), ".jpg")),
        ("c.bmp", encode(uniform(32), ".bmp")),
        ("d.tiff", encode(uniform(32), ".tiff")),
        ("e.webp", encode(uniform(32), ".webp")),
        ("f.png", encode(uniform(32)[:, :, 0], ".png")),
        ("g.png", encode(gray16, ".png")),
        ("h.png", encode(rgba, ".png")),
    ]

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.score(*files)
            assert response.status_code == 200
            results = response.json()["results"]
            assert [r["filename"] for r in results] == [name for name, _ in files]
            assert [r["index"] for r in results] == list(range(len(files)))
            assert results[0]["category"] == "beta"
            assert (results[1]["width"], results[1]["height"]) == (48, 32)
            assert (results[6]["width"], results[6]["height"]) == (24, 40)
            assert all(r["score"] < 0.05 for r in results[1:])  # uniform images barely deviate

    run(scenario())


def test_given_category_overrides_recognition_and_uses_its_threshold(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            image = ("red.png", png(square_image(32, 8, RED)))
            by_form = await h.client.post("/score", files=[("file", image)], data={"category": "beta"})
            by_query = await h.client.post("/score", files=[("file", image)], params={"category": "beta"})
            for response in (by_form, by_query):
                [result] = response.json()["results"]
                assert (result["category"], result["category_source"]) == ("beta", "given")
                assert result["threshold"] == 0.5 and result["is_anomalous"] is False
                # 0.5 * (0.3125 - 0.02) / (0.5 - 0.02)
                assert result["normalized_score"] == pytest.approx(0.3047, abs=1e-3)

    run(scenario())


def test_recognition_floor_falls_back_to_global_calibration(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store, recognition_min_similarity=0.99)) as h:
            [result] = (await h.score(("red.png", png(square_image(32, 8, RED))))).json()["results"]
            assert (result["category"], result["category_source"]) == (None, "unknown")
            assert h.metric("prd_images_scored_total", category="__global__", verdict="anomalous") == 1

    run(scenario())


def test_the_bundles_own_floor_routes_an_unsure_image_to_the_global_calibration(tmp_path: Path) -> None:
    from tests.fixtures.tiny_bundle import make_tiny_bundle

    store = tmp_path / "floored"
    make_tiny_bundle(store, min_similarity=0.99)

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            assert (await h.client.get("/models")).json()["scoring"]["routing"]["min_similarity"] == 0.99
            [result] = (await h.score(("red.png", png(square_image(32, 8, RED))))).json()["results"]
            assert (result["category"], result["category_source"]) == (None, "unknown")

    run(scenario())


def test_models_lists_the_categories_added_after_training(tmp_path: Path) -> None:
    import json

    from tests.fixtures.tiny_bundle import make_tiny_bundle

    folder = make_tiny_bundle(tmp_path / "added")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "added_categories": ["beta"]}))

    async def scenario() -> None:
        async with serving(settings_for(tmp_path / "added")) as h:
            info = (await h.client.get("/models")).json()
            assert [c["name"] for c in info["categories"]] == ["alpha", "beta"] and info["added_categories"] == ["beta"]

    run(scenario())


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_heatmap_is_png_at_image_size_on_calibrated_colour_scale(store: Path) -> None:
    import base64

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            photo = np.zeros((48, 64, 3), dtype=np.uint8)
            photo[:12, :16] = 255  # small bright block: high deviation (red end), background low (blue end)
            response = await h.score(("p.png", png(photo)), params={"heatmap": "true"})
            [result] = response.json()["results"]
            heat = _decode(base64.b64decode(result["heatmap_png"]))
            assert heat.shape == (48 + legend_height(64), 64, 3)  # the image, then its legend
            hot, cold = heat[3, 3].astype(int), heat[40, 60].astype(int)
            assert hot[0] > hot[2] and cold[2] > cold[0]

    run(scenario())


def test_overlay_blends_colour_map_over_the_photo(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            response = await h.score(
                ("g.png", png(uniform(32, 100))), params={"overlay": "true"}, headers={"Accept": "image/png"}
            )
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            pixel = _decode(response.content)[10, 10].astype(float)
            # map 0 → JET's dark blue (0, 0, 128); 0.55 × photo + 0.45 × colour
            assert pixel == pytest.approx([55, 55, 55 + 0.45 * 128], abs=2)

    run(scenario())


def test_accept_png_returns_the_heatmap_with_verdict_headers(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            image = ("part.png", png(square_image(64, 16)))
            response = await h.score(image, field="file", headers={"Accept": "image/png"})
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert _decode(response.content).shape == (64 + legend_height(64), 64, 3)
            assert float(response.headers["x-prd-score"]) == pytest.approx(0.9375, abs=1e-5)
            assert response.headers["x-prd-anomalous"] == "true"
            assert response.headers["x-prd-category-source"] == "recognised"
            assert response.headers["x-prd-model"] == "tiny/1"
            assert response.headers["x-prd-image-size"] == "64x64"

    run(scenario())


def test_accept_png_with_two_files_is_not_acceptable(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            files = [("a.png", png(uniform(32))), ("b.png", png(uniform(32)))]
            response = await h.score(*files, headers={"Accept": "image/png"})
            assert response.status_code == 406
            assert response.headers["content-type"] == "application/problem+json"

    run(scenario())


@pytest.mark.parametrize(
    ("accept", "png_wanted"),
    [
        ("image/png", True),
        ("image/*", True),
        ("image/png, application/json;q=0.5", True),
        ("application/json, image/png", False),
        ("image/png, application/json", True),
        ("*/*", False),
        ("", False),
        ("image/png;q=0.2, */*", False),
        ("text/html", False),
    ],
)
def test_accept_header_negotiation_prefers_json_unless_png_is_preferred(accept: str, png_wanted: bool) -> None:
    from service.routes.score import wants_png

    assert wants_png(accept) is png_wanted


def test_openapi_documents_json_png_and_problem_answers(store: Path) -> None:
    async def scenario() -> None:
        async with serving(settings_for(store), ready=False) as h:
            spec = (await h.client.get("/openapi.json")).json()
            post = spec["paths"]["/score"]["post"]
            assert set(post["responses"]["200"]["content"]) == {"application/json", "image/png"}
            assert "application/problem+json" in post["responses"]["422"]["content"]
            assert "multipart/form-data" in post["requestBody"]["content"]
            assert "422" in post["description"] and "every" in post["description"]

    run(scenario())


def test_tall_upload_of_a_tiled_category_is_scored_as_tiles_and_stitched_back(tmp_path: Path) -> None:
    import base64

    from tests.fixtures.tiny_bundle import make_tiny_bundle

    store = tmp_path / "tiled"
    make_tiny_bundle(store, max_tiles=4, tiled_categories=["alpha"])
    tall = np.zeros((96, 32, 3), dtype=np.uint8)  # three 32-px tiles, edge to edge
    tall[40:48, 0:8] = RED  # rows 8..16 of the middle tile
    tiled_score = (1 - 64 / 1024) / 3  # the middle tile alone holds the square

    async def scenario() -> None:
        async with serving(settings_for(store)) as h:
            info = (await h.client.get("/models")).json()
            tiling = info["scoring"]["tiling"]
            assert (tiling["scheme"], tiling["max_tiles"], tiling["categories"]) == ("aspect-strip/1", 4, ["alpha"])
            # No category: squashed first, recognised as alpha (red), which is tiled: its three tiles follow.
            response = await h.score(("tall.png", png(tall)), params={"heatmap": "true"})
            assert response.status_code == 200
            [result] = response.json()["results"]
            assert result["score"] == pytest.approx(tiled_score, abs=1e-5)
            assert (result["category"], result["category_source"]) == ("alpha", "recognised")
            assert (result["width"], result["height"]) == (32, 96)
            heat = _decode(base64.b64decode(result["heatmap_png"])).astype(int)
            assert heat.shape == (96 + legend_height(32), 32, 3)
            assert heat[44, 4, 0] > heat[44, 4, 2]  # hot where the square is, in the middle third
            for row in (10, 86):  # the other tiles are uniform: cold
                assert heat[row, 16, 2] > heat[row, 16, 0]
            assert h.metric("prd_batch_size_sum") == 1 + 3  # the squashed image, then its three tiles
            # Given as alpha: its tiles at once, one pass. Given as beta (not tiled): squashed, another score.
            given = await h.client.post("/score", files=[("file", ("t.png", png(tall)))], data={"category": "alpha"})
            assert given.json()["results"][0]["score"] == pytest.approx(tiled_score, abs=1e-5)
            assert h.metric("prd_batch_size_sum") == 4 + 3
            squashed = await h.client.post("/score", files=[("file", ("t.png", png(tall)))], data={"category": "beta"})
            assert squashed.json()["results"][0]["score"] != pytest.approx(tiled_score, abs=1e-3)
            assert h.metric("prd_batch_size_sum") == 7 + 1
            # Recognised as alpha but square: one tile's shape, so its squashed pass stands (no second pass).
            square = await h.score(("square.png", png(np.ascontiguousarray(tall[32:64]))))
            assert square.json()["results"][0]["category"] == "alpha"
            assert h.metric("prd_batch_size_sum") == 8 + 1

    run(scenario())


def test_a_request_whose_tiles_could_never_fit_the_queue_is_refused_with_a_reason(tmp_path: Path) -> None:
    from tests.fixtures.tiny_bundle import make_tiny_bundle

    store = tmp_path / "tiled"
    make_tiny_bundle(store, max_tiles=4, tiled_categories=["alpha"])
    tall = png(np.zeros((128, 32, 3), dtype=np.uint8))  # four tiles each

    async def scenario() -> None:
        async with serving(settings_for(store, queue_limit=6, max_files=2)) as h:
            response = await h.score(("a.png", tall), ("b.png", tall), data={"category": "alpha"})
            assert response.status_code == 413
            assert (
                "make up to 8 graph inputs" in response.json()["detail"]
                and "queue holds (6)" in response.json()["detail"]
            )
            ok = await h.score(("a.png", tall), data={"category": "alpha"})  # one image's four tiles fit
            assert ok.status_code == 200

    run(scenario())


def test_a_large_upload_of_a_grid_category_is_scored_as_a_grid_and_admitted_for_it(tmp_path: Path) -> None:
    """The service serves ``grid/1`` through the same planner, with no change of its own: a 64 px photo of alpha
    (grid at scale 2) is squashed, recognised, then cut into 2×2 tiles; admission reserved 1 + 4 inputs."""
    from model_store.planner import GridSpec
    from tests.fixtures.tiny_bundle import make_tiny_bundle

    store = tmp_path / "grid"
    make_tiny_bundle(store, max_tiles=4, tiled_categories=["alpha"], grid={"alpha": GridSpec(scale=2, max_tiles=4)})
    photo = np.zeros((64, 64, 3), dtype=np.uint8)
    photo[40:48, 8:16] = RED  # inside the bottom-left tile

    async def scenario() -> None:
        async with serving(settings_for(store, queue_limit=5, max_files=2)) as h:
            tiling = (await h.client.get("/models")).json()["scoring"]["tiling"]
            assert (tiling["scheme"], tiling["grid"]) == ("grid/1", {"alpha": {"scale": 2.0, "max_tiles": 4}})
            response = await h.score(("photo.png", png(photo)))
            assert response.status_code == 200
            [result] = response.json()["results"]
            assert (result["category"], result["tiles"]) == ("alpha", 4)
            assert result["score"] == pytest.approx((1 - 64 / 1024) / 3, abs=1e-5)  # the square whole, in one tile
            assert h.metric("prd_batch_size_sum") == 1 + 4
            two = await h.score(("a.png", png(photo)), ("b.png", png(photo)))  # 10 inputs reserved, 5 fit
            assert two.status_code == 413 and "make up to 10 graph inputs" in two.json()["detail"]

    run(scenario())
