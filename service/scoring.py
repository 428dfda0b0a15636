"""From uploads to verdicts: decode and cut (threads), batch inference, the bundle's scoring rule, calibrated
decision, heatmaps.

Which inputs an image becomes, which category it is and how its outputs merge are the bundle's scoring rule,
carried out by its planner (``model_store.planner``) step by step around the batcher. The decision lives here
and nowhere else: the routed category's calibration gives ``threshold``, ``normalized_score`` and
``false_alarm_probability`` (see ``CategoryCalibration``); an image is anomalous when ``score > threshold`` (so
``normalized_score > 0.5``). An image of no known category (below the recognition floor) is an ``unknown_part``,
decided on the global calibration; ``category_similarity`` says how well its best category matched.
Whether a request is taken at all is decided before, once, by ``service.admission``; scoring runs within what
was reserved there.
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
from model_store.outputs import GraphOutputs, ImageOutputs
from service.admission import Admission, Gate
from service.batching import Arrival, MicroBatcher, Reservation
from service.errors import InferenceFailed, UnknownCategory
from service.imaging import FileProblem, Header, PreparedImage, Upload, heatmap_png, prepare_all, retile
from service.metrics import ServiceMetrics
from service.runtime import OnnxModel
from service.schemas import ImageResult
from service.text import shown

Guard = Callable[[Awaitable[list[GraphOutputs]]], Awaitable[list[GraphOutputs]]]
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
    model = f"{manifest.name} v{manifest.version}"
    message = f"category {shown(category)} is not known to model {model}; known: {manifest.categories}"
    raise UnknownCategory(message, known=list(manifest.categories))


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
        max_request_pixels: int | None = None,
        decode_budget: int | None = None,
    ) -> None:
        self._batcher = batcher
        self._pool = pool
        self._metrics = metrics
        self._max_pixels = max_pixels
        self._gate = Gate(batcher, max_pixels, max_request_pixels, decode_budget)

    def announce(self) -> Arrival:
        """``Gate.announce``: refused at once when full, before the body is read; else announced to the batcher."""
        return self._gate.announce()

    def admit(self, model: OnnxModel, uploads: list[Upload], given: str | None) -> Admission:
        """``Gate.admit``: the request's whole work reserved from its headers, or refused (413/503)."""
        return self._gate.admit(model.planner, uploads, given)

    async def score(
        self, model: OnnxModel, request: ScoreRequest, guard: Guard, arrival: Arrival, admission: Admission
    ) -> ScoreOutcome:
        """Decode → batcher → decision → heatmaps, the planner's steps in ``Planner.score``'s order: first passes
        (a given tiled category's tiles, else the squashed image), then second passes for images recognised as a
        tiled category whose shape asks for tiles. Files refused from their header are not decoded."""
        loop = asyncio.get_running_loop()
        planner = model.planner
        may_retile = planner.may_cut_later(request.category)
        readable = [u for u, h in zip(request.uploads, admission.headers, strict=True) if isinstance(h, Header)]
        prepared = await loop.run_in_executor(
            self._pool,
            prepare_all,
            readable,
            planner,
            request.category,
            self._max_pixels,
            request.overlay,
            may_retile,
        )
        prepared += [h for h in admission.headers if isinstance(h, FileProblem)]
        prepared.sort(key=lambda item: item.index)
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
        reservation = admission.reservation
        answers = await self._first_pass(model, good, request.category, guard, arrival, reservation)
        if may_retile:
            good, answers = await self._second_pass(model, good, answers, guard, request.uploads, reservation)
        pairs = list(zip(good, answers, strict=True))
        decided = [self._decide(model.manifest, image, answer) for image, answer in pairs]
        if request.heatmap or request.overlay:
            jobs = [(image, answer, cal) for (image, answer), (_, cal) in zip(pairs, decided, strict=True)]
            outcome.pngs = await loop.run_in_executor(self._pool, _encode_heatmaps, jobs)
        for (result, _), image in zip(decided, good, strict=True):
            png = outcome.pngs.get(image.index)
            outcome.results.append(result.model_copy(update={"heatmap_png": _b64(png)}) if png else result)
        return outcome

    async def _run(
        self,
        model: OnnxModel,
        images: list[PreparedImage],
        guard: Guard,
        arrival: Arrival | None,
        reservation: Reservation,
    ) -> list[GraphOutputs]:
        """All inputs of ``images`` in one submission (within the request's reservation); each image's outputs.
        A second pass (no ``arrival``) goes to the front of the queue: the request has waited its turn once."""
        inputs = [tile for image in images for tile in image.tiles]
        rows = await guard(self._batcher.submit(model, inputs, arrival, reservation, front=arrival is None))
        parts, start = [], 0
        for image in images:
            parts.append(GraphOutputs.concat(rows[start : start + len(image.tiles)]))
            start += len(image.tiles)
        return parts

    async def _first_pass(
        self,
        model: OnnxModel,
        images: list[PreparedImage],
        given: str | None,
        guard: Guard,
        arrival: Arrival,
        reservation: Reservation,
    ) -> list[ImageOutputs]:
        parts = await self._run(model, images, guard, arrival, reservation)
        return [model.planner.merge(part, image.layout, given) for image, part in zip(images, parts, strict=True)]

    async def _second_pass(
        self,
        model: OnnxModel,
        images: list[PreparedImage],
        first: list[ImageOutputs],
        guard: Guard,
        uploads: list[Upload],
        reservation: Reservation,
    ) -> tuple[list[PreparedImage], list[ImageOutputs]]:
        """Images the planner wants cut after recognition, cut and scored again (``Planner.second_pass``)."""
        planner = model.planner
        layouts = [
            planner.second_pass(answer, image.height, image.width) for image, answer in zip(images, first, strict=True)
        ]
        wanted = [i for i, layout in enumerate(layouts) if layout is not None]
        if not wanted:
            return images, first
        loop = asyncio.get_running_loop()
        data = {upload.index: upload.data for upload in uploads}
        cut = await loop.run_in_executor(
            self._pool,
            lambda: [retile(images[i], layouts[i], data[images[i].index], self._max_pixels) for i in wanted],
        )
        parts = await self._run(model, cut, guard, None, reservation)
        images, answers = list(images), list(first)
        for i, image, part in zip(wanted, cut, parts, strict=True):
            images[i] = image
            answers[i] = planner.merge_retiled(first[i], part, image.layout)
        return images, answers

    def _decide(
        self, manifest: Manifest, image: PreparedImage, answer: ImageOutputs
    ) -> tuple[ImageResult, CategoryCalibration]:
        if not math.isfinite(answer.score):
            message = f"the model returned a non-finite score ({answer.score}) for {shown(image.filename)}"
            raise InferenceFailed(message)
        category, source = answer.category, answer.category_source
        calibration = manifest.calibration.per_category[category or GLOBAL_KEY]
        normalized = normalized_score(answer.score, calibration)
        anomalous = answer.score > calibration.threshold
        self._metrics.record_scored(category or GLOBAL_KEY, normalized, anomalous)
        matched = _match(answer, manifest)
        result = ImageResult(
            index=image.index,
            filename=image.filename,
            category=category,
            category_source=source,
            score=answer.score,
            normalized_score=normalized,
            threshold=calibration.threshold,
            is_anomalous=anomalous,
            false_alarm_probability=calibration.false_alarm_probability(answer.score),
            category_similarity=matched,
            unknown_part=source == "unknown",
            width=image.width,
            height=image.height,
            tiles=answer.tiles,
        )
        return result, calibration


def _match(answer: ImageOutputs, manifest: Manifest) -> float | None:
    """How well the image matched: its similarity to the deciding category (given or recognised), else the best
    one (an unknown part); None when the graph's similarities are not finite."""
    similarity = answer.category_similarity
    if similarity.size == 0 or not np.all(np.isfinite(similarity)):
        return None
    if answer.category is not None and similarity.size == len(manifest.categories):
        return float(similarity[manifest.categories.index(answer.category)])
    return float(similarity.max())


def _encode_heatmaps(jobs: list[tuple[PreparedImage, ImageOutputs, CategoryCalibration]]) -> dict[int, bytes]:
    return {
        image.index: heatmap_png(answer.anomaly_map, calibration, image.width, image.height, image.photo)
        for image, answer, calibration in jobs
    }


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
