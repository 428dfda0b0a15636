"""The 2-D grid of tiles (``grid/1``): its geometry, its 2-D crossfade, and the scale fit chooses from photo sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_store.planner import DEFAULT_SLACK
from model_store.tiling import TileLayout, grid_layout, native_scale, stitch_maps, tile_layout


def strip_reference(height: int, width: int, size: int, max_tiles: int, slack: float) -> TileLayout:
    """``aspect-strip/1`` exactly as every bundle up to prd/7 was served (model_store/tiling.py before the grid)."""
    aspect = max(height, width) / min(height, width)
    count = min(max_tiles, max(1, math.ceil(aspect - slack)))
    if count == 1:
        return TileLayout(size, size, size, ((0, 0),))
    length = round(size * min(aspect, float(count)))
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    if height >= width:
        return TileLayout(length, size, size, tuple((start, 0) for start in starts))
    return TileLayout(size, length, size, tuple((0, start) for start in starts))


def test_scale_one_is_the_strip_for_every_shape() -> None:
    for height in range(16, 700, 13):
        for width in (17, 32, 100, 255, 256, 300, 640):
            for max_tiles in (1, 2, 3, 4, 6):
                for slack in (0.0, DEFAULT_SLACK, 0.5):
                    expected = strip_reference(height, width, 64, max_tiles, slack)
                    assert grid_layout(height, width, 64, 1.0, max_tiles, slack) == expected
                    assert tile_layout(height, width, 64, max_tiles, slack) == expected


def test_a_square_photo_at_scale_two_is_four_tiles_of_a_canvas_twice_the_size() -> None:
    layout = grid_layout(1024, 1024, 256, 2.0, 4, DEFAULT_SLACK)
    assert (layout.height, layout.width) == (512, 512)
    assert layout.origins == ((0, 0), (0, 256), (256, 0), (256, 256))


def test_a_fractional_scale_overlaps_its_tiles_along_both_axes() -> None:
    layout = grid_layout(1000, 1000, 64, 1.75, 4, DEFAULT_SLACK)  # 112 px canvas, two tiles per axis
    assert (layout.height, layout.width) == (112, 112)
    assert layout.origins == ((0, 0), (0, 48), (48, 0), (48, 48))  # 16 px shared along each axis


@pytest.mark.parametrize("scale", [1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
@pytest.mark.parametrize("max_tiles", [1, 4, 6, 9])
def test_a_grid_covers_its_canvas_within_its_cap_whatever_the_shape(scale: float, max_tiles: int) -> None:
    for height in (20, 64, 100, 150, 333, 640):
        for width in (20, 64, 90, 250, 400):
            layout = grid_layout(height, width, 32, scale, max_tiles, DEFAULT_SLACK)
            assert 1 <= layout.count <= max_tiles
            stitched = stitch_maps(np.ones((layout.count, 32, 32)), layout, "hann")
            assert np.isfinite(stitched).all()  # an uncovered pixel would be 0 / 0
            for axis in (0, 1):
                starts = sorted({origin[axis] for origin in layout.origins})
                extent = (layout.height, layout.width)[axis]
                assert starts[0] == 0 and starts[-1] == extent - 32  # first and last tile touch the canvas ends
                assert all(b - a <= 32 for a, b in zip(starts, starts[1:], strict=False))  # no gap
            short, canvas_short = min(height, width), min(layout.height, layout.width)
            assert canvas_short <= round(32 * scale)  # never more than the scale asked
            assert max(layout.height, layout.width) <= round(canvas_short * max(height, width) / short)  # no stretch


def test_a_grid_over_its_cap_falls_back_to_a_smaller_scale_then_the_strip() -> None:
    assert grid_layout(1024, 1024, 256, 3.0, 4, DEFAULT_SLACK).count == 4  # 3×3 is over 4: scale 2
    strip = grid_layout(300, 400, 128, 2.0, 4, DEFAULT_SLACK)  # 2×3 is over 4, and there is no scale in between
    assert strip == tile_layout(300, 400, 128, 4, DEFAULT_SLACK) and strip.count == 2


def test_bad_grid_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="scale must be at least 1"):
        grid_layout(100, 100, 32, 0.5, 4, DEFAULT_SLACK)
    with pytest.raises(ValueError, match="max_tiles must be at least 1"):
        grid_layout(100, 100, 32, 2.0, 0, DEFAULT_SLACK)


@pytest.mark.parametrize("window", ["flat", "hann"])
def test_stitching_a_grid_of_one_smooth_map_gives_that_map(window: str) -> None:
    layout = grid_layout(1000, 1400, 32, 1.75, 9, DEFAULT_SLACK)
    assert len({o[0] for o in layout.origins}) > 1 and len({o[1] for o in layout.origins}) > 1
    rows, cols = np.mgrid[0 : layout.height, 0 : layout.width].astype(np.float32)
    canvas = np.sin(rows / 9.0) + np.cos(cols / 7.0)
    tiles = np.stack([canvas[top : top + 32, left : left + 32] for top, left in layout.origins])
    np.testing.assert_allclose(stitch_maps(tiles, layout, window), canvas, atol=1e-5)


def test_the_2d_crossfade_leaves_no_step_where_tiles_disagree() -> None:
    layout = grid_layout(1000, 1000, 32, 1.75, 4, DEFAULT_SLACK)  # 2×2 tiles, overlapping 8 px each way
    levels = np.arange(layout.count, dtype=np.float32)[:, None, None] * np.ones((1, 32, 32), np.float32)
    flat, hann = stitch_maps(levels, layout, "flat"), stitch_maps(levels, layout, "hann")
    for axis in (0, 1):
        assert np.abs(np.diff(hann, axis=axis)).max() < 0.5 * np.abs(np.diff(flat, axis=axis)).max()
    assert hann[0, 0] == pytest.approx(0.0) and hann[-1, -1] == pytest.approx(layout.count - 1)  # corners kept


@pytest.mark.parametrize(
    ("sizes", "size", "max_tiles", "scale"),
    [
        ([(1024, 1024)] * 3, 256, 4, 2),  # wood-like at 256: 2×2
        ([(1024, 1024)] * 3, 256, 16, 4),  # a larger cap: 4×4 at native resolution
        ([(1024, 1024), (600, 600)], 256, 16, 2),  # the smallest photo bounds it: no upsampling
        ([(400, 300)] * 2, 128, 4, 1),  # tire at 128: 2×3 tiles are over 4
        ([(400, 300)] * 2, 128, 6, 2),
        ([(255, 640)] * 2, 256, 16, 1),  # kolektor at 256: its photos are no larger than the graph
        ([(256, 256)] * 2, 256, 16, 1),  # wood as shared: one tile
        ([], 256, 4, 1),
    ],
)
def test_fit_chooses_the_largest_scale_the_photos_feed(sizes: list, size: int, max_tiles: int, scale: int) -> None:
    assert native_scale(sizes, size, max_tiles, DEFAULT_SLACK) == scale
