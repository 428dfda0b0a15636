"""Aspect-kept tiles (model_store/tiling.py): how images are cut, and how tile outputs merge back."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.manifest import Manifest
from model_store.preprocess import resize_square
from model_store.tiling import (
    TilingPolicy,
    cut_tiles,
    fixed_frame,
    merge_tiles,
    score_routed,
    square_map,
    stitch_maps,
    tile_layout,
)


@pytest.mark.parametrize(
    ("height", "width", "count", "canvas"),
    [
        (256, 256, 1, (256, 256)),  # square: the plain squash
        (290, 256, 1, (256, 256)),  # within TILE_SLACK of square: still one squashed tile
        (400, 300, 2, (341, 256)),  # a 3 : 4 tire photo: two tiles along its height
        (640, 255, 3, (643, 256)),  # a kolektor commutator: three
        (100, 250, 3, (256, 640)),  # wide images are cut along their width
    ],
)
def test_layout_keeps_the_aspect_ratio(height: int, width: int, count: int, canvas: tuple[int, int]) -> None:
    layout = tile_layout(height, width, 256, max_tiles=4)
    assert layout.count == count
    assert (layout.height, layout.width) == canvas
    long_side = max(canvas)
    starts = [max(origin) for origin in layout.origins]
    assert starts[0] == 0 and starts[-1] == long_side - 256  # first and last tile touch the canvas ends
    assert all(b - a <= 256 for a, b in zip(starts, starts[1:], strict=False))  # no gap between tiles


def test_tiles_cover_every_pixel_of_the_canvas_whatever_the_shape() -> None:
    for height in range(20, 400, 7):
        for width in (25, 32, 50, 77, 130):
            layout = tile_layout(height, width, 32, max_tiles=4)
            stitched = stitch_maps(np.ones((layout.count, 32, 32)), layout)
            assert np.isfinite(stitched).all(), (height, width, layout)  # an uncovered pixel would be 0 / 0
            long_side, short_side = max(height, width), min(height, width)
            assert max(layout.height, layout.width) <= round(32 * long_side / short_side)  # never stretched


def test_an_image_slightly_longer_than_whole_tiles_is_squashed_to_them() -> None:
    layout = tile_layout(286, 610, 256, max_tiles=4)  # aspect 2.13: two tiles, squashed 6 % along its width
    assert layout.count == 2 and (layout.height, layout.width) == (256, 512)
    assert [origin[1] for origin in layout.origins] == [0, 256]


def test_an_image_longer_than_max_tiles_is_squashed_to_that_ratio() -> None:
    layout = tile_layout(2000, 100, 64, max_tiles=3)
    assert layout.count == 3
    assert (layout.height, layout.width) == (192, 64)
    assert [origin[0] for origin in layout.origins] == [0, 64, 128]  # edge to edge, no overlap


def test_one_tile_is_the_bundle_squash_bit_for_bit() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    tiles, layout = cut_tiles(rgb, 32, max_tiles=1)
    assert layout.count == 1 and tiles.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(tiles[0], resize_square(rgb, 32))


def test_tiles_are_crops_of_one_aspect_kept_canvas() -> None:
    rgb = np.zeros((96, 32, 3), np.uint8)
    rgb[40:48, 4:12] = 255  # inside the middle third
    tiles, layout = cut_tiles(rgb, 32, max_tiles=4)
    assert tiles.shape == (3, 32, 32, 3) and [o[0] for o in layout.origins] == [0, 32, 64]
    assert tiles[0].max() == 0 and tiles[2].max() == 0
    np.testing.assert_array_equal(tiles[1], rgb[32:64])


def test_stitching_averages_overlaps_and_merge_takes_the_highest_tile() -> None:
    layout = tile_layout(48, 32, 32, max_tiles=4)  # aspect 1.5: two tiles overlapping by 16 rows
    assert [o[0] for o in layout.origins] == [0, 16]
    maps = np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.0)])
    stitched = stitch_maps(maps, layout)
    assert stitched.shape == (48, 32)
    np.testing.assert_allclose(stitched[:16], 1.0)
    np.testing.assert_allclose(stitched[16:32], 2.0)  # both tiles: their mean
    np.testing.assert_allclose(stitched[32:], 3.0)
    similarity = np.array([[0.9, 0.1], [0.7, 0.3]])
    merged = merge_tiles(np.array([0.2, 0.8]), maps, similarity, layout)
    assert merged.score == pytest.approx(0.8)
    np.testing.assert_allclose(merged.category_similarity, [0.8, 0.2])
    assert square_map(merged.anomaly_map, 32).shape == (32, 32)


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="max_tiles must be at least 1"):
        tile_layout(10, 10, 32, max_tiles=0)
    with pytest.raises(ValueError, match="tile maps of shape"):
        stitch_maps(np.zeros((2, 32, 32)), tile_layout(96, 32, 32, max_tiles=4))


def test_a_category_is_tiled_when_its_photos_share_one_frame() -> None:
    assert fixed_frame([(255, 640), (258, 640), (255, 641)])  # kolektor-like: one camera setup
    assert not fixed_frame([(103, 400), (632, 312), (300, 300)])  # magnetic-tile-like: each cropped to its part
    assert not fixed_frame([])


def _brightest(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stand-in graph: map = brightness, score = its peak, similarity = [red share, green share]."""
    x = images.astype(np.float32) / 255.0
    maps = x.mean(axis=3)
    return maps.max(axis=(1, 2)), maps, np.stack([x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2))], axis=1)


