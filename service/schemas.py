"""Response bodies of the HTTP API, with the examples shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from model_store.outputs import CategorySource
from model_store.planner import ScoringRule

_RESULT_EXAMPLE = {
    "index": 0,
    "filename": "cam3_000123.png",
    "category": "bottle",
    "category_source": "recognised",
    "score": 0.4312,
    "normalized_score": 0.71,
    "threshold": 0.3518,
    "is_anomalous": True,
    "false_alarm_probability": 0.0,
    "category_similarity": 0.93,
    "unknown_part": False,
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
    normalized_score: float = Field(
        description="The score on the category's scale, linear and clipped: 0 = the median held-out normal part (and "
        "every score below it), 0.5 = the threshold, 1 = as far above the threshold as the median is below it (and "
        "beyond). Readable as a gauge near the threshold, not as a probability; see false_alarm_probability."
    )
    threshold: float = Field(description="The category's threshold on the raw score.")
    is_anomalous: bool = Field(description="score > threshold.")
    false_alarm_probability: float | None = Field(
        None,
        description="The fraction of the category's held-out normal images scoring at least this high, interpolated "
        "from the bundle's quantile table (calibration normal_quantiles, 5 % steps): 1 = lower than every normal, "
        "0 = higher than every normal. Null for bundles without the table (prd/6 and older).",
    )
    category_similarity: float | None = Field(
        None,
        description="How well the image matched its category: the cosine similarity of its pooled features to the "
        "deciding category's centroid (given or recognised; for an unknown part, the best of all categories). 1 = "
        "identical; compare with the bundle's scoring.routing.min_similarity. A given category the image does not "
        "look like shows here as a low value. Null when the graph's similarities are not finite.",
    )
    unknown_part: bool = Field(
        False,
        description="True when the image matched no trained category well enough (best similarity below the "
        "recognition floor): category is null and the global calibration decides; treat it as 'not a part this "
        "model knows' rather than as a verdict on a part.",
    )
    width: int = Field(description="Width of the uploaded image (pixels).")
    height: int = Field(description="Height of the uploaded image (pixels).")
    tiles: int = Field(
        1,
        description="Graph inputs the image was scored as: 1 = squashed into one square, more = aspect-kept tiles "
        "(the bundle's scoring rule, GET /models 'scoring').",
    )
    heatmap_png: str | None = Field(
        None,
        description="Base64 PNG (with ?heatmap=true, drawn over the photo with ?overlay=true): the image's size, "
        "then a legend below it: the category's colour scale (map_lo left, map_hi right) with a white tick at the "
        "threshold, and the values written under it when the image is at least 320 px wide.",
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


class InferenceInfo(BaseModel):
    """How this process runs the graph (``PRD_INFERENCE_WORKERS``, ``PRD_INTRA_OP_THREADS``, ``PRD_MAX_BATCH_SIZE``)."""

    workers: int = Field(description="ONNX Runtime runs at once, each on a session of its own.")
    threads_per_worker: int = Field(description="Intra-op threads of each worker's session; 0: ONNX Runtime's choice.")
    batch_per_worker: int = Field(description="Graph inputs one run takes at most.")
    alone_threads: int = Field(description="Threads for a lone input while every worker is idle; 0: no such session.")


class InputInfo(BaseModel):
    height: int
    width: int
    layout: str
    dtype: str
    color: str
    resize: str


class ModelSummary(BaseModel):
    name: str
    version: int
    created_at: str
    directory: str
    teacher: str
    precision: str
    input: InputInfo
    scoring: ScoringRule
    added_categories: list[str] = Field(
        default_factory=list, description="Categories added after training (their student maps never saw them)."
    )
    """The scoring rule in force (``model_store/planner.py``): the bundle's, with ``PRD_RECOGNITION_MIN_SIMILARITY``
    as its floor when that is set."""
    categories: list[CategoryInfo]
    global_calibration: CategoryInfo
    provider: str = Field(description="Execution provider running the graph.")
    session_providers: list[str]
    requested_providers: list[str]
    inference: InferenceInfo
    available_versions: list[int]
    metrics: dict[str, object]


class ReloadResponse(BaseModel):
    changed: bool = Field(description="False when the requested bundle was already in service.")
    previous: ModelRef | None
    current: ModelRef
    provider: str
