"""The micro-batcher: images of concurrent requests become one ONNX Runtime run.

Knobs (BentoML's names): batch size (``max_batch_size``) and batch window (``batch_window_s``, the longest the
oldest waiting image waits for company — Triton's ``max_queue_delay``). A batch is flushed when it is full, when
its window has passed, or when no other image is on its way (requests announce their images with ``announce``
while their upload is read and decoded), whichever comes first: a lone request is not held for company that is not
coming. Batches run in ``workers`` inference threads, off the event loop; while they are all busy, new images queue
up and leave together as soon as one returns, so under load batches fill by themselves. When several workers are
free, the waiting images are shared out between them (a lone request's tiles run side by side); a lone image with
every worker idle runs ``alone`` (it holds every worker, and the model may give it every core).

Guarantees: admission is decided once per request on its whole work (``reserve``: every graph input it may
submit, second pass included), against two bounds: ``queue_limit`` inputs queued or reserved, and
``max_queue_wait_s`` of estimated wait (inputs ahead × the recent inference time per input). A request that does not
fit is refused at once with ``QueueFull``, never parked; an admitted one is never refused half way. Every image
gets exactly one result or one exception; an image whose request was
cancelled (client gone) before its batch was formed is skipped, never run; a batch only holds images prepared for
the same model object, so a hot reload never mixes sizes and in-flight requests finish on the model they started
with; ``stop`` refuses new work and answers what is queued (or fails it, after the drain timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import InferenceFailed, QueueFull, ShuttingDown
from service.metrics import ServiceMetrics

logger = logging.getLogger("service.batching")


class Predictor(Protocol):
    def predict(self, batch: np.ndarray, alone: bool = False) -> Sequence[Any]:
        """One run; ``alone``: no other run is in progress or starts before it returns."""
        ...


@dataclass(eq=False)
class _Item:
    model: Predictor
    image: np.ndarray
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


class Arrival:
    """Images one request has announced but not queued yet (upload being read or decoded)."""

    def __init__(self, batcher: MicroBatcher, n_images: int) -> None:
        self._batcher = batcher
        self._count = 0
        self.expect(n_images)

    def expect(self, n_images: int) -> None:
        """Correct the announcement once the number of files is known."""
        self._batcher._on_way += n_images - self._count
        self._count = n_images

    def settle(self) -> None:
        """The images are queued, or will never be (bad files, errors): stop waiting for them. Idempotent."""
        if self._count:
            self._batcher._on_way -= self._count
            self._count = 0
            self._batcher._wakeup.set()


class Reservation:
    """Graph inputs one admitted request may still submit; counted against the queue's bounds until used or released."""

    def __init__(self, batcher: MicroBatcher, units: int) -> None:
        self._batcher = batcher
        self.units = units
        batcher._reserved += units

    def use(self, n_inputs: int) -> None:
        """``n_inputs`` are being queued now: they count as queued instead of reserved."""
        used = min(n_inputs, self.units)
        self.units -= used
        self._batcher._reserved -= used

    def release(self) -> None:
        """The request is done (or will submit nothing more): free what it did not use. Idempotent."""
        self._batcher._reserved -= self.units
        self.units = 0


