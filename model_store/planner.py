"""The scoring rule around the graph: what a bundle's manifest says (``ScoringRule``) and the one planner that
carries it out (``Planner``). Training (calibration, evaluation, export checks) and the service both call it, so an
image is cut, routed and merged the same way wherever it is scored; another client (Triton, a line PC) reads the
same fields from ``manifest.json`` and does the same.

The rule has three parts, each named by a versioned scheme so a reader refuses what it does not implement:

- ``tiling``: ``squash/1`` squashes every image into one ``tile_size`` square. ``aspect-strip/1`` cuts an image of
  one of ``categories`` into at most ``max_tiles`` aspect-kept squares along its long side
  (``model_store.tiling.tile_layout`` with ``slack``); images of other categories are squashed. ``grid/1`` is the
  strip plus ``grid``: a category named there is resized to its ``scale`` × ``tile_size`` on the short side and cut
  into a 2-D grid of at most its ``max_tiles`` squares (``model_store.tiling.grid_layout``); the other tiled
  categories are strips, as under ``aspect-strip/1``.
- ``routing``: ``squashed-pass/1``. A category given with the image decides: its tiles (or its squash) are scored
  in one pass. Without one, the squashed image is scored first and its ``category_similarity`` recognises the
  category: the argmax, when that similarity reaches ``min_similarity`` (None: always); below it the image is of
  no known category (global calibration) and stays squashed. An image recognised as a tiled category whose shape
  asks for more than one tile is cut and scored again.
- ``merge``: ``max-mean-squashed/1``. Score = the highest tile's (the score is the map's peak, so this is the
  peak over the image); map = the tiles' maps on the aspect-kept canvas, averaged where they overlap; category
  similarity = the squashed pass's when there was one (it chose the category), else the tiles' mean.
  ``max-feather-squashed/1``: the same, except that the maps are crossfaded across each overlap with a Hann
  window along each axis cut into several tiles (``model_store.tiling.feather_weights``; in a grid, the product
  of the two), so no step shows at a tile's edge. The score does not change (it is still the highest tile's),
  only the map drawn and measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from model_store.outputs import CategorySource, GraphOutputs, ImageOutputs
from model_store.tiling import StitchWindow, TileLayout, cut_tiles, grid_layout, stitch_maps, tile_layout

TilingScheme = Literal["squash/1", "aspect-strip/1", "grid/1"]
RoutingScheme = Literal["squashed-pass/1"]
MergeScheme = Literal["max-mean-squashed/1", "max-feather-squashed/1"]

FEATHER_MERGE: MergeScheme = "max-feather-squashed/1"
"""What new exports write. Bundles that state ``max-mean-squashed/1`` (every format-1 bundle) keep it."""

_STITCH_WINDOWS: dict[str, StitchWindow] = {"max-mean-squashed/1": "flat", "max-feather-squashed/1": "hann"}

DEFAULT_SLACK = 0.15
"""``aspect-strip/1``'s slack in every bundle so far: an image up to 0.15 of a tile longer than ``n`` tiles is
squashed into ``n`` rather than cut into ``n + 1`` (a 3 : 4 photo is two tiles, not two and a sliver)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSpec(_Strict):
    """How one category is cut under ``grid/1``."""

    scale: float = Field(ge=1.0)
    """k: the canvas's short side is k × ``tile_size`` (1 is the strip)."""
    max_tiles: int = Field(ge=1)
    """Tiles per image at most; a grid with more falls back to scale k − 1, …, down to the strip."""


class TilingRule(_Strict):
    scheme: TilingScheme
    tile_size: int = Field(gt=0)
    """The graph input's side S."""
    slack: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_tiles: int = Field(default=1, ge=1)
    """Strip tiles per image at most, for tiled categories without a ``grid`` entry."""
    categories: tuple[str, ...] = ()
    """The categories whose images are cut into tiles (``aspect-strip/1``, ``grid/1``)."""
    grid: dict[str, GridSpec] = Field(default_factory=dict)
    """``grid/1`` only: the categories cut into a 2-D grid, each with its scale and tile cap."""

    @model_validator(mode="after")
    def _consistent(self) -> TilingRule:
        if self.scheme == "squash/1" and (self.max_tiles != 1 or self.categories):
            raise ValueError("squash/1 cuts nothing: max_tiles must be 1 and categories empty")
        if self.scheme == "aspect-strip/1" and (self.max_tiles < 2 or not self.categories):
            raise ValueError("aspect-strip/1 needs max_tiles of at least 2 and at least one category (else squash/1)")
        if self.scheme != "grid/1" and self.grid:
            raise ValueError(f"grid is read only under grid/1, not {self.scheme}")
        if self.scheme == "grid/1" and not self.grid:
            raise ValueError("grid/1 needs at least one category in grid (else aspect-strip/1)")
        strangers = sorted(set(self.grid) - set(self.categories))
        if strangers:
            raise ValueError(f"grid names {strangers}, which are not among the tiled categories {self.categories}")
        return self

    def __hash__(self) -> int:  # a frozen rule is a dict key (the ablation's feature caches); its grid is a dict
        grid = tuple(sorted(self.grid.items()))
        return hash((self.scheme, self.tile_size, self.slack, self.max_tiles, self.categories, grid))

    @model_serializer(mode="wrap")
    def _without_empty_grid(self, handler: SerializerFunctionWrapHandler) -> dict:
        """``grid`` is written only under ``grid/1``, so a strip's manifest stays readable by older readers."""
        fields = handler(self)
        if not self.grid:
            fields.pop("grid", None)
        return fields


