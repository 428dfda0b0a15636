"""Aspect-kept tiles, the geometry: how an image of any shape is cut into the graph's squares and stitched back.

The graph scores ``size`` × ``size`` squares. Squashing a tall kolektor commutator (255 × 640) or a 3 : 4 tire
photo into one square shrinks its thin cracks and tiny cuts along the long side; instead the image is scaled so
its short side is ``size`` and cut into ``n`` evenly spaced, overlapping squares along the long side (the strip).
A large photo (a 1024² part with defects of 0.1 % of it) loses resolution along both axes; the grid scales it so
its short side is k × ``size`` and cuts it along both (``grid_layout``; k = 1 is the strip). Which images are cut,
with which limits, and how their outputs merge is the bundle's scoring rule, decided in ``model_store.planner``
only; this module holds the arithmetic it calls. Torch-free: the service imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from model_store.preprocess import RESIZE_INTERPOLATION, resize_square

StitchWindow = Literal["flat", "hann"]
"""How overlapping tile maps are weighted when stitched: equally, or crossfaded (``stitch_maps``)."""


@dataclass(frozen=True)
class TileLayout:
    """The aspect-kept canvas (``height`` × ``width``) an image is resized to, and each tile's top-left corner.

    One tile means the plain squash: the canvas is ``size`` × ``size``.
    """

    height: int
    width: int
    size: int
    origins: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        return len(self.origins)


def tile_layout(height: int, width: int, size: int, max_tiles: int, slack: float) -> TileLayout:
    """Squares of ``size`` covering an image of ``height`` × ``width`` at its own aspect ratio, short side ``size``
    (``aspect-strip/1``; ``grid_layout`` at scale 1).

    ``n = ceil(aspect − slack)`` tiles along the long side, at most ``max_tiles``, evenly spaced; they overlap
    when the aspect ratio is below ``n``. An image a little longer than ``n`` : 1 (by less than ``slack``), or
    longer than ``max_tiles`` : 1, is squashed along its long side to exactly ``n`` : 1, so the tiles always cover
    the whole canvas; a square image, or one within ``slack`` of square, is one squashed tile. With slack 0.15 a
    kolektor commutator (255 × 640) becomes three tiles, a 300 × 400 tire photo two.
    """
    return grid_layout(height, width, size, 1.0, max_tiles, slack)


def grid_layout(height: int, width: int, size: int, scale: float, max_tiles: int, slack: float) -> TileLayout:
    """A grid of squares of ``size`` over the image at its own aspect ratio, short side ``scale`` × ``size``
    (``grid/1``).

    Each axis on its own follows the strip's rule: an axis ``e`` tiles long on the canvas (``e = scale · side /
    short side``) gets ``n = ceil(e − slack)`` evenly spaced tiles, overlapping when ``e < n``, and is squashed to
    exactly ``n`` tiles when ``e`` exceeds ``n``. The scale used is the first of ``scale``, ``scale − 1``, … (while
    above 1) whose grid has at most ``max_tiles`` tiles; when none has, scale 1, which is ``tile_layout``: one
    tile across the short side, at most ``max_tiles`` along the long side. Scale 1 gives exactly the strip's
    layouts. Tiles are listed row by row (origins ``(top, left)``).
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
    if height < 1 or width < 1:
        raise ValueError(f"an image has no pixels ({width}x{height})")
    if not scale >= 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    short = min(height, width)
    candidates = [scale - step for step in range(math.ceil(scale - 1)) if scale - step > 1]
    for candidate in candidates:
        rows, cols = _axis(candidate * height / short, size, slack), _axis(candidate * width / short, size, slack)
        if len(rows[1]) * len(cols[1]) <= max_tiles:
            return _layout(rows, cols, size)
    aspect = max(height, width) / short
    count = min(max_tiles, max(1, math.ceil(aspect - slack)))
    long_axis = _axis(aspect, size, slack, count)
    short_axis = (size, (0,))
    return _layout(long_axis, short_axis, size) if height >= width else _layout(short_axis, long_axis, size)


def _axis(tiles_long: float, size: int, slack: float, count: int | None = None) -> tuple[int, tuple[int, ...]]:
    """One axis ``tiles_long`` tiles long: its length on the canvas and the start of each of its tiles
    (``count`` of them, default ``ceil(tiles_long − slack)``), evenly spaced from one end to the other."""
    count = count if count is not None else max(1, math.ceil(tiles_long - slack))
    if count == 1:
        return size, (0,)
    length = round(size * min(tiles_long, float(count)))
    return length, tuple(round(i * (length - size) / (count - 1)) for i in range(count))


def _layout(rows: tuple[int, tuple[int, ...]], cols: tuple[int, tuple[int, ...]], size: int) -> TileLayout:
    origins = tuple((top, left) for top in rows[1] for left in cols[1])
    return TileLayout(rows[0], cols[0], size, origins)


