"""Aspect-kept tiles (model_store/tiling.py): the geometry of cutting images and stitching maps back."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.planner import DEFAULT_SLACK
from model_store.preprocess import resize_square
from model_store.tiling import cut_tiles, fixed_frame, square_map, stitch_maps, tile_layout


def layout_of(height: int, width: int, size: int, max_tiles: int):
    return tile_layout(height, width, size, max_tiles, DEFAULT_SLACK)


@pytest.mark.parametrize(
    ("height", "width", "count", "canvas"),
    [
        (256, 256, 1, (256, 256)),  # square: the plain squash
        (290, 256, 1, (256, 256)),  # within the slack of square: still one squashed tile
        (400, 300, 2, (341, 256)),  # a 3 : 4 tire photo: two tiles along its height
        (640, 255, 3, (643, 256)),  # a kolektor commutator: three
        (100, 250, 3, (256, 640)),  # wide images are cut along their width
    ],
)
def test_layout_keeps_the_aspect_ratio(height: int, width: int, count: int, canvas: tuple[int, int]) -> None:
    layout = layout_of(height, width, 256, max_tiles=4)
    assert layout.count == count
    assert (layout.height, layout.width) == canvas
    long_side = max(canvas)
    starts = [max(origin) for origin in layout.origins]
    assert starts[0] == 0 and starts[-1] == long_side - 256  # first and last tile touch the canvas ends
    assert all(b - a <= 256 for a, b in zip(starts, starts[1:], strict=False))  # no gap between tiles


def test_tiles_cover_every_pixel_of_the_canvas_whatever_the_shape() -> None:
    for height in range(20, 400, 7):
        for width in (25, 32, 50, 77, 130):
            layout = layout_of(height, width, 32, max_tiles=4)
            stitched = stitch_maps(np.ones((layout.count, 32, 32)), layout)
            assert np.isfinite(stitched).all(), (height, width, layout)  # an uncovered pixel would be 0 / 0
            long_side, short_side = max(height, width), min(height, width)
            assert max(layout.height, layout.width) <= round(32 * long_side / short_side)  # never stretched


def test_an_image_slightly_longer_than_whole_tiles_is_squashed_to_them() -> None:
    layout = layout_of(286, 610, 256, max_tiles=4)  # aspect 2.13: two tiles, squashed 6 % along its width
    assert layout.count == 2 and (layout.height, layout.width) == (256, 512)
    assert [origin[1] for origin in layout.origins] == [0, 256]


def test_an_image_longer_than_max_tiles_is_squashed_to_that_ratio() -> None:
    layout = layout_of(2000, 100, 64, max_tiles=3)
    assert layout.count == 3
    assert (layout.height, layout.width) == (192, 64)
    assert [origin[0] for origin in layout.origins] == [0, 64, 128]  # edge to edge, no overlap


def test_one_tile_is_the_bundle_squash_bit_for_bit() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    layout = layout_of(120, 90, 32, max_tiles=1)
    tiles = cut_tiles(rgb, layout)
    assert layout.count == 1 and tiles.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(tiles[0], resize_square(rgb, 32))


def test_tiles_are_crops_of_one_aspect_kept_canvas() -> None:
    rgb = np.zeros((96, 32, 3), np.uint8)
    rgb[40:48, 4:12] = 255  # inside the middle third
    layout = layout_of(96, 32, 32, max_tiles=4)
    tiles = cut_tiles(rgb, layout)
    assert tiles.shape == (3, 32, 32, 3) and [o[0] for o in layout.origins] == [0, 32, 64]
    assert tiles[0].max() == 0 and tiles[2].max() == 0
    np.testing.assert_array_equal(tiles[1], rgb[32:64])


def test_stitching_averages_overlaps() -> None:
    layout = layout_of(48, 32, 32, max_tiles=4)  # aspect 1.5: two tiles overlapping by 16 rows
    assert [o[0] for o in layout.origins] == [0, 16]
    maps = np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.0)])
    stitched = stitch_maps(maps, layout)
    assert stitched.shape == (48, 32)
    np.testing.assert_allclose(stitched[:16], 1.0)
    np.testing.assert_allclose(stitched[16:32], 2.0)  # both tiles: their mean
    np.testing.assert_allclose(stitched[32:], 3.0)
    assert square_map(stitched, 32).shape == (32, 32)


def test_feathered_stitching_crossfades_overlaps_without_a_step() -> None:
    layout = layout_of(48, 32, 32, max_tiles=4)  # two tiles overlapping by 16 rows
    maps = np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.0)])
    stitched = stitch_maps(maps, layout, "hann")
    np.testing.assert_allclose(stitched[:16], 1.0, atol=1e-2)  # one tile alone: its own values
    np.testing.assert_allclose(stitched[32:], 3.0, atol=1e-2)
    column = stitched[:, 0]
    assert np.all(np.diff(column) >= -1e-6)  # a monotone crossfade from 1 to 3
    flat_step = np.abs(np.diff(stitch_maps(maps, layout)[:, 0])).max()
    assert flat_step == pytest.approx(1.0)  # averaging: two steps of 1 at the overlap's edges
    assert np.abs(np.diff(column)).max() < 0.5 * flat_step
    same = np.stack([np.full((32, 32), 2.0)] * 2)
    np.testing.assert_allclose(stitch_maps(same, layout, "hann"), 2.0, rtol=1e-6)  # a partition of unity


def test_feathered_stitching_works_along_either_side() -> None:
    layout = layout_of(32, 80, 32, max_tiles=4)  # wide: tiles along the columns
    maps = np.stack([np.full((32, 32), float(i)) for i in range(layout.count)])
    stitched = stitch_maps(maps, layout, "hann")
    assert stitched.shape == (32, layout.width)
    np.testing.assert_allclose(stitched[0], stitched[-1])  # constant down each column
    assert np.all(np.diff(stitched[0]) >= -1e-6)


def test_slack_decides_between_squashing_and_one_more_tile() -> None:
    assert tile_layout(300, 256, 256, 4, slack=0.0).count == 2  # aspect 1.17: a second tile with no slack
    assert tile_layout(300, 256, 256, 4, slack=0.2).count == 1  # squashed within a slack of 0.2


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="max_tiles must be at least 1"):
        layout_of(10, 10, 32, max_tiles=0)
    with pytest.raises(ValueError, match="tile maps of shape"):
        stitch_maps(np.zeros((2, 32, 32)), layout_of(96, 32, 32, max_tiles=4))


def test_a_category_is_tiled_when_its_photos_share_one_frame() -> None:
    assert fixed_frame([(255, 640), (258, 640), (255, 641)])  # kolektor-like: one camera setup
    assert not fixed_frame([(103, 400), (632, 312), (300, 300)])  # magnetic-tile-like: each cropped to its part
    assert not fixed_frame([])
