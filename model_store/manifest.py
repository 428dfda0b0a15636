"""The manifest schema: the one contract between training (which writes bundles) and the service (which loads them).

A bundle is ``<repository>/<name>/<version>/{model.onnx, manifest.json}``. Everything a client needs to turn
bytes into a verdict is here: the graph's I/O, the resize rule, the scoring rule around the graph (tiling, routing,
merging: ``model_store.planner``), the categories, per-category calibration (thresholds, score normalisation,
heatmap colour range) and the checksum of the graph. Training validates the manifest it writes against this
schema; the service validates what it reads. Torch-free on purpose.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_store.planner import DEFAULT_SLACK, Planner, ScoringRule

FORMAT_VERSION = 2
"""What exports write. Bump when a field changes meaning; loaders refuse versions they cannot read, naming the file.
2: the scoring rule (``scoring``) is stated in full; 1 (``prd/1``..``prd/6``) had tiling fields in ``input``."""

READABLE_FORMAT_VERSIONS = (1, 2)

NORMAL_QUANTILE_LEVELS = tuple(i / 20 for i in range(21))
"""The probabilities ``CategoryCalibration.normal_quantiles`` holds the held-out normal scores at."""

GLOBAL_KEY = "__global__"
"""Calibration key used when an image's category is unknown."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """The graph's single image input: a batch of resized RGB uint8 images; normalisation happens in the graph."""

    name: str = "image"
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    color: Literal["RGB"] = "RGB"
    resize: Literal["cv2.INTER_AREA"] = "cv2.INTER_AREA"


class OutputSpec(_Strict):
    """Names of the graph outputs. ``score`` (N,), ``anomaly_map`` (N,1,H,W), ``category_similarity`` (N,C)."""

    score: str = "score"
    anomaly_map: str = "anomaly_map"
    category_similarity: str = "category_similarity"


class OnnxSpec(_Strict):
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=17)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    """int8: ONNX Runtime static QDQ (``python -m training quantize``), the patch memory and map maths in float."""


class CategoryCalibration(_Strict):
    """Statistics of held-out normal images of one category, and the decision rule derived from them.

    ``normalized_score = clip(0.5 * (score - score_lo) / (threshold - score_lo), 0, 1)``: the median normal part
    maps to 0, the threshold to 0.5, a score as far above the threshold as the median is below it to 1.
    Heatmaps are drawn with ``clip((map - map_lo) / (map_hi - map_lo), 0, 1)`` so every image of a category
    shares one colour scale.
    """

    n_images: int = Field(ge=1)
    source: str
    score_mean: float
    score_std: float = Field(ge=0)
    score_lo: float
    threshold: float
    false_alarm_rate: float = Field(ge=0, le=1)
    f1_threshold: float | None = None
    map_lo: float
    map_hi: float
    normal_quantiles: list[float] | None = Field(default=None, min_length=2)
    """Held-out normal scores at ``NORMAL_QUANTILE_LEVELS`` (0, 0.05, …, 1: minimum, …, median, …, maximum),
    non-decreasing; ``false_alarm_probability`` reads them. None in bundles exported before it (``prd/1``..6)."""

    @model_validator(mode="after")
    def _ordered(self) -> CategoryCalibration:
        if not self.threshold > self.score_lo:
            raise ValueError(f"threshold {self.threshold} must exceed score_lo {self.score_lo}")
        if not self.map_hi > self.map_lo:
            raise ValueError(f"map_hi {self.map_hi} must exceed map_lo {self.map_lo}")
        table = self.normal_quantiles
        if table is not None and (len(table) != len(NORMAL_QUANTILE_LEVELS) or any(np.diff(table) < 0)):
            message = f"normal_quantiles must be {len(NORMAL_QUANTILE_LEVELS)} non-decreasing scores, got {table}"
            raise ValueError(message)
        return self

    def false_alarm_probability(self, score: float) -> float | None:
        """The fraction of held-out normal images scoring at least ``score``, read off ``normal_quantiles`` by
        linear interpolation (1 below their minimum, 0 above their maximum); None without a table.

        An empirical false-alarm probability: how often a normal part of this category scores this high. Its
        resolution is the table's (5 % steps, interpolated) and the held-out set's (``n_images``)."""
        if self.normal_quantiles is None:
            return None
        table = np.asarray(self.normal_quantiles, np.float64)
        if score > table[-1]:
            return 0.0
        if score < table[0]:
            return 1.0
        # The first table entry ≥ score and the one below it, interpolated; a score equal to a repeated value takes
        # the run's first level, so every normal at that value counts as scoring at least as high.
        upper = int(np.searchsorted(table, score, side="left"))
        if upper == 0:
            return 1.0
        lo, hi = table[upper - 1], table[upper]
        level_lo, level_hi = NORMAL_QUANTILE_LEVELS[upper - 1], NORMAL_QUANTILE_LEVELS[upper]
        level = level_hi if hi == lo else level_lo + (level_hi - level_lo) * (score - lo) / (hi - lo)
        return float(min(1.0, max(0.0, 1.0 - level)))


class Calibration(_Strict):
    target_false_alarm_rate: float = Field(gt=0, lt=1)
    per_category: dict[str, CategoryCalibration]
    """Keys: every category, plus ``GLOBAL_KEY`` for images whose category is neither given nor recognised."""


def legacy_scoring_rule(raw_input: dict[str, Any]) -> dict[str, Any]:
    """The rule every format-1 bundle was served with, stated explicitly: ``input.max_tiles`` aspect-kept tiles
    (``aspect-strip/1``, slack 0.15) for ``input.tiled_categories``, else ``squash/1``; the squashed pass
    recognises the category, with no similarity floor; score max, maps averaged, the squashed pass's similarity."""
    size = int(raw_input["height"])
    max_tiles, categories = int(raw_input.get("max_tiles", 1)), list(raw_input.get("tiled_categories", []))
    return ScoringRule.tiled(size, max_tiles, categories, DEFAULT_SLACK).model_dump(mode="json")


