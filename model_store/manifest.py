"""The manifest schema: the one contract between training (which writes bundles) and the service (which loads them).

A bundle is ``<store>/<name>/<version>/{model.onnx, manifest.json}``. Everything the service needs to turn bytes
into a verdict is here: the graph's I/O, the resize rule, the categories, per-category calibration (thresholds,
score normalisation, heatmap colour range) and the checksum of the graph. Training validates the manifest it
writes against this schema; the service validates what it reads. Torch-free on purpose.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_store.tiling import TilingPolicy

FORMAT_VERSION = 1
"""Bump when a field changes meaning; loaders refuse other versions with a message naming the file."""

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
    max_tiles: int = Field(default=1, ge=1)
    tiled_categories: list[str] = Field(default_factory=list)
    """An upload of one of these categories (given, or recognised on its squashed image) is cut into at most
    ``max_tiles`` aspect-kept ``height``-px tiles (``model_store.tiling``), scored together and merged: score = the
    highest tile's, map = the tiles' maps stitched. Any other upload is squashed into one square."""

    @property
    def tiling(self) -> TilingPolicy:
        return TilingPolicy(self.max_tiles, frozenset(self.tiled_categories))


class OutputSpec(_Strict):
    """Names of the graph outputs. ``score`` (N,), ``anomaly_map`` (N,1,H,W), ``category_similarity`` (N,C)."""

    score: str = "score"
    anomaly_map: str = "anomaly_map"
    category_similarity: str = "category_similarity"


class OnnxSpec(_Strict):
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=17)
    precision: Literal["fp32", "fp16"] = "fp32"


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

    @model_validator(mode="after")
    def _ordered(self) -> CategoryCalibration:
        if not self.threshold > self.score_lo:
            raise ValueError(f"threshold {self.threshold} must exceed score_lo {self.score_lo}")
        if not self.map_hi > self.map_lo:
            raise ValueError(f"map_hi {self.map_hi} must exceed map_lo {self.map_lo}")
        return self


class Calibration(_Strict):
    target_false_alarm_rate: float = Field(gt=0, lt=1)
    per_category: dict[str, CategoryCalibration]
    """Keys: every category, plus ``GLOBAL_KEY`` for images whose category is neither given nor recognised."""


class Manifest(_Strict):
    format_version: int
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    created_at: str
    onnx: OnnxSpec
    input: InputSpec
    outputs: OutputSpec = OutputSpec()
    categories: list[str] = Field(min_length=1)
    calibration: Calibration
    teacher: str
    prd: dict[str, object] = Field(default_factory=dict)
    """PRD settings the model was trained with (prototypes, top-k, stages...), for people and dashboards."""
    training_data: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)
    """Evaluation metrics (``metrics.json`` of ``training evaluate``) when the bundle was exported after one."""

    @model_validator(mode="after")
    def _complete(self) -> Manifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not supported (this reader: {FORMAT_VERSION})")
        missing = [c for c in [*self.categories, GLOBAL_KEY] if c not in self.calibration.per_category]
        if missing:
            raise ValueError(f"calibration.per_category has no threshold for {missing}")
        unknown = [c for c in self.input.tiled_categories if c not in self.categories]
        if unknown:
            raise ValueError(f"input.tiled_categories names {unknown}, which are not among categories")
        return self
