"""Running the real app in-process for tests: lifespan + httpx over ASGI, a fresh metrics registry, and a gate
that can hold a batch inside the model so tests can line requests up behind it (no sleeps, no timing asserts)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from model_store.bundle import Bundle
from service.app import create_app
from service.config import Settings
from service.runtime import OnnxModel, open_model
from service.state import ServiceState

T = TypeVar("T")
PATIENCE_S = 20.0
"""Upper bound for waiting on a condition; tests never assert on time, this only stops a broken test hanging."""


def settings_for(store: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_store": store,
        "model_name": "tiny",
        "providers": "CPUExecutionProvider",
        "inference_workers": 1,
        "intra_op_threads": 1,
        "decode_threads": 2,
        "warmup_runs": 1,
        "max_batch_size": 8,
        "batch_window_ms": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


class Gate:
    """Holds ``predict`` of gated models until opened; records the batch sizes they ran."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.opened.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def close(self) -> None:
        self.entered.clear()
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


class GatedModel:
    """An ``OnnxModel`` whose batches wait for the gate (warm-up goes straight to the inner model)."""

    def __init__(self, inner: OnnxModel, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    def predict(self, batch: np.ndarray, alone: bool = False) -> list[Any]:
        self._gate.batches.append(len(batch))
        self._gate.entered.set()
        self._gate.opened.wait(PATIENCE_S)
        return self._inner.predict(batch, alone)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def gated_loader(gate: Gate, versions: Iterable[int] | None = None) -> Callable[[Bundle, Settings], OnnxModel]:
    """Loader gating the given versions (all when None)."""
    wanted = None if versions is None else set(versions)

    def load(bundle: Bundle, settings: Settings) -> OnnxModel:
        model = open_model(bundle, settings)
        if wanted is None or bundle.manifest.version in wanted:
            return GatedModel(model, gate)  # type: ignore[return-value]
        return model

    return load


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    registry: CollectorRegistry

    @property
    def state(self) -> ServiceState:
        return self.app.state.prd

    def metric(self, sample: str, /, **labels: str) -> float:
        value = self.registry.get_sample_value(sample, labels)
        return 0.0 if value is None else value

    async def wait_ready(self) -> dict[str, Any]:
        async def ready() -> bool:
            return (await self.client.get("/readyz")).status_code == 200

        await until(ready)
        return (await self.client.get("/readyz")).json()

    async def score(self, *files: tuple[str, bytes], field: str = "files", **kwargs: Any) -> httpx.Response:
        parts = [(field, (name, data, "application/octet-stream")) for name, data in files]
        return await self.client.post("/score", files=parts, **kwargs)

    async def hold_one_and_queue(
        self, gate: Gate, image: tuple[str, bytes], queued: int
    ) -> tuple[asyncio.Future[httpx.Response], list[asyncio.Future[httpx.Response]]]:
        """Send one request and hold its run in the (gated) model, then ``queued`` more that wait in the batcher
        behind it; returns (held, queued) futures. The caller opens the gate when it has looked at the queue."""
        gate.close()
        held = asyncio.ensure_future(self.score(image))
        await until(gate.entered.is_set, "first batch held in the model")
        waiting = [asyncio.ensure_future(self.score(image)) for _ in range(queued)]
        await until(lambda: self.state.batcher.depth == queued, f"{queued} images queued behind it")
        return held, waiting


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str = "condition") -> None:
    """Poll ``condition`` (sync or async) until true; fail the test after ``PATIENCE_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while True:
        outcome = condition()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {PATIENCE_S} s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(
    settings: Settings, *, loader: Callable[[Bundle, Settings], OnnxModel] | None = None, ready: bool = True
) -> AsyncIterator[Harness]:
    """The app with its lifespan running, an httpx client on it, and (by default) the model warm."""
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry, loader=loader)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://prd.test", timeout=PATIENCE_S) as client:
            harness = Harness(app=app, client=client, registry=registry)
            if ready:
                await harness.wait_ready()
            yield harness


def run(scenario: Awaitable[T]) -> T:
    """Run an async test scenario (the dev extra has no pytest-asyncio; asyncio.run is enough)."""
    return asyncio.run(scenario)  # type: ignore[arg-type]