class RoutingRule(_Strict):
    recognition: RoutingScheme = "squashed-pass/1"
    min_similarity: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Below this best category similarity an image is of no known category (None: the argmax always decides)."""


class MergeRule(_Strict):
    scheme: MergeScheme = "max-mean-squashed/1"


class ScoringRule(_Strict):
    """Everything done to an image outside the graph, after decoding (``manifest.json``: ``scoring``)."""

    tiling: TilingRule
    routing: RoutingRule = RoutingRule()
    merge: MergeRule = MergeRule()

    @classmethod
    def squash(cls, size: int, min_similarity: float | None = None) -> ScoringRule:
        return cls(
            tiling=TilingRule(scheme="squash/1", tile_size=size), routing=RoutingRule(min_similarity=min_similarity)
        )

    @classmethod
    def tiled(
        cls,
        size: int,
        max_tiles: int,
        categories: Sequence[str],
        slack: float = DEFAULT_SLACK,
        min_similarity: float | None = None,
        merge: MergeScheme = "max-mean-squashed/1",
        grid: dict[str, GridSpec] | None = None,
    ) -> ScoringRule:
        """``grid/1`` when ``grid`` scales a category above 1, else ``aspect-strip/1`` for ``categories`` when there
        are any and ``max_tiles`` > 1, else ``squash/1`` (entries of scale 1 are the strip, so they are left out)."""
        grid = {name: spec for name, spec in sorted((grid or {}).items()) if spec.scale > 1}
        if not grid and (max_tiles < 2 or not categories):
            return cls.squash(size, min_similarity).with_merge(merge)
        tiling = TilingRule(
            scheme="grid/1" if grid else "aspect-strip/1",
            tile_size=size,
            slack=slack,
            max_tiles=max_tiles,
            categories=tuple(sorted(categories)),
            grid=grid,
        )
        return cls(tiling=tiling, routing=RoutingRule(min_similarity=min_similarity), merge=MergeRule(scheme=merge))

    def with_merge(self, scheme: MergeScheme) -> ScoringRule:
        """The same rule with another merge scheme."""
        return self.model_copy(update={"merge": MergeRule(scheme=scheme)})

    def stitch(self, maps: np.ndarray, layout: TileLayout) -> np.ndarray:
        """Tile maps → the canvas map, as ``merge.scheme`` says."""
        return stitch_maps(maps, layout, _STITCH_WINDOWS[self.merge.scheme])

    def with_floor(self, min_similarity: float | None) -> ScoringRule:
        """The same rule with another similarity floor (an operator's override of the bundle's)."""
        return self.model_copy(update={"routing": RoutingRule(min_similarity=min_similarity)})

    def layout(self, height: int, width: int, category: str | None) -> TileLayout:
        """Where an image of ``category`` and this size is cut (one tile: squashed)."""
        tiling = self.tiling
        if category not in tiling.categories:
            return tile_layout(height, width, tiling.tile_size, 1, tiling.slack)
        spec = tiling.grid.get(category)  # type: ignore[arg-type]
        if spec is None:
            return tile_layout(height, width, tiling.tile_size, tiling.max_tiles, tiling.slack)
        return grid_layout(height, width, tiling.tile_size, spec.scale, spec.max_tiles, tiling.slack)

    def max_inputs(self, height: int, width: int, given: str | None) -> int:
        """Graph inputs an image of this size costs at most, both passes: what admission reserves up front.

        A given category costs its layout; without one, the squashed pass plus, when a tiled category would cut an
        image of this shape, the most tiles any tiled category cuts it into (the one it is recognised as is not
        known yet).
        """
        if given is not None:
            return self.layout(height, width, given).count
        tiles = max((self.layout(height, width, c).count for c in self.tiling.categories), default=1)
        return 1 + tiles if tiles > 1 else 1


Cut = tuple[np.ndarray, TileLayout]
"""An image's graph inputs (n, S, S, 3) and their layout on its canvas."""

