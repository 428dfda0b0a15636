"""``POST /score``: validate, hand the images to the scorer, shape the answer (JSON, or the heatmap PNG itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict
from functools import partial
from typing import Annotated, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from starlette.types import Receive

from service.errors import BadImages, ClientDisconnected, NotAcceptable
from service.routes.docs import SCORE_BODY, SCORE_DESCRIPTION, SCORE_RESPONSES
from service.runtime import OnnxModel
from service.schemas import ModelRef, ScoreResponse
from service.scoring import ScoreOutcome, Scorer, ScoreRequest, check_category
from service.state import ApiKeyDep, ServiceState, StateDep, unless
from service.text import shown
from service.uploads import FormUploads, read_form

T = TypeVar("T")
_JSON_TYPES = ("application/json", "application/*", "*/*")
router = APIRouter(tags=["scoring"])


@router.post(
    "/score",
    summary="Score one or many images",
    description=SCORE_DESCRIPTION,
    response_model=ScoreResponse,
    responses=SCORE_RESPONSES,
    openapi_extra=SCORE_BODY,
)
async def score(
    request: Request,
    state: StateDep,
    _: ApiKeyDep,
    category: Annotated[str | None, Query(description="Category of every image; recognised when absent.")] = None,
    heatmap: Annotated[bool, Query(description="Add a base64 PNG heatmap to each result.")] = False,
    overlay: Annotated[bool, Query(description="Draw the heatmap over the photo (implies heatmap).")] = False,
) -> ScoreResponse | Response:
    want_png = wants_png(request.headers.get("accept", ""))
    scorer, model = state.scoring()
    form, outcome = await state.until_drain_expires(
        _score(request, state, scorer, model, category, want_png, heatmap, overlay)
    )
    ref = ModelRef(name=model.manifest.name, version=model.manifest.version)
    if outcome.problems:
        raise _bad_images(outcome, len(form.uploads), ref)
    if want_png:
        return _png_response(outcome, ref)
    return ScoreResponse(model=ref, results=outcome.results)


async def _score(
    request: Request,
    state: ServiceState,
    scorer: Scorer,
    model: OnnxModel,
    category: str | None,
    want_png: bool,
    heatmap: bool,
    overlay: bool,
) -> tuple[FormUploads, ScoreOutcome]:
    """Read the form, admit the request on its whole work (from the headers), then score it; every refusal is
    raised before anything is decoded or queued."""
    settings = state.settings
    arrival = scorer.announce()
    try:
        form = await read_form(
            request, settings.max_upload_bytes, settings.max_files, category, settings.body_timeout_s
        )
        arrival.expect(len(form.uploads))
        if want_png and len(form.uploads) != 1:
            message = (
                f"Accept: image/png returns one heatmap; this request has {len(form.uploads)} files (ask for JSON)"
            )
            raise NotAcceptable(message)
        given = check_category(form.category, model.manifest)
        admission = scorer.admit(model, form.uploads, given)
        try:
            job = ScoreRequest(form.uploads, given, heatmap=heatmap or overlay or want_png, overlay=overlay)
            guard = partial(until_disconnect, request.receive)
            return form, await scorer.score(model, job, guard, arrival, admission)
        finally:
            admission.release()
    finally:
        arrival.settle()


def wants_png(accept: str) -> bool:
    """True when the client prefers ``image/png`` (or ``image/*``) to JSON; ``*/*`` alone means JSON."""
    best = {"png": 0.0, "json": 0.0}
    first: str | None = None
    for entry in accept.split(","):
        media, _, params = entry.partition(";")
        media = media.strip().lower()
        kind = "png" if media in ("image/png", "image/*") else "json" if media in _JSON_TYPES else None
        if kind is None:
            continue
        first = first or kind
        best[kind] = max(best[kind], _quality(params))
    return best["png"] > best["json"] or (best["png"] > 0 and best["png"] == best["json"] and first == "png")


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it (queued images are skipped, not run)."""
    finished, result = await unless(work, _disconnected(receive))
    if finished:
        return result  # type: ignore[return-value]
    raise ClientDisconnected("the client closed the connection before its images were scored")


async def _disconnected(receive: Receive) -> None:
    """Return when the server reports ``http.disconnect`` (the body has been read, so nothing else is expected)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # a server that keeps answering with empty body chunks must not spin this loop


def _bad_images(outcome: ScoreOutcome, n_files: int, ref: ModelRef) -> BadImages:
    listed = ", ".join(f"{shown(p.filename)} ({p.kind}: {p.detail})" for p in outcome.problems)
    scored = "; the other files are scored in 'results'" if outcome.results else ""
    detail = f"{len(outcome.problems)} of {n_files} files cannot be scored: {listed}{scored}"
    return BadImages(
        detail,
        errors=[asdict(problem) for problem in outcome.problems],
        results=[result.model_dump() for result in outcome.results],
        model=ref.model_dump(),
    )


def _png_response(outcome: ScoreOutcome, ref: ModelRef) -> Response:
    result = outcome.results[0]
    headers = {
        "X-PRD-Score": f"{result.score:.6g}",
        "X-PRD-Normalized-Score": f"{result.normalized_score:.4f}",
        "X-PRD-Threshold": f"{result.threshold:.6g}",
        "X-PRD-Anomalous": "true" if result.is_anomalous else "false",
        "X-PRD-Category": quote(result.category or "", safe=""),
        "X-PRD-Category-Source": result.category_source,
        "X-PRD-Model": f"{quote(ref.name, safe='')}/{ref.version}",
        "X-PRD-Image-Size": f"{result.width}x{result.height}",
    }
    return Response(content=outcome.pngs[result.index], media_type="image/png", headers=headers)
