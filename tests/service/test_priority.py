"""Compute threads run at a lower priority than the event loop (``service.priority``, ``PRD_COMPUTE_NICE``): the
thread that opens the session and the ONNX Runtime threads it starts, the inference thread and the decode threads.
Nice values are read from the kernel; nothing is timed."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.bundle import Bundle, load_bundle
from model_store.session import GraphSession, session_options
from service.config import Settings
from service.priority import compute_pool, thread_nice
from service.runtime import OnnxModel, open_model
from tests.fixtures.images import png, uniform
from tests.service.harness import run, serving, settings_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _threads() -> dict[int, int]:
    """This process's threads: native id → nice value."""
    return {int(tid): thread_nice(int(tid)) for tid in os.listdir("/proc/self/task")}


def test_a_compute_pool_runs_lower_and_threads_it_starts_inherit_it() -> None:
    base = thread_nice()
    pool = compute_pool(1, "prd-test", 3)
    try:

        def start_one() -> tuple[int, int]:
            seen: list[int] = []
            child = threading.Thread(target=lambda: seen.append(thread_nice()))
            child.start()
            child.join()
            return thread_nice(), seen[0]

        assert pool.submit(start_one).result() == (base + 3, base + 3)
    finally:
        pool.shutdown()
    assert thread_nice() == base  # the caller's own priority is untouched


def test_nice_zero_leaves_threads_at_the_process_priority() -> None:
    pool = compute_pool(1, "prd-test", 0)
    try:
        assert pool.submit(thread_nice).result() == thread_nice()
    finally:
        pool.shutdown()


def test_onnx_runtime_threads_inherit_from_the_thread_that_opens_the_session(store: Path) -> None:
    bundle = load_bundle(store, "tiny", "latest")
    base, before = thread_nice(), set(_threads())
    pool = compute_pool(1, "prd-test", 4)
    try:
        opener = pool.submit(threading.get_native_id).result()
        session = pool.submit(lambda: GraphSession(bundle.onnx_path, options=session_options(3))).result()
        session.run(np.zeros((1, 32, 32, 3), np.uint8))
        started = {tid: nice for tid, nice in _threads().items() if tid not in before and tid != opener}
        assert len(started) == 2, started  # intra-op threads: 3, the caller's thread being one of them
        assert set(started.values()) == {base + 4}
    finally:
        pool.shutdown()
    del session


class _Recording:
    """An ``OnnxModel`` that notes the nice value of the thread each batch runs on."""

    def __init__(self, inner: OnnxModel, seen: dict[str, int]) -> None:
        self._inner, self._seen = inner, seen

    def predict(self, batch: np.ndarray) -> list[Any]:
        self._seen["inference"] = thread_nice()
        return self._inner.predict(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_the_service_runs_its_compute_threads_below_the_event_loop(store: Path) -> None:
    seen: dict[str, int] = {}

    def loader(bundle: Bundle, settings: Settings) -> OnnxModel:
        seen["load"] = thread_nice()
        return _Recording(open_model(bundle, settings), seen)  # type: ignore[return-value]

    async def scenario() -> None:
        async with serving(settings_for(store, compute_nice=5), loader=loader) as h:
            loop_nice = thread_nice()
            response = await h.score(("part.png", png(uniform(32, 32, 90))))
            assert response.status_code == 200, response.text
            decode_nice = h.state.pool.submit(thread_nice).result()
            assert (seen["load"], seen["inference"], decode_nice) == (loop_nice + 5,) * 3
            assert thread_nice() == loop_nice

    run(scenario())


def test_compute_nice_is_checked_before_any_work() -> None:
    with pytest.raises(ValueError, match="compute_nice"):
        Settings(compute_nice=20)
