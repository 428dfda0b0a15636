"""From uploads to verdicts: decode (threads), batch inference, category, calibrated decision, heatmaps.

The decision rule lives here and nowhere else: the category is the one given, else the closest centroid
(``argmax category_similarity``); its calibration gives ``threshold`` and ``normalized_score`` (see
``CategoryCalibration``); an image is anomalous when ``score > threshold`` (so ``normalized_score > 0.5``).
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from model_store.manifest import GLOBAL_KEY, CategoryCalibration, Manifest
from service.batching import Arrival, MicroBatcher
from service.errors import InferenceFailed, UnknownCategory
from service.imaging import FileProblem, PreparedImage, Upload, heatmap_png, prepare_all
from service.metrics import ServiceMetrics
from service.runtime import OnnxModel, Prediction
from service.schemas import CategorySource, ImageResult

Guard = Callable[[Awaitable[list[Prediction]]], Awaitable[list[Prediction]]]
"""Awaits inference unless the client goes away first (see ``routes.score``)."""


@dataclass
class ScoreOutcome:
    results: list[ImageResult] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    pngs: dict[int, bytes] = field(default_factory=dict)


def check_category(category: str | None, manifest: Manifest) -> str | None:
    """A given category must be one of the model's; ``None`` means 'recognise it'."""
    if category is None or category in manifest.categories:
        return category
    message = (
        f"category {category!r} is not known to model {manifest.name} v{manifest.version}; known: {manifest.categories}"
    )
    raise UnknownCategory(message, known=list(manifest.categories))


def choose_category(
    similarity: np.ndarray, given: str | None, manifest: Manifest, min_similarity: float | None
) -> tuple[str | None, CategorySource]:
    if given is not None:
        return given, "given"
    if similarity.size and np.all(np.isfinite(similarity)):
        best = int(np.argmax(similarity))
        if min_similarity is None or float(similarity[best]) >= min_similarity:
            return manifest.categories[best], "recognised"
    return None, "unknown"


def normalized_score(score: float, calibration: CategoryCalibration) -> float:
    value = 0.5 * (score - calibration.score_lo) / (calibration.threshold - calibration.score_lo)
    return float(min(1.0, max(0.0, value)))


@dataclass(frozen=True)
class ScoreRequest:
    uploads: list[Upload]
    category: str | None
    heatmap: bool
    overlay: bool


class Scorer:
    """Runs one request through decode → batcher → decision → heatmaps, with the service's shared resources."""

    def __init__(
        self,
        batcher: MicroBatcher,
        pool: Executor,
        metrics: ServiceMetrics,
        max_pixels: int,
        min_similarity: float | None,
    ) -> None:
        self._batcher = batcher
        self._pool = pool
        self._metrics = metrics
        self._max_pixels = max_pixels
        self._min_similarity = min_similarity

    def admit(self) -> Arrival:
        """Refuse at once (503) when the queue is full — before the body is even read — else announce the request.

        The caller settles the returned ``Arrival`` when it is done (``try/finally``).
        """
        self._batcher.check_room(1)
        return self._batcher.announce(1)

    async def score(self, model: OnnxModel, request: ScoreRequest, guard: Guard, arrival: Arrival) -> ScoreOutcome:
        loop = asyncio.get_running_loop()
        self._batcher.check_room(len(request.uploads))
        prepared = await loop.run_in_executor(
            self._pool, prepare_all, request.uploads, model.input_size, self._max_pixels, request.overlay
        )
        outcome = ScoreOutcome()
        good: list[PreparedImage] = []
        for item in prepared:
            if isinstance(item, FileProblem):
                self._metrics.record_decode_error(item.kind)
                outcome.problems.append(item)
            else:
                good.append(item)
        if not good:
            return outcome
        predictions = await guard(self._batcher.submit(model, [image.tensor for image in good], arrival))
        pairs = list(zip(good, predictions, strict=True))
        decided = [self._decide(model.manifest, image, p, request.category) for image, p in pairs]
        if request.heatmap or request.overlay:
            jobs = [(image, prediction, cal) for (image, prediction), (_, cal) in zip(pairs, decided, strict=True)]
            outcome.pngs = await loop.run_in_executor(self._pool, _encode_heatmaps, jobs)
        for (result, _), image in zip(decided, good, strict=True):
            png = outcome.pngs.get(image.index)
            outcome.results.append(result.model_copy(update={"heatmap_png": _b64(png)}) if png else result)
        return outcome

    def _decide(
        self, manifest: Manifest, image: PreparedImage, prediction: Prediction, given: str | None
    ) -> tuple[ImageResult, CategoryCalibration]:
        if not math.isfinite(prediction.score):
            message = f"the model returned a non-finite score ({prediction.score}) for {image.filename!r}"
            raise InferenceFailed(message)
        category, source = choose_category(prediction.category_similarity, given, manifest, self._min_similarity)
        calibration = manifest.calibration.per_category[category or GLOBAL_KEY]
        normalized = normalized_score(prediction.score, calibration)
        anomalous = prediction.score > calibration.threshold
        self._metrics.record_scored(category or GLOBAL_KEY, normalized, anomalous)
        result = ImageResult(
            index=image.index,
            filename=image.filename,
            category=category,
            category_source=source,
            score=prediction.score,
            normalized_score=normalized,
            threshold=calibration.threshold,
            is_anomalous=anomalous,
            width=image.width,
            height=image.height,
        )
        return result, calibration


def _encode_heatmaps(jobs: list[tuple[PreparedImage, Prediction, CategoryCalibration]]) -> dict[int, bytes]:
    return {
        image.index: heatmap_png(prediction.anomaly_map, calibration, image.width, image.height, image.photo)
        for image, prediction, calibration in jobs
    }


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
