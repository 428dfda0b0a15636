"""The FastAPI application: ``create_app(settings)`` wires routes, error handlers, metrics and the lifespan.

``uvicorn service.app:app`` works too: ``app`` is built on first access (PEP 562 module ``__getattr__``) from the
environment, so importing this module reads no configuration and needs no model; the model is loaded in the
background once the server has started (``/readyz`` turns 200 when it is warm). On SIGHUP (main thread only) the
model is reloaded from the store, like ``POST /models/reload``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from service.config import Settings
from service.errors import ModelUnavailable, install_error_handlers
from service.metrics import HttpMetricsMiddleware, ServiceMetrics
from service.model_manager import ModelLoader, ModelManager
from service.routes import health, models, review, score
from service.routes.docs import install_docs, problem_json_openapi
from service.state import ServiceState

logger = logging.getLogger("service.app")

DESCRIPTION = """
Visual quality inspection: multi-class unsupervised anomaly detection (Prototype-based Reverse Distillation) on
ONNX Runtime. `POST /score` takes images and answers per image a category, a score, a calibrated verdict and,
on request, a heatmap. Errors are `application/problem+json`. When API keys are configured, send `X-API-Key`
(not needed for `/healthz`, `/readyz`, `/metrics`).
"""


def _default_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


async def _reload_on_signal(state: ServiceState) -> None:
    try:
        swap = await state.manager.load()
        logger.info("SIGHUP reload: serving %s v%s", swap.current.manifest.name, swap.current.manifest.version)
    except ModelUnavailable as exc:
        logger.error("SIGHUP reload failed: %s", exc.detail)


def _install_sighup(state: ServiceState) -> bool:
    """Reload on SIGHUP; only possible when the event loop runs in the main thread (not in tests or benchmarks)."""
    if not hasattr(signal, "SIGHUP"):
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: state.spawn(_reload_on_signal(state)))
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.prd
    await state.start()
    sighup = _install_sighup(state)
    try:
        yield
    finally:
        if sighup:
            with suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await state.stop()


def create_app(
    settings: Settings | None = None, *, registry: CollectorRegistry | None = None, loader: ModelLoader | None = None
) -> FastAPI:
    """Build the app; nothing is loaded until the lifespan starts.

    Args:
        settings: configuration; default ``Settings()`` (the ``PRD_*`` environment).
        registry: metrics registry; default a fresh one with the process collectors (one app per registry).
        loader: opens a verified bundle; default ``runtime.open_model`` (tests wrap it to hold batches).
    """
    settings = settings or Settings()
    metrics = ServiceMetrics(registry if registry is not None else _default_registry())
    # /docs and /redoc come from install_docs: their assets are served by the app, not fetched from a CDN.
    app = FastAPI(
        title="PRD Inspect", version="1", description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.prd = ServiceState(settings=settings, metrics=metrics, manager=ModelManager(settings, metrics, loader))
    install_error_handlers(app, metrics)
    for router in (score.router, models.router, health.router, review.router):
        app.include_router(router)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    install_docs(app)
    app.openapi = lambda: problem_json_openapi(app, bool(settings.api_key_set))  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> Any:
    """``service.app.app``: built from the environment on first use (for ``uvicorn service.app:app``)."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
