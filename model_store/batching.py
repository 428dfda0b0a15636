"""The batch policy every host of a bundle shares: most images per graph run, longest wait for company.

One place for the two defaults and for reading them: the service's settings (``PRD_MAX_BATCH_SIZE``,
``PRD_BATCH_WINDOW_MS``) and the Triton config written beside the bundles (``max_batch_size``,
``dynamic_batching.max_queue_delay_microseconds``) take the same values, so a bundle batches alike on either host.
``tests/export/test_triton_config.py`` holds ``service.config.Settings``' defaults equal to these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MAX_BATCH_SIZE = 16
"""Graph inputs in inference at once: Triton's ``max_batch_size`` per instance, the service's micro-batcher shared
between its inference workers (one on a GPU, two on CPU with 8 each: ``service.runtime.inference_plan``)."""
BATCH_WINDOW_MS = 5.0
"""Longest wait of the oldest image for company (Triton: ``max_queue_delay_microseconds`` = 1000 × this)."""
ENV_MAX_BATCH_SIZE = "PRD_MAX_BATCH_SIZE"
ENV_BATCH_WINDOW_MS = "PRD_BATCH_WINDOW_MS"


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = MAX_BATCH_SIZE
    batch_window_ms: float = BATCH_WINDOW_MS

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 1024:
            message = f"{ENV_MAX_BATCH_SIZE}: max batch size {self.max_batch_size} must be in [1, 1024]"
            raise ValueError(message)
        if not 0 <= self.batch_window_ms <= 10_000:
            message = f"{ENV_BATCH_WINDOW_MS}: batch window {self.batch_window_ms} ms must be in [0, 10000]"
            raise ValueError(message)

    @property
    def queue_delay_us(self) -> int:
        return round(self.batch_window_ms * 1000)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchPolicy:
        """The policy the service would run with in this environment (its ``PRD_*`` variables, else the defaults)."""
        environ = os.environ if environ is None else environ
        try:
            size = int(environ.get(ENV_MAX_BATCH_SIZE, MAX_BATCH_SIZE))
            window = float(environ.get(ENV_BATCH_WINDOW_MS, BATCH_WINDOW_MS))
        except ValueError as exc:
            message = f"{ENV_MAX_BATCH_SIZE} / {ENV_BATCH_WINDOW_MS}: not a number ({exc})"
            raise ValueError(message) from exc
        return cls(size, window)
