"""CPU priority of the compute threads, so the event loop that admits and refuses requests is never starved.

Inference and decoding can keep every core busy; the event loop needs a sliver of CPU, but needs it at once: a
refusal, a health probe or ``/metrics`` that waits behind a batch is the late refusal overload must not have. Linux
gives each thread its own nice value, inherited by the threads it starts, so the service's compute threads lower
theirs (``PRD_COMPUTE_NICE``) and the event loop, at the process's own, wins whenever it is runnable. Lowering is
always allowed (no privilege, also in a non-root container); ONNX Runtime's intra-op pool inherits the value from
the thread that opens the session, which is why sessions are opened on a thread made here too. Where per-thread
priorities do not exist (not Linux) or are refused, threads run at the process's priority and a warning says so.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger("service.priority")


def lower_this_thread(nice: int) -> None:
    """Add ``nice`` to the calling thread's nice value (0: leave it); never raises."""
    if nice <= 0:
        return
    if not sys.platform.startswith("linux"):
        logger.warning("PRD_COMPUTE_NICE=%d ignored: per-thread priorities need Linux", nice)
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
    except OSError as exc:
        logger.warning("cannot lower the priority of thread %s (%s); it runs at the process's", thread, exc)


def compute_pool(workers: int, name: str, nice: int) -> ThreadPoolExecutor:
    """A thread pool whose threads (and the threads they start, e.g. ONNX Runtime's) run ``nice`` lower."""
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=name, initializer=lower_this_thread, initargs=(nice,)
    )


def thread_nice(thread: int | None = None) -> int:
    """A thread's nice value (the caller's by default), Linux only: for tests and diagnostics."""
    return os.getpriority(os.PRIO_PROCESS, thread if thread is not None else threading.get_native_id())