def test_score_routed_tiles_only_images_whose_category_is_tiled() -> None:
    tall_red = np.zeros((96, 32, 3), np.uint8)
    tall_red[:, :, 0] = 40
    tall_red[40:42, 0:2] = (255, 0, 0)  # a 2-px spot a squash would average away
    tall_green = tall_red[..., [1, 0, 2]].copy()
    policy = TilingPolicy(4, frozenset({"red"}))
    calls: list[int] = []

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append(len(images))
        return _brightest(images)

    red, green = score_routed(run, [tall_red, tall_green], 32, policy, ["red", "green"])
    assert calls == [2, 3]  # both squashed; then the red one (recognised, tiled) as its three tiles
    assert (red.tiles, green.tiles) == (3, 1)
    assert red.score == pytest.approx(1 / 3)  # the spot at full strength in the middle tile
    assert green.score < 0.25  # squashed 3× along its height: the spot averaged with the background
    assert red.anomaly_map.shape == (96, 32) and green.anomaly_map.shape == (32, 32)
    assert red.category_similarity is not None and red.category_similarity[0] > red.category_similarity[1]
    calls.clear()
    [given] = score_routed(run, [tall_green], 32, policy, ["red", "green"], given=["red"])  # given wins
    assert given.tiles == 3 and calls == [1, 3]
    calls.clear()
    score_routed(run, [tall_red], 32, TilingPolicy(), [])  # nothing tiled: one squashed pass, no lookup
    assert calls == [1]
    calls.clear()
    [square] = score_routed(run, [tall_red[:32]], 32, policy, ["red", "green"])  # tiled category, one tile's shape
    assert calls == [1] and square.tiles == 1  # its squashed pass stands: no second pass


def test_a_manifest_may_only_tile_its_own_categories() -> None:
    from tests.fixtures.tiny_bundle import tiny_manifest

    raw = tiny_manifest("tiny", 1, 32, ["alpha", "beta"], "0" * 64, {}, max_tiles=4, tiled_categories=["alpha"])
    assert Manifest.model_validate(raw).input.tiling == TilingPolicy(4, frozenset({"alpha"}))
    raw["input"]["tiled_categories"] = ["gamma"]
    with pytest.raises(ValueError, match="tiled_categories names \\['gamma'\\]"):
        Manifest.model_validate(raw)
