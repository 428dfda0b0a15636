"""The micro-batcher on its own, with a fake model: merging, window, bounds, cancellation, drain, failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service import batching
from service.batching import MicroBatcher
from service.errors import InferenceFailed, QueueFull, ShuttingDown
from service.metrics import ServiceMetrics
from tests.service.harness import PATIENCE_S, run, until


class FakeModel:
    """Returns each image's first pixel; can hold batches until released."""

    def __init__(self, hold: bool = False, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[bool] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    def predict(self, batch: np.ndarray, alone: bool = False) -> list[int]:
        self.batches.append([int(image[0, 0, 0]) for image in batch])
        self.alone.append(alone)
        self.release.wait(20)
        if self.fail:
            raise RuntimeError("boom")
        return [int(image[0, 0, 0]) for image in batch]


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


def batcher(
    max_batch_size: int = 4, window_s: float = 5.0, queue_limit: int = 16, workers: int = 1
) -> tuple[MicroBatcher, ServiceMetrics]:
    metrics = ServiceMetrics(CollectorRegistry())
    size, window, limit = max_batch_size, window_s, queue_limit
    b = MicroBatcher(max_batch_size=size, batch_window_s=window, queue_limit=limit, metrics=metrics, workers=workers)
    return b, metrics


def test_concurrent_requests_are_merged_into_full_batches_in_order() -> None:
    async def scenario() -> None:
        b, metrics = batcher(max_batch_size=4, window_s=5.0)
        b.start()
        model = FakeModel()
        results = await asyncio.gather(*(b.submit(model, [image(i), image(i + 100)]) for i in range(4)))
        assert results == [[i, i + 100] for i in range(4)]
        assert sorted(len(batch) for batch in model.batches) == [4, 4]  # full batches flushed without the 5 s window
        assert metrics.registry.get_sample_value("prd_batch_size_sum") == 8
        await b.stop(5)

    run(scenario())


def test_lonely_image_is_not_held_for_company_that_is_not_coming() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=32, window_s=3600.0)  # waiting out this window would hang the test
        b.start()
        model = FakeModel()
        assert await asyncio.wait_for(b.submit(model, [image(7)]), PATIENCE_S) == [7]
        assert model.batches == [[7]]
        await b.stop(5)

    run(scenario())


def test_batch_waits_for_announced_images_then_leaves_with_them() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=32, window_s=3600.0)
        b.start()
        model = FakeModel()
        arrival = b.announce(1)  # a request still uploading / decoding
        first = asyncio.ensure_future(b.submit(model, [image(1)]))
        await asyncio.sleep(0.05)
        assert model.batches == []  # held: an image is on its way and the window is open
        second = await asyncio.wait_for(b.submit(model, [image(2)], arrival), PATIENCE_S)
        assert await first == [1] and second == [2]
        assert model.batches == [[1, 2]]
        await b.stop(5)

    run(scenario())


def test_window_closes_early_when_an_announced_request_withdraws() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=32, window_s=3600.0)
        b.start()
        model = FakeModel()
        arrival = b.announce(3)
        first = asyncio.ensure_future(b.submit(model, [image(1)]))
        await asyncio.sleep(0.05)
        arrival.settle()  # e.g. all its files were bad
        arrival.settle()  # idempotent
        assert await asyncio.wait_for(first, PATIENCE_S) == [1]
        await b.stop(5)

    run(scenario())


def test_window_flushes_a_partial_batch_when_it_passes() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=32, window_s=0.02)
        b.start()
        model = FakeModel()
        b.announce(1)  # announced but never sent: only the window lets the batch go
        assert await asyncio.wait_for(b.submit(model, [image(7)]), PATIENCE_S) == [7]
        await b.stop(5)

    run(scenario())


def test_request_that_does_not_fit_is_refused_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=1, window_s=0.0, queue_limit=2)
        b.start()
        model = FakeModel(hold=True)
        first = asyncio.ensure_future(b.submit(model, [image(1)]))
        await until(lambda: model.batches == [[1]], "first batch running")
        queued = asyncio.ensure_future(b.submit(model, [image(2), image(3)]))
        await until(lambda: b.depth == 2, "queue filled")
        with pytest.raises(QueueFull) as refused:
            await b.submit(model, [image(4)])
        assert int(refused.value.headers["Retry-After"]) >= 1
        model.release.set()
        assert await first == [1] and await queued == [2, 3]
        await b.stop(5)

    run(scenario())


