"""From uploads to verdicts: decode and cut into tiles (threads), batch inference, tiles merged, category,
calibrated decision, heatmaps.

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
from model_store.tiling import merge_each, tile_layout
from service.batching import Arrival, MicroBatcher
from service.errors import InferenceFailed, TooManyFiles, UnknownCategory
from service.imaging import FileProblem, PreparedImage, Upload, heatmap_png, prepare_all, retile
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
        """Decode → batcher → decision → heatmaps. Tiling (``model_store.tiling``): an image of a tiled category
        goes in as its tiles when the category is given; without one it goes in squashed, and if the category it is
        recognised as is tiled (and its shape asks for tiles), its tiles follow in a second pass."""
        loop = asyncio.get_running_loop()
        self._batcher.check_room(len(request.uploads))
        tiling, size = model.manifest.input.tiling, model.input_size
        first_tiles = tiling.max_tiles_for(request.category)
        may_retile = request.category is None and bool(tiling.tiled_categories)
        prepared = await loop.run_in_executor(
            self._pool,
            prepare_all,
            request.uploads,
            size,
            first_tiles,
            self._max_pixels,
            request.overlay,
            may_retile,
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
        predictions = await self._predict(model, good, guard, arrival)
        if may_retile:
            good, predictions = await self._retile(model, good, predictions, guard)
        pairs = list(zip(good, predictions, strict=True))
        decided = [self._decide(model.manifest, image, p, request.category) for image, p in pairs]
        if request.heatmap or request.overlay:
            jobs = [(image, prediction, cal) for (image, prediction), (_, cal) in zip(pairs, decided, strict=True)]
            outcome.pngs = await loop.run_in_executor(self._pool, _encode_heatmaps, jobs)
        for (result, _), image in zip(decided, good, strict=True):
            png = outcome.pngs.get(image.index)
            outcome.results.append(result.model_copy(update={"heatmap_png": _b64(png)}) if png else result)
        return outcome

    async def _predict(
        self, model: OnnxModel, images: list[PreparedImage], guard: Guard, arrival: Arrival | None
    ) -> list[Prediction]:
        """All inputs of ``images`` in one submission, one merged prediction per image."""
        inputs = [tile for image in images for tile in image.tiles]
        if len(inputs) > self._batcher.queue_limit:  # would never fit: say so instead of "retry later"
            message = (
                f"these {len(images)} images make {len(inputs)} tiles (up to {model.manifest.input.max_tiles} each, "
                f"aspect kept), more than the inference queue holds ({self._batcher.queue_limit}); send fewer images "
                "per request"
            )
            raise TooManyFiles(message)
        return _merged(images, await guard(self._batcher.submit(model, inputs, arrival)))

    async def _retile(
        self, model: OnnxModel, images: list[PreparedImage], squashed: list[Prediction], guard: Guard
    ) -> tuple[list[PreparedImage], list[Prediction]]:
        """Second pass: images recognised as a tiled category (as ``_decide`` will recognise them, similarity floor
        included), cut into tiles and scored again; the squashed image's category similarity stays (it chose the
        category)."""
        manifest, tiling, size = model.manifest, model.manifest.input.tiling, model.input_size
        chosen = [choose_category(p.category_similarity, None, manifest, self._min_similarity)[0] for p in squashed]
        limits = [tiling.max_tiles_for(category) for category in chosen]
        wanted = [  # recognised as tiled, and shaped for more than one tile (a square one stays as scored)
            i
            for i, (image, limit) in enumerate(zip(images, limits, strict=True))
            if tile_layout(image.height, image.width, size, limit).count > 1
        ]
        if not wanted:
            return images, squashed
        loop = asyncio.get_running_loop()
        cut = await loop.run_in_executor(self._pool, lambda: [retile(images[i], size, limits[i]) for i in wanted])
        again = list(zip(wanted, cut, strict=True))
        tiled = await self._predict(model, [image for _, image in again], guard, None)
        images, predictions = list(images), list(squashed)
        for (i, image), prediction in zip(again, tiled, strict=True):
            images[i] = image
            predictions[i] = Prediction(prediction.score, prediction.anomaly_map, squashed[i].category_similarity)
        return images, predictions

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


def _merged(images: list[PreparedImage], tile_predictions: list[Prediction]) -> list[Prediction]:
    """One prediction per image from its tiles' (``model_store.tiling.merge_each``), in order."""
    merged = merge_each(
        [p.score for p in tile_predictions],
        [p.anomaly_map for p in tile_predictions],
        [p.category_similarity for p in tile_predictions],
        [image.layout for image in images],
    )
    return [Prediction(m.score, m.anomaly_map, np.asarray(m.category_similarity)) for m in merged]


def _encode_heatmaps(jobs: list[tuple[PreparedImage, Prediction, CategoryCalibration]]) -> dict[int, bytes]:
    return {
        image.index: heatmap_png(prediction.anomaly_map, calibration, image.width, image.height, image.photo)
        for image, prediction, calibration in jobs
    }


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