class Manifest(_Strict):
    format_version: int
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    created_at: str
    onnx: OnnxSpec
    input: InputSpec
    outputs: OutputSpec = OutputSpec()
    scoring: ScoringRule
    """How images are cut, routed and merged around the graph (``model_store.planner``)."""
    categories: list[str] = Field(min_length=1)
    added_categories: list[str] = Field(default_factory=list)
    """Categories added after training (``python -m training add-category``): their centroids, memories and
    calibration come from their good images; the student never saw them."""
    calibration: Calibration
    teacher: str
    prd: dict[str, object] = Field(default_factory=dict)
    """PRD settings the model was trained with (prototypes, top-k, stages...), for people and dashboards."""
    training_data: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)
    """Evaluation metrics (``metrics.json`` of ``training evaluate``) when the bundle was exported after one."""

    @model_validator(mode="before")
    @classmethod
    def _state_legacy_rule(cls, raw: Any) -> Any:
        """A format-1 manifest gets its rule written out (``legacy_scoring_rule``); its tiling fields leave
        ``input``."""
        if not isinstance(raw, dict) or raw.get("format_version") != 1 or "scoring" in raw:
            return raw
        if not isinstance(raw.get("input"), dict) or "height" not in raw["input"]:
            return raw  # the field checks name what is missing
        raw_input = dict(raw["input"])
        scoring = legacy_scoring_rule(raw_input)
        raw_input.pop("max_tiles", None)
        raw_input.pop("tiled_categories", None)
        return {**raw, "input": raw_input, "scoring": scoring}

    @model_validator(mode="after")
    def _complete(self) -> Manifest:
        if self.format_version not in READABLE_FORMAT_VERSIONS:
            message = f"format_version {self.format_version} is not supported (this reader: {READABLE_FORMAT_VERSIONS})"
            raise ValueError(message)
        missing = [c for c in [*self.categories, GLOBAL_KEY] if c not in self.calibration.per_category]
        if missing:
            raise ValueError(f"calibration.per_category has no threshold for {missing}")
        strangers = [c for c in self.added_categories if c not in self.categories]
        if strangers:
            raise ValueError(f"added_categories names {strangers}, which are not among categories")
        unknown = [c for c in self.scoring.tiling.categories if c not in self.categories]
        if unknown:
            raise ValueError(f"scoring.tiling.categories names {unknown}, which are not among categories")
        if self.scoring.tiling.tile_size != self.input.height or self.input.height != self.input.width:
            size = f"input {self.input.height}x{self.input.width}"
            raise ValueError(f"scoring.tiling.tile_size {self.scoring.tiling.tile_size} must match a square {size}")
        return self

    def planner(self, min_similarity: float | None = None) -> Planner:
        """The planner for this bundle's rule; a ``min_similarity`` replaces the bundle's floor (None: keep it)."""
        rule = self.scoring if min_similarity is None else self.scoring.with_floor(min_similarity)
        return Planner(rule, self.categories)
