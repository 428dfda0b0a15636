"""Raw ONNX Runtime throughput: the bundle's session on ready-made uint8 batches, no HTTP, no decoding."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.runtime import OnnxModel


@dataclass(frozen=True)
class RawCell:
    batch_size: int
    runs: int
    images_per_s: float
    ms_per_batch: float


def measure_raw(model: OnnxModel, batch_sizes: Sequence[int], seconds: float, max_runs: int = 100_000) -> list[RawCell]:
    """Images/s per batch size: one untimed run, then as many runs as fit in ``seconds`` (at least one)."""
    size = model.input_size
    rng = np.random.default_rng(0)
    cells = []
    for batch_size in batch_sizes:
        batch = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
        model.infer(batch)
        runs = 0
        start = time.perf_counter()
        while runs < max_runs and (runs == 0 or time.perf_counter() - start < seconds):
            model.infer(batch)
            runs += 1
        elapsed = time.perf_counter() - start
        cells.append(RawCell(batch_size, runs, runs * batch_size / elapsed, 1000.0 * elapsed / runs))
    return cells
