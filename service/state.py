"""The service's shared objects for one app (settings, metrics, model, batcher, pools) and the route dependencies.

Created by ``create_app``; the batcher, pool and scorer exist between lifespan start and stop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.batching import MicroBatcher
from service.config import Settings
from service.errors import NotReady, ShuttingDown, Unauthorized
from service.metrics import ServiceMetrics
from service.model_manager import ModelManager
from service.runtime import OnnxModel, inference_plan
from service.scoring import Scorer

logger = logging.getLogger("service.state")
T = TypeVar("T")


async def unless(work: Awaitable[T], stop: Awaitable[object]) -> tuple[bool, T | None]:
    """Await ``work`` unless ``stop`` completes first, then cancel ``work``: (whether it finished, its result).

    The one race behind both the drain deadline and a client leaving: cancelling a request's work skips its queued
    images instead of spending inference on an answer nobody will read.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(stop)
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False, None


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    manager: ModelManager
    batcher: MicroBatcher | None = None
    pool: ThreadPoolExecutor | None = None
    scorer: Scorer | None = None
    draining: bool = False
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    drain_expired: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Lifespan start: pools and batcher now, the model in the background (``/readyz`` says when it is warm)."""
        settings = self.settings
        self.draining = False
        self._loop = asyncio.get_running_loop()
        self.drain_expired = asyncio.Event()
        plan = inference_plan(settings)
        self.batcher = MicroBatcher(
            max_batch_size=plan.batch,
            batch_window_s=settings.batch_window_s,
            queue_limit=settings.queue_limit,
            metrics=self.metrics,
            max_queue_wait_s=settings.max_queue_wait_s,
            workers=plan.workers,
        )
        self.batcher.start()
        self.pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="prd-decode")
        self.scorer = Scorer(
            self.batcher,
            self.pool,
            self.metrics,
            settings.max_pixels,
            settings.max_request_pixels,
            settings.decode_pixel_budget,
        )
        self.spawn(self.manager.load_initial())

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def begin_drain(self, expire_after_s: float | None = None) -> None:
        """Stop intake (new requests get 503 shutting_down, /readyz goes down); in-flight requests continue, and
        after ``expire_after_s`` those still unfinished are answered 503 shutting_down (never cut off with a 500).

        Called from a signal handler too, so it only flips attributes and schedules the expiry thread-safely.
        """
        self.draining = True
        self.manager.not_ready_reason = "the service is shutting down"
        loop, expired = self._loop, self.drain_expired
        if expire_after_s is not None and loop is not None and expired is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.call_later, expire_after_s, expired.set)

    async def until_drain_expires(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless the drain time runs out first; then cancel it and answer 503 shutting_down."""
        expired = self.drain_expired
        if expired is None:
            return await work
        finished, result = await unless(work, expired.wait())
        if finished:
            return result  # type: ignore[return-value]
        message = "the service shut down (drain timeout) before this request was finished; retry on another instance"
        raise ShuttingDown(message, headers={"Retry-After": "1"})

    async def stop(self) -> None:
        """Lifespan stop: answer what is queued (up to the drain timeout), then release threads."""
        self.begin_drain()
        self.metrics.model_ready.set(0)
        logger.info("shutting down: answering %d queued images", self.batcher.depth if self.batcher else 0)
        for task in list(self.background):
            task.cancel()
        if self.batcher is not None:
            await self.batcher.stop(self.settings.drain_timeout_s)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def scoring(self) -> tuple[Scorer, OnnxModel]:
        """The scorer and the model in service, or the reason there are none (503)."""
        if self.draining:
            raise ShuttingDown("the service is shutting down and takes no new requests", headers={"Retry-After": "1"})
        model = self.manager.require()
        if self.scorer is None:
            raise NotReady("the service is starting", headers={"Retry-After": "1"})
        return self.scorer, model


async def get_state(request: Request) -> ServiceState:
    """``async`` (as is every dependency here): FastAPI runs a plain ``def`` dependency in a worker thread, a hop
    that costs every request, refusals included, more than the dependency itself."""
    return request.app.state.prd


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when PRD_API_KEYS is set.")


async def require_api_key(
    state: Annotated[ServiceState, Depends(get_state)], key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """When keys are configured, the request must carry one of them in ``X-API-Key`` (compared in constant time)."""
    keys = state.settings.api_key_set
    if not keys:
        return
    if key is None or not any(hmac.compare_digest(key.encode(), accepted.encode()) for accepted in keys):
        reason = "missing X-API-Key header" if key is None else "the X-API-Key is not one of the configured keys"
        raise Unauthorized(reason, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


StateDep = Annotated[ServiceState, Depends(get_state)]
ApiKeyDep = Annotated[None, Depends(require_api_key)]
