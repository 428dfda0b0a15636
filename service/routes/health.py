"""Probes and scraping, open without API key: ``/healthz`` (alive), ``/readyz`` (model warm), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.metrics import CONTENT_TYPE_LATEST, exposition
from service.schemas import HealthResponse, ModelRef, ReadyResponse
from service.state import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process answers", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/readyz",
    summary="A model is loaded and warm (503 with the reason when not)",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not ready; `reason` says why."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    model = state.manager.current
    if state.draining or model is None:
        body = ReadyResponse(ready=False, reason=state.manager.not_ready_reason)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    body = ReadyResponse(
        ready=True, model=ModelRef(name=model.manifest.name, version=model.manifest.version), provider=model.provider
    )
    return JSONResponse(body.model_dump())


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    return Response(exposition(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
