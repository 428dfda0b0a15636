"""Aspect-kept tiles: how an image of any shape becomes the graph's square inputs, and how their outputs merge.

The graph scores ``size`` × ``size`` squares. Squashing a tall kolektor commutator (255 × 640) or a 3 : 4 tire
photo into one square shrinks its thin cracks and tiny cuts along the long side; instead the image is scaled so
its short side is ``size`` and cut into ``n`` evenly spaced, overlapping squares along the long side. Training,
calibration, evaluation and the service all go through this module, so an image is cut the same way everywhere.

Which images are cut is per category (``TilingPolicy``; ``fixed_frame`` says which at training): those whose
photos share one frame; the others are squashed as before, and ``max_tiles`` 1 is the plain squash of
``preprocess.resize_square``, bit for bit. Merging (``merge_tiles``): the image's score is the highest tile score
(the score is the map's peak, so this is the peak over the image); its map is the tiles' maps on the aspect-kept
canvas, averaged where they overlap; its category similarity is the tiles' mean — except in ``score_routed``,
where the squashed image chose the category and keeps its similarity. Torch-free: the service imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from model_store.preprocess import RESIZE_INTERPOLATION, resize_square

TILE_SLACK = 0.15
"""An image up to 0.15 of a tile longer than ``n`` tiles is squashed into ``n`` rather than cut into ``n + 1``."""


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


def tile_layout(height: int, width: int, size: int, max_tiles: int) -> TileLayout:
    """Squares of ``size`` covering an image of ``height`` × ``width`` at its own aspect ratio, short side ``size``.

    ``n = ceil(aspect − TILE_SLACK)`` tiles along the long side, at most ``max_tiles``, evenly spaced; they overlap
    when the aspect ratio is below ``n``. An image a little longer than ``n`` : 1 (by less than ``TILE_SLACK``), or
    longer than ``max_tiles`` : 1, is squashed along its long side to exactly ``n`` : 1, so the tiles always cover
    the whole canvas; a square image, or one within ``TILE_SLACK`` of square, is one squashed tile. A kolektor
    commutator (255 × 640) becomes three tiles, a 300 × 400 tire photo two.
    """
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
    if height < 1 or width < 1:
        raise ValueError(f"an image has no pixels ({width}x{height})")
    aspect = max(height, width) / min(height, width)
    count = min(max_tiles, max(1, math.ceil(aspect - TILE_SLACK)))
    if count == 1:
        return TileLayout(size, size, size, ((0, 0),))
    length = round(size * min(aspect, float(count)))
    starts = [round(i * (length - size) / (count - 1)) for i in range(count)]
    if height >= width:
        return TileLayout(length, size, size, tuple((start, 0) for start in starts))
    return TileLayout(size, length, size, tuple((0, start) for start in starts))


def cut_tiles(rgb: np.ndarray, size: int, max_tiles: int) -> tuple[np.ndarray, TileLayout]:
    """RGB uint8 (H, W, 3) → (n, size, size, 3) graph inputs and their layout; the resize rule is the bundle's."""
    layout = tile_layout(rgb.shape[0], rgb.shape[1], size, max_tiles)
    if layout.count == 1:
        return resize_square(rgb, size)[None], layout
    canvas = cv2.resize(rgb, (layout.width, layout.height), interpolation=RESIZE_INTERPOLATION)
    return np.stack([canvas[top : top + size, left : left + size] for top, left in layout.origins]), layout


def stitch_maps(maps: np.ndarray, layout: TileLayout) -> np.ndarray:
    """(n, size, size) tile maps → the (height, width) float32 map of the canvas, overlaps averaged."""
    maps = np.asarray(maps, np.float32)
    if maps.shape != (layout.count, layout.size, layout.size):
        expected = (layout.count, layout.size, layout.size)
        raise ValueError(f"tile maps of shape {maps.shape} for a layout of {expected}")
    if layout.count == 1:
        return maps[0]
    total = np.zeros((layout.height, layout.width), np.float32)
    count = np.zeros((layout.height, layout.width), np.float32)
    size = layout.size
    for tile_map, (top, left) in zip(maps, layout.origins, strict=True):
        total[top : top + size, left : left + size] += tile_map
        count[top : top + size, left : left + size] += 1
    return total / count


