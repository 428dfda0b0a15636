"""The service's shared objects for one app (settings, metrics, model, batcher, pools) and the route dependencies.

Created by ``create_app``; the batcher, pool and scorer exist between lifespan start and stop only.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.batching import MicroBatcher
from service.config import Settings
from service.errors import NotReady, ShuttingDown, Unauthorized
from service.metrics import ServiceMetrics
from service.model_manager import ModelManager
from service.runtime import OnnxModel
from service.scoring import Scorer

logger = logging.getLogger("service.state")


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

    async def start(self) -> None:
        """Lifespan start: pools and batcher now, the model in the background (``/readyz`` says when it is warm)."""
        settings = self.settings
        self.draining = False
        self.batcher = MicroBatcher(
            max_batch_size=settings.max_batch_size,
            batch_window_s=settings.batch_window_s,
            queue_limit=settings.queue_limit,
            metrics=self.metrics,
        )
        self.batcher.start()
        self.pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="prd-decode")
        self.scorer = Scorer(
            self.batcher, self.pool, self.metrics, settings.max_pixels, settings.recognition_min_similarity
        )
        self.spawn(self.manager.load_initial())

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def begin_drain(self) -> None:
        """Stop intake (new requests get 503 shutting_down, /readyz goes down); in-flight requests continue.

        Called from a signal handler too, so it only flips plain attributes (no locks, no logging).
        """
        self.draining = True
        self.manager.not_ready_reason = "the service is shutting down"

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


def get_state(request: Request) -> ServiceState:
    return request.app.state.prd


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when PRD_API_KEYS is set.")


def require_api_key(request: Request, key: Annotated[str | None, Depends(_api_key_header)]) -> None:
    """When keys are configured, the request must carry one of them in ``X-API-Key`` (compared in constant time)."""
    keys = get_state(request).settings.api_key_set
    if not keys:
        return
    if key is None or not any(hmac.compare_digest(key.encode(), accepted.encode()) for accepted in keys):
        reason = "missing X-API-Key header" if key is None else "the X-API-Key is not one of the configured keys"
        raise Unauthorized(reason, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


StateDep = Annotated[ServiceState, Depends(get_state)]
ApiKeyDep = Annotated[None, Depends(require_api_key)]