class MicroBatcher:
    """Bounded queue + one batching loop + ``workers`` inference threads (one batch each at a time)."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        batch_window_s: float,
        queue_limit: int,
        metrics: ServiceMetrics,
        max_queue_wait_s: float | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.max_batch_size = max_batch_size
        self.workers = workers
        self.max_queue_wait_s = max_queue_wait_s
        self.batch_window_s = batch_window_s
        self.queue_limit = queue_limit
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prd-inference")
        self._task: asyncio.Task[None] | None = None
        self._runs: dict[asyncio.Task[None], int] = {}  # running batches and the workers each holds
        self._stopping = False
        self._seconds_per_image = 0.0  # recent inference time per graph input, every worker at work
        self._on_way = 0
        self._reserved = 0
        self._running = 0

    @property
    def depth(self) -> int:
        """Images waiting (including cancelled ones not yet skipped)."""
        return len(self._queue)

    @property
    def load(self) -> int:
        """Graph inputs queued or reserved by admitted requests (what ``queue_limit`` bounds)."""
        return len(self._queue) + self._reserved

    @property
    def accepting(self) -> bool:
        """False once ``stop`` has begun."""
        return not self._stopping

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="prd-batcher")

    def check_room(self, n_images: int, estimated: bool = False) -> None:
        """Raise ``QueueFull``/``ShuttingDown`` now if ``n_images`` could not be queued (``estimated``: a guess at
        a request's size before its files are read, for the cheap early refusal)."""
        if self._stopping:
            raise ShuttingDown("the service is shutting down and takes no new images; retry on another instance")
        ahead = self.load
        if ahead + n_images > self.queue_limit:
            reason = f"{ahead} graph inputs are queued or reserved (limit {self.queue_limit})"
        elif self.max_queue_wait_s is not None and self.estimated_wait_s(n_images) > self.max_queue_wait_s:
            wait = self.estimated_wait_s(n_images)
            reason = f"its inputs would wait about {wait:.1f} s for inference (limit {self.max_queue_wait_s:g} s)"
        else:
            return
        seconds = self.retry_after_s()
        needs = (
            f"a request like the recent ones needs about {n_images}" if estimated else f"this request needs {n_images}"
        )
        detail = f"the service is at capacity: {reason}; {needs}. Retry after {seconds} s."
        raise QueueFull(detail, headers={"Retry-After": str(seconds)})

    def estimated_wait_s(self, n_inputs: int = 0) -> float:
        """Seconds until the work queued, reserved and running and ``n_inputs`` more are through inference, at the
        recent time per input with every worker at work (0 before any batch has run)."""
        return (self.load + self._running + n_inputs) * self._seconds_per_image

    def retry_after_s(self) -> int:
        """Whole seconds until the current work is likely processed (at least 1)."""
        return max(1, math.ceil(self.estimated_wait_s()))

    def reserve(self, n_inputs: int) -> Reservation:
        """Admit a request's whole work now or refuse it (``QueueFull``/``ShuttingDown``); release when done."""
        self.check_room(n_inputs)
        return Reservation(self, n_inputs)

    def announce(self, n_images: int = 1) -> Arrival:
        """Tell the batcher images are coming, so a waiting batch holds its window for them."""
        return Arrival(self, n_images)

    async def submit(
        self,
        model: Predictor,
        images: Sequence[np.ndarray],
        arrival: Arrival | None = None,
        reservation: Reservation | None = None,
        front: bool = False,
    ) -> list[Any]:
        """Queue all images of one request (all or none) and wait for their predictions, in order.

        Inputs covered by ``reservation`` were admitted already and are queued even while draining (an admitted
        request is finished); others are checked against the bounds now. ``front`` queues them ahead of every
        waiting image: a request's second pass finishes work already under way instead of waiting out the queue a
        second time, so an admitted request waits for the queue once.
        """
        covered = reservation.units if reservation is not None else 0
        if len(images) > covered:
            self.check_room(len(images) - covered)
        if self._task is None or self._task.done():
            raise ShuttingDown("the service shut down before these images were scored; retry")
        if reservation is not None:
            reservation.use(len(images))
        loop = asyncio.get_running_loop()
        items = [_Item(model, image, loop.create_future()) for image in images]
        if front:
            self._queue.extendleft(reversed(items))
        else:
            self._queue.extend(items)
        if arrival is not None:
            arrival.settle()
        self._metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            outcomes = await asyncio.gather(*(item.future for item in items), return_exceptions=True)
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)

    async def _loop(self) -> None:
        """Form a batch whenever a worker is free; on the way out, let the batches running finish (or, cancelled
        by the drain timeout, fail them)."""
        try:
            while True:
                await self._until_worker_free()
                collected = await self._collect()
                if collected is None:
                    break
                if collected[0]:
                    self._dispatch(*collected)
            while self._runs:
                await asyncio.wait(set(self._runs))
        except asyncio.CancelledError:
            for run in self._runs:
                run.cancel()
            await asyncio.gather(*self._runs, return_exceptions=True)
            raise

    @property
    def _free(self) -> int:
        return self.workers - sum(self._runs.values())

    async def _until_worker_free(self) -> None:
        while self._free <= 0:
            self._wakeup.clear()
            await self._wakeup.wait()

    def _dispatch(self, batch: list[_Item], alone: bool) -> None:
        run = asyncio.get_running_loop().create_task(self._run(batch, alone), name="prd-batch")
        self._runs[run] = self.workers if alone else 1
        run.add_done_callback(self._run_done)

    def _run_done(self, run: asyncio.Task[None]) -> None:
        self._runs.pop(run, None)
        self._wakeup.set()

    async def _collect(self) -> tuple[list[_Item], bool] | None:
        """Wait for a full batch, the oldest image's window or an empty road, then take this worker's share of the
        waiting images, and whether it runs alone (one image, every worker idle); ``None`` once stopping and
        empty."""
        while not self._queue:
            if self._stopping:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        head = self._queue[0]
        deadline = head.enqueued + self.batch_window_s
        while not self._stopping and self._on_way > 0 and self._ready(head.model) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        free = self._free
        ready = self._ready(head.model, self.max_batch_size * free)
        alone = self.workers > 1 and free == self.workers and ready == 1
        return self._take(head.model, max(1, min(self.max_batch_size, math.ceil(ready / free)))), alone

    def _ready(self, model: Predictor, up_to: int | None = None) -> int:
        """Live images for ``model`` at the head of the queue, counted up to ``up_to`` (default the batch size)."""
        limit = self.max_batch_size if up_to is None else up_to
        count = 0
        for item in self._queue:
            if item.model is not model or count >= limit:
                break
            count += 0 if item.future.done() else 1
        return count

    def _take(self, model: Predictor, size: int) -> list[_Item]:
        batch: list[_Item] = []
        while self._queue and len(batch) < size and self._queue[0].model is model:
            item = self._queue.popleft()
            if not item.future.done():  # cancelled: the client is gone, do not spend inference on it
                batch.append(item)
        self._metrics.queue_depth.set(len(self._queue))
        return batch

    async def _run(self, batch: list[_Item], alone: bool) -> None:
        now = time.perf_counter()
        for item in batch:
            self._metrics.queue_wait.observe(now - item.enqueued)
        self._metrics.batch_size.observe(len(batch))
        model = batch[0].model
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        self._running += len(batch)
        try:
            stacked = np.stack([item.image for item in batch])
            predictions = await loop.run_in_executor(self._executor, model.predict, stacked, alone)
            if len(predictions) != len(batch):
                raise RuntimeError(f"model returned {len(predictions)} predictions for {len(batch)} images")
        except asyncio.CancelledError:  # drain timeout: nobody will deliver this batch's results
            _fail(batch, ShuttingDown("the service shut down while this image was being scored; retry"))
            raise
        except Exception as exc:
            logger.exception("inference failed for a batch of %d", len(batch))
            _fail(batch, InferenceFailed(f"inference failed for a batch of {len(batch)} images: {exc}"))
            return
        finally:
            self._running -= len(batch)
        elapsed = time.perf_counter() - start
        self._metrics.inference.observe(elapsed)
        per_input = elapsed / len(batch) / (1 if alone else self.workers)  # with every worker at work
        recent = self._seconds_per_image
        self._seconds_per_image = per_input if recent == 0 else 0.8 * recent + 0.2 * per_input
        for item, prediction in zip(batch, predictions, strict=True):
            if not item.future.done():
                item.future.set_result(prediction)

    async def stop(self, timeout_s: float) -> None:
        """Refuse new images, answer the queued ones within ``timeout_s``, fail the rest with ``ShuttingDown``."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                logger.error("drain timeout (%.1f s): failing %d queued images", timeout_s, len(self._queue))
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task  # the batch in flight is failed with ShuttingDown on the way out
        _fail(list(self._queue), ShuttingDown("the service shut down before this image was scored; retry"))
        self._queue.clear()
        self._metrics.queue_depth.set(0)
        self._executor.shutdown(wait=False)


def _fail(items: list[_Item], error: Exception) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