def square_map(anomaly_map: np.ndarray, size: int) -> np.ndarray:
    """A canvas map brought to ``size`` × ``size`` (bilinear): the squashed grid masks and reports are drawn on."""
    if anomaly_map.shape == (size, size):
        return anomaly_map
    return cv2.resize(anomaly_map, (size, size), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class MergedTiles:
    """One image's outputs from its tiles' (see the module docstring for the rule)."""

    score: float
    anomaly_map: np.ndarray
    category_similarity: np.ndarray | None
    tiles: int = 1
    """Graph inputs the image was scored as."""


def merge_tiles(
    scores: Sequence[float] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    similarity: Sequence[np.ndarray] | np.ndarray | None,
    layout: TileLayout,
) -> MergedTiles:
    """Tiles' scores (n,), maps (n, S, S) and similarities (n, C) or None → the image's score, map and similarity."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    merged_similarity = None if similarity is None else np.asarray(similarity, np.float64).mean(axis=0)
    return MergedTiles(float(scores.max()), stitch_maps(maps, layout), merged_similarity, layout.count)


def merge_each(
    scores: Sequence[float] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    similarity: Sequence[np.ndarray] | np.ndarray | None,
    layouts: Sequence[TileLayout],
) -> list[MergedTiles]:
    """Outputs of several images' tiles, one after the other as one run returns them → ``merge_tiles`` per image."""
    merged, start = [], 0
    for layout in layouts:
        part = slice(start, start + layout.count)
        start += layout.count
        merged.append(merge_tiles(scores[part], maps[part], None if similarity is None else similarity[part], layout))
    return merged


FIXED_FRAME_SPREAD = 1.05
"""A category's photos share one frame when their aspect ratios span at most 5 % (largest / smallest)."""


def fixed_frame(sizes: list[tuple[int, int]]) -> bool:
    """True when images of these (width, height) all have about one aspect ratio (``FIXED_FRAME_SPREAD``)."""
    aspects = [width / height for width, height in sizes]
    return bool(aspects) and max(aspects) / min(aspects) <= FIXED_FRAME_SPREAD


@dataclass(frozen=True)
class TilingPolicy:
    """Which categories are cut into tiles (at most ``max_tiles`` each); every other image is squashed.

    Tiling is per category because it pays where a category's photos share one frame (one camera setup: kolektor's
    tall commutators, tire's 3 : 4 photos), where squashing only throws away resolution along the long side; where
    the frame varies from image to image (magnetic tiles, each cropped to its own extent), squashing brings every
    part to one frame, and tiles would show the same surface at scales that differ by up to 4×.
    """

    max_tiles: int = 1
    tiled_categories: frozenset[str] = frozenset()

    def max_tiles_for(self, category: str | None) -> int:
        """Tiles at most for an image of ``category`` (None: not known, squashed)."""
        return self.max_tiles if category in self.tiled_categories else 1


RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]
"""uint8 (N, S, S, 3) → scores (N,), maps (N, S, S) and category similarities (N, C) or None: one graph run."""


def score_routed(
    run: RunFn,
    images: Sequence[np.ndarray],
    size: int,
    policy: TilingPolicy,
    categories: Sequence[str],
    given: Sequence[str | None] | None = None,
) -> list[MergedTiles]:
    """Score full-size RGB images as the service does: each squashed first, then, if its category (given, else
    recognised from the squashed image; None without either) is a tiled one and its shape asks for several
    tiles, its tiles. The merged similarity is the squashed image's (it chose the category). ``images`` must not be
    empty; ``run`` is called twice at most. With ``given``, the squashed pass still runs, where the service sends a
    given tiled category's tiles at once; scores and maps are the same either way.
    """
    given = list(given) if given is not None else [None] * len(images)
    scores, maps, similarity = run(np.stack([resize_square(rgb, size) for rgb in images]))
    merged = [
        MergedTiles(float(scores[i]), np.asarray(maps[i], np.float32), None if similarity is None else similarity[i])
        for i in range(len(images))
    ]
    if not policy.tiled_categories:
        return merged
    cut: list[tuple[int, np.ndarray, TileLayout]] = []
    for i, rgb in enumerate(images):
        category = given[i]
        if category is None and similarity is not None:
            category = categories[int(np.argmax(similarity[i]))]
        limit = policy.max_tiles_for(category)
        if tile_layout(rgb.shape[0], rgb.shape[1], size, limit).count > 1:  # else its squashed outputs stand
            cut.append((i, *cut_tiles(rgb, size, limit)))
    if not cut:
        return merged
    tile_scores, tile_maps, _ = run(np.concatenate([tiles for _, tiles, _ in cut]))
    for (i, _, layout), tiled in zip(cut, merge_each(tile_scores, tile_maps, None, [c[2] for c in cut]), strict=True):
        merged[i] = MergedTiles(tiled.score, tiled.anomaly_map, merged[i].category_similarity, layout.count)
    return merged
