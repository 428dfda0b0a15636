"""Aspect-kept tiles, the geometry: how an image of any shape is cut into the graph's squares and stitched back.

The graph scores ``size`` × ``size`` squares. Squashing a tall kolektor commutator (255 × 640) or a 3 : 4 tire
photo into one square shrinks its thin cracks and tiny cuts along the long side; instead the image is scaled so
its short side is ``size`` and cut into ``n`` evenly spaced, overlapping squares along the long side. Which images
are cut, with which limits, and how their outputs merge is the bundle's scoring rule, decided in
``model_store.planner`` only; this module holds the arithmetic it calls. Torch-free: the service imports it.
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
    """Squares of ``size`` covering an image of ``height`` × ``width`` at its own aspect ratio, short side ``size``.

    ``n = ceil(aspect − slack)`` tiles along the long side, at most ``max_tiles``, evenly spaced; they overlap
    when the aspect ratio is below ``n``. An image a little longer than ``n`` : 1 (by less than ``slack``), or
    longer than ``max_tiles`` : 1, is squashed along its long side to exactly ``n`` : 1, so the tiles always cover
    the whole canvas; a square image, or one within ``slack`` of square, is one squashed tile. With slack 0.15 a
    kolektor commutator (255 × 640) becomes three tiles, a 300 × 400 tire photo two.
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
    if height < 1 or width < 1:
        raise ValueError(f"an image has no pixels ({width}x{height})")
    aspect = max(height, width) / min(height, width)
    count = min(max_tiles, max(1, math.ceil(aspect - slack)))
    if count == 1:
        return TileLayout(size, size, size, ((0, 0),))
    length = round(size * min(aspect, float(count)))
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    if height >= width:
        return TileLayout(length, size, size, tuple((start, 0) for start in starts))
    return TileLayout(size, length, size, tuple((0, start) for start in starts))


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
    differs). ``hann``: each tile weighs ``feather_weights`` along the long side, highest mid-tile and near zero at
    its edges, so across an overlap one tile's map fades into the next's without a step; where one tile alone
    covers the canvas its map is kept as is.
    """
    maps = np.asarray(maps, np.float32)
    if maps.shape != (layout.count, layout.size, layout.size):
        expected = (layout.count, layout.size, layout.size)
        raise ValueError(f"tile maps of shape {maps.shape} for a layout of {expected}")
    if layout.count == 1:
        return maps[0]
    size = layout.size
    ramp = np.ones(size, np.float32) if window == "flat" else feather_weights(size)
    along_rows = layout.height > layout.width
    weight = ramp[:, None] * np.ones((1, size), np.float32) if along_rows else np.ones((size, 1), np.float32) * ramp
    total = np.zeros((layout.height, layout.width), np.float32)
    count = np.zeros((layout.height, layout.width), np.float32)
    for tile_map, (top, left) in zip(maps, layout.origins, strict=True):
        total[top : top + size, left : left + size] += tile_map * weight
        count[top : top + size, left : left + size] += weight
    return total / count


def feather_weights(size: int) -> np.ndarray:
    """A tile's blending weight along its long side: a Hann window over its ``size`` pixels (pixel centres),
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