def test_reserved_work_counts_against_the_limit_and_a_second_pass_jumps_the_queue() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=1, window_s=0.0, queue_limit=3)
        b.start()
        model = FakeModel(hold=True)
        first = asyncio.ensure_future(b.submit(model, [image(1)]))
        await until(lambda: model.batches == [[1]], "first batch running")
        reservation = b.reserve(2)  # an admitted request's second pass, still to come
        waiting = asyncio.ensure_future(b.submit(model, [image(2)]))
        await until(lambda: b.depth == 1, "one queued")
        with pytest.raises(QueueFull):  # 1 queued + 2 reserved: no room, although only one image waits
            b.reserve(1)
        second_pass = asyncio.ensure_future(b.submit(model, [image(3), image(4)], None, reservation, front=True))
        await until(lambda: b.depth == 3, "second pass queued")
        assert b.load == 3 and reservation.units == 0
        model.release.set()
        assert await first == [1] and await second_pass == [3, 4] and await waiting == [2]
        assert model.batches == [[1], [3], [4], [2]]  # the admitted request's tiles before the newer image
        reservation.release()
        assert b.load == 0
        await b.stop(5)

    run(scenario())


def test_cancelled_request_is_skipped_before_inference() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=8, window_s=0.0)
        b.start()
        model = FakeModel(hold=True)
        running = asyncio.ensure_future(b.submit(model, [image(1)]))
        await until(lambda: model.batches == [[1]], "first batch running")
        gone = asyncio.ensure_future(b.submit(model, [image(2)]))
        kept = asyncio.ensure_future(b.submit(model, [image(3)]))
        await until(lambda: b.depth == 2, "both queued")
        gone.cancel()
        model.release.set()
        assert await running == [1] and await kept == [3]
        assert model.batches == [[1], [3]]
        await b.stop(5)

    run(scenario())


def test_stop_answers_queued_images_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=2, window_s=5.0)
        b.start()
        model = FakeModel(hold=True)
        pending = [asyncio.ensure_future(b.submit(model, [image(i)])) for i in range(5)]
        await until(lambda: len(model.batches) == 1, "first batch running")
        stopping = asyncio.ensure_future(b.stop(10))
        await until(lambda: not b.accepting, "stop begun")
        assert b.depth == 3
        with pytest.raises(ShuttingDown):
            await b.submit(model, [image(9)])
        model.release.set()
        assert [await p for p in pending] == [[i] for i in range(5)]
        await stopping

    run(scenario())


def test_stop_after_drain_timeout_fails_every_waiting_image_once() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=1, window_s=0.0)
        b.start()
        model = FakeModel(hold=True)
        pending = [asyncio.ensure_future(b.submit(model, [image(i)])) for i in range(3)]
        await until(lambda: len(model.batches) == 1, "first batch running")
        await b.stop(0.05)
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(outcome, ShuttingDown) for outcome in outcomes)
        model.release.set()

    run(scenario())


def test_inference_error_reaches_every_request_of_the_batch() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=4, window_s=0.05)
        b.start()
        model = FakeModel(fail=True)
        outcomes = await asyncio.gather(*(b.submit(model, [image(i)] * 2) for i in range(2)), return_exceptions=True)
        assert all(isinstance(outcome, InferenceFailed) for outcome in outcomes)
        assert await b.submit(FakeModel(), [image(5)]) == [5]  # the loop survives
        await b.stop(5)

    run(scenario())


def test_batches_never_mix_models() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=8, window_s=0.05)
        b.start()
        old, new = FakeModel(), FakeModel()
        results = await asyncio.gather(b.submit(old, [image(1)]), b.submit(new, [image(2)]), b.submit(old, [image(3)]))
        assert results == [[1], [2], [3]]
        assert new.batches == [[2]] and [v for batch in old.batches for v in batch] == [1, 3]
        await b.stop(5)

    run(scenario())


