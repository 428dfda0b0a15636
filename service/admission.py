"""Admission: whether a ``POST /score`` request is taken, decided once, on its whole work, before anything is decoded.

A request's work is every graph input it may cost, second pass included (``Planner.max_inputs`` from each file's
header), and its pixels. ``Gate.admit`` reserves both — the inputs in the batcher (``MicroBatcher.reserve``, bounded
by the queue limit and the wait deadline), the pixels in the process-wide ``DecodeBudget`` — or refuses: 413 when
the request could never be taken, 503 + ``Retry-After`` when it cannot be taken now. An admitted request is never
refused later. ``Gate.announce`` gives the cheapest refusal of all, before the body is read, to a request the size
of recent ones when the service is already full.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_store.planner import Planner
from service.batching import Arrival, MicroBatcher, Reservation
from service.errors import QueueFull, TooManyFiles, TooManyPixels
from service.imaging import FileProblem, Header, Upload, read_headers


class DecodeBudget:
    """Pixels of all admitted requests not yet finished, process-wide: bounds the memory decoding can take."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def take(self, pixels: int) -> None:
        if self.in_use + pixels > self.limit:
            detail = (
                f"requests holding {self.in_use} pixels are being decoded (limit {self.limit}); this one adds "
                f"{pixels}. Retry after 1 s."
            )
            raise QueueFull(detail, headers={"Retry-After": "1"})
        self.in_use += pixels

    def give(self, pixels: int) -> None:
        self.in_use -= pixels


@dataclass
class Admission:
    """One admitted request: its files' headers, its reserved graph inputs and decode pixels, until ``release``."""

    headers: list[Header | FileProblem]
    reservation: Reservation
    pixels: int
    budget: DecodeBudget

    def release(self) -> None:
        """Idempotent: free what the request reserved."""
        self.reservation.release()
        self.budget.give(self.pixels)
        self.pixels = 0


class Gate:
    """The admission decisions of one service: its batcher's bounds and its pixel budgets."""

    def __init__(
        self,
        batcher: MicroBatcher,
        max_pixels: int,
        max_request_pixels: int | None = None,
        decode_budget: int | None = None,
    ) -> None:
        self._batcher = batcher
        self._max_pixels = max_pixels
        self._max_request_pixels = max_request_pixels
        self._decode = DecodeBudget(decode_budget if decode_budget is not None else 2**62)
        self._typical_inputs = 1.0

    def announce(self) -> Arrival:
        """Refuse at once (503) when a request the size of recent ones would not be admitted — before its body is
        even read, the cheapest refusal there is — else announce it to the batcher. The caller settles the
        ``Arrival`` when it is done (``try/finally``)."""
        self._batcher.check_room(max(1, round(self._typical_inputs)), estimated=True)
        return self._batcher.announce(1)

    def admit(self, planner: Planner, uploads: list[Upload], given: str | None) -> Admission:
        """Decide once, from the files' headers, on the request's whole work: refuse it (413 too large for any
        instance, 503 + Retry-After for now) or reserve every graph input it may submit, second pass included, and
        its pixels in the decode budget. Nothing is decoded yet. The caller releases the ``Admission``."""
        headers = read_headers(uploads, self._max_pixels)
        sizes = [h for h in headers if isinstance(h, Header)]
        pixels = sum(h.pixels for h in sizes)
        if self._max_request_pixels is not None and pixels > self._max_request_pixels:
            message = (
                f"these {len(sizes)} images hold {pixels} pixels together (from their headers), over the limit of "
                f"{self._max_request_pixels} per request; send fewer or smaller images per request"
            )
            raise TooManyPixels(message)
        units = sum(planner.max_inputs(h.height, h.width, given) for h in sizes)
        if units > self._batcher.queue_limit:  # would never fit: say so instead of "retry later"
            message = (
                f"these {len(sizes)} images make up to {units} graph inputs (tiles kept to their aspect ratio), "
                f"more than the inference queue holds ({self._batcher.queue_limit}); send fewer images per request"
            )
            raise TooManyFiles(message)
        reservation = self._batcher.reserve(units)
        self._typical_inputs = 0.8 * self._typical_inputs + 0.2 * units
        try:
            self._decode.take(pixels)
        except QueueFull:
            reservation.release()
            raise
        return Admission(headers, reservation, pixels, self._decode)