RunFn = Callable[[np.ndarray], GraphOutputs]
"""uint8 (N, S, S, 3) → the graph's outputs: one graph run."""


class Planner:
    """Carries out a ``ScoringRule`` for a graph whose ``category_similarity`` columns are ``categories``."""

    def __init__(self, rule: ScoringRule, categories: Sequence[str]) -> None:
        unknown = [c for c in rule.tiling.categories if c not in categories]
        if unknown:
            raise ValueError(f"scoring.tiling.categories names {unknown}, which are not among categories")
        self.rule = rule
        self.categories = tuple(categories)

    def first_pass(self, rgb: np.ndarray, given: str | None) -> Cut:
        """The image's first graph inputs: its tiles when its given category is tiled, else the squashed square."""
        layout = self.rule.layout(rgb.shape[0], rgb.shape[1], given)
        return cut_tiles(rgb, layout), layout

    def max_inputs(self, height: int, width: int, given: str | None) -> int:
        """Graph inputs an image of this size costs at most, both passes (``ScoringRule.max_inputs``)."""
        return self.rule.max_inputs(height, width, given)

    def may_cut_later(self, given: str | None) -> bool:
        """Whether an image sent with ``given`` may need a second pass (so its full-size pixels must be kept)."""
        return given is None and bool(self.rule.tiling.categories)

    def recognise(self, similarity: np.ndarray, given: str | None) -> tuple[str | None, CategorySource]:
        """The category that decides, and where it came from: given; else the argmax above the floor; else none
        (also when the planner was given no category names)."""
        if given is not None:
            return given, "given"
        floor = self.rule.routing.min_similarity
        if self.categories and similarity.size and np.all(np.isfinite(similarity)):
            best = int(np.argmax(similarity))
            if floor is None or float(similarity[best]) >= floor:
                return self.categories[best], "recognised"
        return None, "unknown"

    def second_pass(self, first: ImageOutputs, height: int, width: int) -> TileLayout | None:
        """After a squashed first pass: the layout to cut the image into, when its routed category asks for tiles."""
        if first.tiles > 1 or first.category_source == "given":
            return None
        layout = self.rule.layout(height, width, first.category)
        return layout if layout.count > 1 else None

    def merge(self, outputs: GraphOutputs, layout: TileLayout, given: str | None) -> ImageOutputs:
        """One image's first-pass inputs' outputs → its merged, routed answer."""
        similarity = outputs.category_similarity.mean(axis=0)
        category, source = self.recognise(similarity, given)
        score = float(outputs.score.max())
        anomaly_map = self.rule.stitch(outputs.anomaly_map, layout)
        return ImageOutputs(score, anomaly_map, similarity, category, source, layout.count)

    def merge_retiled(self, first: ImageOutputs, outputs: GraphOutputs, layout: TileLayout) -> ImageOutputs:
        """A second pass's tiles replace the squashed score and map; category and similarity stay the first's."""
        score = float(outputs.score.max())
        anomaly_map = self.rule.stitch(outputs.anomaly_map, layout)
        return ImageOutputs(
            score, anomaly_map, first.category_similarity, first.category, first.category_source, layout.count
        )

    def score(
        self, run: RunFn, images: Sequence[np.ndarray], given: Sequence[str | None] | None = None
    ) -> list[ImageOutputs]:
        """Full-size RGB images → their answers, all first passes in one ``run`` and all second passes in another.

        The service takes the same steps (``first_pass``, ``merge``, ``second_pass``, ``merge_retiled``) through
        its batcher; this is the same routine run synchronously, for training, calibration and other clients.
        """
        given = list(given) if given is not None else [None] * len(images)
        cuts = [self.first_pass(rgb, category) for rgb, category in zip(images, given, strict=True)]
        outputs = run(np.concatenate([tiles for tiles, _ in cuts]))
        answers = [
            self.merge(part, layout, category)
            for part, (_, layout), category in zip(_split(outputs, cuts), cuts, given, strict=True)
        ]
        again = [(i, self.second_pass(a, *images[i].shape[:2])) for i, a in enumerate(answers)]
        again = [(i, layout) for i, layout in again if layout is not None]
        if not again:
            return answers
        retiled = [(cut_tiles(images[i], layout), layout) for i, layout in again]
        outputs = run(np.concatenate([tiles for tiles, _ in retiled]))
        for (i, layout), part in zip(again, _split(outputs, retiled), strict=True):
            answers[i] = self.merge_retiled(answers[i], part, layout)
        return answers


def _split(outputs: GraphOutputs, cuts: Sequence[Cut]) -> list[GraphOutputs]:
    """One run's outputs, consecutive per image as the cuts were concatenated."""
    parts, start = [], 0
    for tiles, _ in cuts:
        parts.append(outputs[start : start + len(tiles)])
        start += len(tiles)
    return parts