def test_two_workers_run_two_batches_at_once_and_the_next_waits_for_a_free_one() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=2, window_s=0.0, workers=2)
        b.start()
        model = FakeModel(hold=True)
        first = asyncio.ensure_future(b.submit(model, [image(1)]))
        await until(lambda: len(model.batches) == 1, "first batch running")
        second = asyncio.ensure_future(b.submit(model, [image(2)]))
        await until(lambda: len(model.batches) == 2, "second batch running beside the first")
        third = asyncio.ensure_future(b.submit(model, [image(3), image(4)]))
        await until(lambda: b.depth == 2, "third queued")
        assert len(model.batches) == 2  # both workers busy: it waits
        model.release.set()
        assert await first == [1] and await second == [2] and await third == [3, 4]
        assert model.batches[:2] == [[1], [2]] and sorted(v for batch in model.batches[2:] for v in batch) == [3, 4]
        await b.stop(5)

    run(scenario())


def test_waiting_images_are_shared_out_between_free_workers() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=8, window_s=0.0, workers=2)
        b.start()
        model = FakeModel(hold=True)
        pending = asyncio.ensure_future(b.submit(model, [image(i) for i in range(3)]))
        await until(lambda: len(model.batches) == 2, "both workers running")
        model.release.set()
        assert await pending == [0, 1, 2]
        assert model.batches == [[0, 1], [2]]  # one request's three inputs side by side, not three on one worker
        await b.stop(5)

    run(scenario())


def test_a_lone_image_with_every_worker_idle_runs_alone_and_holds_them_all() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=4, window_s=0.0, workers=2)
        b.start()
        model = FakeModel(hold=True)
        lone = asyncio.ensure_future(b.submit(model, [image(1)]))
        await until(lambda: len(model.batches) == 1, "lone image running")
        pair = asyncio.ensure_future(b.submit(model, [image(2), image(3)]))
        await until(lambda: b.depth == 2, "next request queued")
        assert len(model.batches) == 1  # the lone run holds both workers: nothing runs beside it
        model.release.set()
        assert await lone == [1] and await pair == [2, 3]
        assert model.batches == [[1], [2], [3]] and model.alone == [True, False, False]
        await b.stop(5)

    run(scenario())


def test_wait_estimate_is_the_time_per_input_with_every_worker_at_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock the model moves by one second per run: a lone run of one image is one second per input, two
    runs side by side (both measured over the same two seconds) are two seconds each, shared by two workers."""
    clock = [0.0]
    monkeypatch.setattr(batching.time, "perf_counter", lambda: clock[0])
    both_started, both_moved = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)

    class ClockModel:
        def predict(self, batch: np.ndarray, alone: bool = False) -> list[int]:
            if not alone:
                both_started.wait()
            clock[0] += 1.0
            if not alone:
                both_moved.wait()
            return [0] * len(batch)

    async def scenario() -> None:
        b, _ = batcher(max_batch_size=4, window_s=0.0, workers=2)
        b.start()
        await b.submit(ClockModel(), [image(1)])  # alone: 1 s for 1 input
        ahead = b.reserve(6)
        assert b.estimated_wait_s() == pytest.approx(6.0)
        ahead.release()
        await b.submit(ClockModel(), [image(1), image(2)])  # two runs of one image side by side, 2 s each
        assert b.estimated_wait_s(6) == pytest.approx(6 * (0.8 * 1.0 + 0.2 * 1.0))
        await b.stop(5)

    run(scenario())


def test_stop_waits_for_every_running_batch_or_fails_them_all_after_the_drain_timeout() -> None:
    async def scenario() -> None:
        b, _ = batcher(max_batch_size=1, window_s=0.0, workers=2)
        b.start()
        model = FakeModel(hold=True)
        running = [asyncio.ensure_future(b.submit(model, [image(i)])) for i in range(2)]
        await until(lambda: len(model.batches) == 2, "both running")
        stopping = asyncio.ensure_future(b.stop(10))
        await until(lambda: not b.accepting, "stop begun")
        model.release.set()
        assert [await r for r in running] == [[0], [1]]
        await stopping

        b, _ = batcher(max_batch_size=1, window_s=0.0, workers=2)
        b.start()
        model = FakeModel(hold=True)
        pending = [asyncio.ensure_future(b.submit(model, [image(i)])) for i in range(3)]
        await until(lambda: len(model.batches) == 2, "both running")
        await b.stop(0.05)
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(outcome, ShuttingDown) for outcome in outcomes)
        model.release.set()

    run(scenario())
