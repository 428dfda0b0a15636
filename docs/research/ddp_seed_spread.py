"""Probe: do two processes (torchrun, DDP) train as well as one? k seeds each way, at the same global batch.

    python docs/research/ddp_seed_spread.py [--seeds 3] [--processes 2] [--epochs 3] [--data ROOT] [--out DIR]
        [-- extra fit options]

For each seed: ``python -m training fit`` on one process and ``torchrun --nproc-per-node N -m training fit`` with
the same options (``--batch-size`` is the global batch either way), then ``python -m training evaluate`` on the test
split. Prints mean ± standard deviation and range of image AUROC, pixel AUROC and AUPRO for each way: the two agree
when each mean lies within the other's spread over seeds. Without ``--data`` it trains on generated images
(``training synth``, 64 px) with tiny model sizes, which runs in a few minutes on 2 CPU cores; the figures on
generated data show that the distributed path learns as the single one does, not what a real line reaches.

Two processes are not bit-equal to one at the same seed: the hard-mining quantile is taken over each rank's share
of a batch, and the prototype bank is seeded and re-seeded from rank 0's share (``training/engine.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = "--image-size 64 --embed-dim 32 --prototypes 16 --decoder-width 32 --batch-size 8 --memory-entries 256"
METRICS = ("image_auroc", "pixel_auroc", "aupro")


def _run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")


def train_and_evaluate(launcher: list[str], data: Path, out: Path, seed: int, fit_args: list[str]) -> dict:
    _run([*launcher, "-m", "training", "fit", "--data", str(data), "--out", str(out), "--seed", str(seed), *fit_args])
    _run([sys.executable, "-m", "training", "evaluate", str(out), "--report", str(out / "eval")])
    return json.loads((out / "eval" / "metrics.json").read_text())["mean"]


def summary(name: str, rows: list[dict]) -> str:
    parts = []
    for metric in METRICS:
        values = [row[metric] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        parts.append(f"{metric} {statistics.mean(values):.3f} ± {spread:.3f} [{min(values):.3f}, {max(values):.3f}]")
    return f"{name:<16} " + "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: generated, tiny model)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ddp_seed_spread")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    data = args.data
    fit_args = ["--epochs", str(args.epochs), "--device", "cpu", *extra]
    if data is None:
        data = args.out / "data"
        if not data.exists():
            _run([sys.executable, "-m", "training", "synth", str(data), "--size", "64"])
        fit_args = [*TINY.split(), *fit_args]
    one = [sys.executable]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}"]
    results: dict[str, list[dict]] = {"1 process": [], f"{args.processes} processes": []}
    started = time.monotonic()
    for seed in range(args.seeds):
        for (name, rows), launcher in zip(results.items(), (one, many), strict=True):
            rows.append(train_and_evaluate(launcher, data, args.out / f"{name[0]}p_seed{seed}", seed, fit_args))
            print(f"seed {seed} {name}: " + ", ".join(f"{m} {rows[-1][m]:.3f}" for m in METRICS), flush=True)
    print(f"\n{args.seeds} seeds, fit {' '.join(fit_args)} ({time.monotonic() - started:.0f} s)")
    for name, rows in results.items():
        print(summary(name, rows))


if __name__ == "__main__":
    main()