def cut_tiles(rgb: np.ndarray, layout: TileLayout) -> np.ndarray:
    """RGB uint8 (H, W, 3) → its (n, size, size, 3) graph inputs for ``layout``; the resize rule is the bundle's."""
    size = layout.size
    if layout.count == 1:
        return resize_square(rgb, size)[None]
    canvas = cv2.resize(rgb, (layout.width, layout.height), interpolation=RESIZE_INTERPOLATION)
    return np.stack([canvas[top : top + size, left : left + size] for top, left in layout.origins])


def stitch_maps(maps: np.ndarray, layout: TileLayout, window: StitchWindow = "flat") -> np.ndarray:
    """(n, size, size) tile maps → the (height, width) float32 map of the canvas.

    ``flat``: overlaps averaged (each tile weighs 1, so a tile's edge shows as a step where the next tile's map
    differs). ``hann``: each tile weighs ``feather_weights`` along each axis the canvas has more than one tile on
    (the long side of a strip; both axes of a grid: the product of the two windows), highest mid-tile and near
    zero at its edges, so across an overlap one tile's map fades into the next's without a step; where one tile
    alone covers the canvas its map is kept as is.
    """
    maps = np.asarray(maps, np.float32)
    if maps.shape != (layout.count, layout.size, layout.size):
        expected = (layout.count, layout.size, layout.size)
        raise ValueError(f"tile maps of shape {maps.shape} for a layout of {expected}")
    if layout.count == 1:
        return maps[0]
    size = layout.size
    flat = np.ones(size, np.float32)
    ramp = flat if window == "flat" else feather_weights(size)
    rows_cut = len({top for top, _ in layout.origins}) > 1
    cols_cut = len({left for _, left in layout.origins}) > 1
    weight = (ramp if rows_cut else flat)[:, None] * (ramp if cols_cut else flat)[None, :]
    total = np.zeros((layout.height, layout.width), np.float32)
    count = np.zeros((layout.height, layout.width), np.float32)
    for tile_map, (top, left) in zip(maps, layout.origins, strict=True):
        total[top : top + size, left : left + size] += tile_map * weight
        count[top : top + size, left : left + size] += weight
    return total / count


def feather_weights(size: int) -> np.ndarray:
    """A tile's blending weight along one axis: a Hann window over its ``size`` pixels (pixel centres),
    floored at 1e-3 so a pixel one tile alone covers keeps that tile's value."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.maximum(np.sin(np.pi * centres) ** 2, 1e-3).astype(np.float32)


def square_map(anomaly_map: np.ndarray, size: int) -> np.ndarray:
    """A canvas map brought to ``size`` × ``size`` (bilinear): the squashed grid masks and reports are drawn on."""
    if anomaly_map.shape == (size, size):
        return anomaly_map
    return cv2.resize(anomaly_map, (size, size), interpolation=cv2.INTER_LINEAR)


FIXED_FRAME_SPREAD = 1.05
"""A category's photos share one frame when their aspect ratios span at most 5 % (largest / smallest)."""


def fixed_frame(sizes: list[tuple[int, int]]) -> bool:
    """True when images of these (width, height) all have about one aspect ratio (``FIXED_FRAME_SPREAD``).

    Training tiles such categories (one camera setup: kolektor's tall commutators, tire's 3 : 4 photos), where
    squashing only throws away resolution along the long side; where the frame varies from image to image
    (magnetic tiles, each cropped to its own extent), squashing brings every part to one frame, and tiles would
    show the same surface at scales that differ by up to 4×.
    """
    aspects = [width / height for width, height in sizes]
    return bool(aspects) and max(aspects) / min(aspects) <= FIXED_FRAME_SPREAD


def native_scale(sizes: list[tuple[int, int]], size: int, max_tiles: int, slack: float) -> int:
    """The largest whole grid scale k ≥ 1 these (width, height) photos of one frame can feed: each photo's short
    side is at least k × ``size`` (the canvas never enlarges a photo), and the grid of the first photo at scale k
    has at most ``max_tiles`` tiles (``grid_layout`` would otherwise fall back to a smaller scale).

    1 means no grid: the category keeps the strip (``tile_layout``). Photos smaller than 2 × ``size`` on their
    short side always get 1, so a category photographed at about the graph's size costs what it did.
    """
    if not sizes:
        return 1
    scale = max(1, min(min(width, height) for width, height in sizes) // size)
    width, height = sizes[0]
    while scale > 1 and min(_shape(grid_layout(height, width, size, scale, max_tiles, slack))) != scale * size:
        scale -= 1
    return scale


def _shape(layout: TileLayout) -> tuple[int, int]:
    return layout.height, layout.width
