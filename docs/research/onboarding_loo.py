"""What adding a category costs against training with it: leave one category out, add it back, compare.

For each category C of the data: fit on the others, ``add-category`` C, evaluate C; once: fit on all, evaluate
each. Same seed, epochs and settings everywhere (pass the same ``--fit-args`` to both arms). Prints one table:
image / pixel AUROC and AUPRO of C added against C trained with, and the wall time of adding against fitting::

    python docs/research/onboarding_loo.py --data ../shared/data --out runs/loo \\
        --fit-args "--epochs 1 --image-size 128 --memory-entries 1024"

A folder that already holds a finished step (``checkpoint.pt`` / ``metrics.json``) is reused, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("image_auroc", "pixel_auroc", "aupro")


def _training(*args: str) -> float:
    """``python -m training ARGS``; its wall time in seconds."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "training", *args], check=True)
    return time.monotonic() - started


def _once(done: Path, *args: str) -> float | None:
    """Run the step unless ``done`` exists; its time, or None when reused."""
    return None if done.exists() else _training(*args)


def _metrics(report: Path, category: str) -> dict[str, float]:
    metrics = json.loads((report / "metrics.json").read_text())
    return {key: metrics["categories"][category][key] for key in KEYS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="MVTec-layout root with every category")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, reports and table")
    parser.add_argument("--fit-args", default="", help="extra options for every fit, e.g. '--epochs 1'")
    args = parser.parse_args(argv)
    categories = sorted(p.name for p in args.data.iterdir() if (p / "train" / "good").is_dir())
    fit_args = shlex.split(args.fit_args)
    data = ["--data", str(args.data)]
    out = args.out
    full = out / "all"
    times = {"all": _once(full / "checkpoint.pt", "fit", *data, "--out", str(full), *fit_args)}
    _once(full / "eval" / "metrics.json", "evaluate", str(full), "--report", str(full / "eval"))
    rows = []
    for category in categories:
        others = ",".join(c for c in categories if c != category)
        without, added = out / f"without_{category}", out / f"added_{category}"
        fit = ["fit", *data, "--out", str(without), "--categories", others, *fit_args]
        times[f"without_{category}"] = _once(without / "checkpoint.pt", *fit)
        add = ["add-category", str(without), *data, "--category", category, "--out", str(added)]
        _once(added / "checkpoint.pt", *add)
        seconds = json.loads((added / "onboarding.json").read_text())["seconds"]
        report = added / "eval"
        _once(report / "metrics.json", "evaluate", str(added), "--categories", category, "--report", str(report))
        rows.append((category, _metrics(report, category), _metrics(full / "eval", category), seconds))
    lines = [
        f"leave-one-out: {out} (fit options: {args.fit_args or 'defaults'})",
        "| category | added: image / pixel / AUPRO | trained with: image / pixel / AUPRO | difference | add s |",
        "|---|---|---|---|---|",
    ]
    for category, mine, theirs, seconds in rows:
        diff = " / ".join(f"{mine[k] - theirs[k]:+.3f}" for k in KEYS)
        cells = [" / ".join(f"{m[k]:.3f}" for k in KEYS) for m in (mine, theirs)]
        lines.append(f"| {category} | {cells[0]} | {cells[1]} | {diff} | {seconds:.0f} |")
    fits = {k: v for k, v in times.items() if v is not None}
    lines.append(f"fit wall times this run (s): {json.dumps({k: round(v) for k, v in fits.items()})}")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
