"""One wide ONNX Runtime run against two half-width ones, with and without something else taking CPU beside them.

    python docs/research/inference_workers.py --bundle model_store/repository/prd/7 [--seconds 8]

Raw graph throughput (graph inputs per second, ready uint8 batches, no HTTP) of each layout, the layouts alternated
within each competitor setting so a shared machine's drift hits all alike:

- ``1 x N``: one session with every usable core as intra-op threads, batch ``--batch`` (the service's old layout);
- ``2 x N/2``: two sessions with half the cores each, run from two threads at once, batch ``--batch`` / 2 each
  (the service's CPU default since issue 16);

each alone, then beside a competitor process that spins for ``busy`` ms and sleeps ``idle`` ms in a loop (the shape
of an HTTP layer's bursts: uploads, decoding, answers). The competitor's own share is not counted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from model_store.bundle import load_bundle  # noqa: E402
from model_store.session import GraphSession, session_options  # noqa: E402
from service.runtime import usable_cores  # noqa: E402


def _compete(stop: multiprocessing.synchronize.Event, busy_ms: float, idle_ms: float) -> None:
    while not stop.is_set():
        until = time.perf_counter() + busy_ms / 1000
        while time.perf_counter() < until:
            pass
        time.sleep(idle_ms / 1000)


def throughput(path: Path, workers: int, threads: int, batch: int, seconds: float) -> float:
    """Graph inputs per second with ``workers`` sessions of ``threads`` threads each, run side by side."""
    sessions = [GraphSession(path, options=session_options(threads)) for _ in range(workers)]
    side = sessions[0].input_size
    images = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    for session in sessions:
        session.run(images)
    runs = [0] * workers
    end = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < end:
            sessions[i].run(images)
            runs[i] += 1

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(runs) * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle folder (its model.onnx is timed)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=16, help="the wide run's batch; each half-width run takes half")
    parser.add_argument("--competitors", default="none,2/6,1/3", help="busy/idle ms of the competing process")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle.parent.parent, args.bundle.parent.name, args.bundle.name)
    cores = usable_cores()
    layouts = [(1, cores, args.batch), (2, max(1, cores // 2), max(1, args.batch // 2))]
    print(f"{bundle.manifest.name} v{bundle.manifest.version}: graph inputs/s, {cores} usable cores", flush=True)
    for competitor in args.competitors.split(","):
        stop = multiprocessing.Event()
        process = None
        if competitor != "none":
            busy, idle = (float(part) for part in competitor.split("/"))
            process = multiprocessing.Process(target=_compete, args=(stop, busy, idle), daemon=True)
            process.start()
        cells = []
        for workers, threads, batch in layouts:
            rate = throughput(bundle.onnx_path, workers, threads, batch, args.seconds)
            cells.append(f"{workers} x {threads} threads (batch {batch}) {rate:.1f}")
        stop.set()
        if process is not None:
            process.join()
        beside = "alone" if competitor == "none" else f"beside a process busy {competitor} ms"
        print(f"  {beside}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
