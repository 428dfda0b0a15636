"""``GET /models`` (what is served and how it decides) and ``POST /models/reload`` (hot reload)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from model_store.bundle import list_versions
from model_store.manifest import GLOBAL_KEY, CategoryCalibration
from service.routes.docs import MANAGEMENT_RESPONSES
from service.schemas import CategoryInfo, InferenceInfo, InputInfo, ModelRef, ModelSummary, ReloadResponse
from service.state import ApiKeyDep, StateDep

router = APIRouter(tags=["models"])


def _category(name: str, calibration: CategoryCalibration) -> CategoryInfo:
    return CategoryInfo(
        name=name,
        threshold=calibration.threshold,
        score_lo=calibration.score_lo,
        false_alarm_rate=calibration.false_alarm_rate,
        map_lo=calibration.map_lo,
        map_hi=calibration.map_hi,
    )


@router.get("/models", summary="The model in service", response_model=ModelSummary, responses=MANAGEMENT_RESPONSES)
async def models(state: StateDep, _: ApiKeyDep) -> ModelSummary:
    model = state.manager.require()
    manifest = model.manifest
    per_category = manifest.calibration.per_category
    settings = state.settings
    return ModelSummary(
        name=manifest.name,
        version=manifest.version,
        created_at=manifest.created_at,
        directory=str(model.bundle.directory),
        teacher=manifest.teacher,
        precision=manifest.onnx.precision,
        input=InputInfo(**manifest.input.model_dump(exclude={"name", "channels"})),
        scoring=model.planner.rule,
        added_categories=list(manifest.added_categories),
        categories=[_category(name, per_category[name]) for name in manifest.categories],
        global_calibration=_category(GLOBAL_KEY, per_category[GLOBAL_KEY]),
        provider=model.provider,
        session_providers=model.providers,
        requested_providers=model.requested_providers,
        inference=InferenceInfo(
            workers=model.plan.workers,
            threads_per_worker=model.plan.threads,
            batch_per_worker=model.plan.batch,
            alone_threads=model.plan.alone_threads,
        ),
        available_versions=list_versions(settings.model_store, settings.model_name),
        metrics=dict(manifest.metrics),
    )


@router.post(
    "/models/reload",
    summary="Load a version from the store and swap it in without failing requests in flight",
    response_model=ReloadResponse,
    responses=MANAGEMENT_RESPONSES,
)
async def reload(
    state: StateDep,
    _: ApiKeyDep,
    version: Annotated[
        str | None, Query(pattern=r"^(latest|[1-9][0-9]*)$", description="Default: PRD_MODEL_VERSION.")
    ] = None,
) -> ReloadResponse:
    swap = await state.manager.load(version)
    previous = swap.previous
    return ReloadResponse(
        changed=swap.changed,
        previous=ModelRef(name=previous.manifest.name, version=previous.manifest.version) if previous else None,
        current=ModelRef(name=swap.current.manifest.name, version=swap.current.manifest.version),
        provider=swap.current.provider,
    )
