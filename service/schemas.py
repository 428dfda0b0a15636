"""Response bodies of the HTTP API, with the examples shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CategorySource = Literal["given", "recognised", "unknown"]

_RESULT_EXAMPLE = {
    "index": 0,
    "filename": "cam3_000123.png",
    "category": "bottle",
    "category_source": "recognised",
    "score": 0.4312,
    "normalized_score": 0.71,
    "threshold": 0.3518,
    "is_anomalous": True,
    "width": 900,
    "height": 900,
    "heatmap_png": None,
}


class ModelRef(BaseModel):
    name: str
    version: int


class ImageResult(BaseModel):
    """The verdict on one image, in upload order."""

    model_config = ConfigDict(json_schema_extra={"examples": [_RESULT_EXAMPLE]})

    index: int = Field(description="Position of the file in the request (0-based).")
    filename: str = Field(description="Name the client sent, or 'file[i]' when it sent none.")
    category: str | None = Field(description="Category used for the decision; null when none could be recognised.")
    category_source: CategorySource = Field(
        description="'given' (request), 'recognised' (closest category centroid) or 'unknown' (global calibration)."
    )
    score: float = Field(description="Raw anomaly score of the model.")
    normalized_score: float = Field(description="0 = a typical normal part, 0.5 = the threshold, 1 = far above.")
    threshold: float = Field(description="The category's threshold on the raw score.")
    is_anomalous: bool = Field(description="score > threshold.")
    width: int = Field(description="Width of the uploaded image (pixels).")
    height: int = Field(description="Height of the uploaded image (pixels).")
    heatmap_png: str | None = Field(
        None,
        description="Base64 PNG at the image's size (with ?heatmap=true, drawn over the photo with ?overlay=true).",
    )


class ScoreResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": {"name": "prd", "version": 3}, "results": [_RESULT_EXAMPLE]}]}
    )

    model: ModelRef
    results: list[ImageResult]


class FileError(BaseModel):
    index: int
    filename: str
    kind: str = Field(description="empty, not_an_image, corrupt, too_many_pixels, unsupported_mode or bad_size.")
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``); ``errors``/``results`` only for bad images."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:prd:problem:bad-images",
                    "title": "Some files are not usable images",
                    "status": 422,
                    "detail": (
                        "1 of 2 files cannot be scored: 'b.png' (corrupt: ...); the other files are scored in 'results'"
                    ),
                    "instance": "/score",
                    "errors": [{"index": 1, "filename": "b.png", "kind": "corrupt", "detail": "PNG image (64x64) ..."}],
                    "results": [_RESULT_EXAMPLE],
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FileError] | None = None
    results: list[ImageResult] | None = None


class HealthResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "reason": None,
                    "model": {"name": "prd", "version": 3},
                    "provider": "CPUExecutionProvider",
                }
            ]
        }
    )

    ready: bool
    reason: str | None = None
    model: ModelRef | None = None
    provider: str | None = None


class CategoryInfo(BaseModel):
    name: str
    threshold: float
    score_lo: float
    false_alarm_rate: float
    map_lo: float
    map_hi: float


class InputInfo(BaseModel):
    height: int
    width: int
    layout: str
    dtype: str
    color: str
    resize: str
    max_tiles: int = 1
    tiled_categories: list[str] = []
    """Uploads of these categories are cut into at most ``max_tiles`` aspect-kept tiles (``model_store/tiling.py``);
    the others are squashed into one square."""


class ModelSummary(BaseModel):
    name: str
    version: int
    created_at: str
    directory: str
    teacher: str
    precision: str
    input: InputInfo
    categories: list[CategoryInfo]
    global_calibration: CategoryInfo
    provider: str = Field(description="Execution provider running the graph.")
    session_providers: list[str]
    requested_providers: list[str]
    available_versions: list[int]
    metrics: dict[str, object]


class ReloadResponse(BaseModel):
    changed: bool = Field(description="False when the requested bundle was already in service.")
    previous: ModelRef | None
    current: ModelRef
    provider: str
