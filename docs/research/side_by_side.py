"""PRD bundle vs the PatchCore reference (``../shared/tools/patchcore_anchor.py``), measured in one run, one table.

    python docs/research/side_by_side.py --data ../shared/data --bundle model_store/repository/prd/6 [--out DIR]

Scores the exported graph on ONNX Runtime (what the service runs) with ``training.evaluate`` and runs the reference
script as it is, on the same test images, then prints image and pixel AUROC per category for both. Protocol notes:
the reference resizes with PIL bilinear and computes pixel AUROC on every 4th pixel of its 256-px maps; ours uses
the bundle's resize rule and every pixel of the map. Both are per-category AUROCs of one multi-class model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from training.data import discover  # noqa: E402
from training.evaluate import evaluate_scorer, score_fn_from_onnx  # noqa: E402

DEFAULT_ANCHOR = Path(__file__).resolve().parents[3] / "shared" / "tools" / "patchcore_anchor.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder with model.onnx")
    parser.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR)
    parser.add_argument("--out", type=Path, default=Path("runs/side_by_side"))
    parser.add_argument(
        "--reuse-anchor",
        type=Path,
        default=None,
        help="anchor.json of an earlier run on the same data instead of rerunning the reference (it is seeded, so "
        "its figures do not change; saves its 5-20 minutes)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    score_fn = score_fn_from_onnx(args.bundle / "model.onnx")
    index = discover([args.data])
    ours = evaluate_scorer(
        score_fn,
        index,
        score_fn.size,
        args.out / "prd",
        model_categories=score_fn.categories,
        scoring=score_fn.scoring,
    )
    prd_seconds = time.monotonic() - started
    started = time.monotonic()
    anchor_json = args.out / "anchor.json"
    if args.reuse_anchor is None:
        subprocess.run([sys.executable, str(args.anchor), str(args.data), "--json", str(anchor_json)], check=True)
        anchor_note = f"reference (build bank + score): {time.monotonic() - started:.0f} s"
    else:
        anchor_json.write_text(args.reuse_anchor.read_text())
        anchor_note = f"reference figures reused from {args.reuse_anchor} (not rerun)"
    anchor = json.loads(anchor_json.read_text())

    rows = [
        "| category | PRD image AUROC | reference image AUROC | PRD pixel AUROC | reference pixel AUROC |",
        "|---|---|---|---|---|",
    ]
    for name in [*index.categories, "mean"]:
        a = ours["mean"] if name == "mean" else ours["categories"][name]
        b = anchor["mean"] if name == "mean" else anchor["categories"][name]
        marks = ["**" if a[k] > b[k] else "" for k in ("image_auroc", "pixel_auroc")]
        rows.append(
            f"| {name} | {marks[0]}{a['image_auroc']:.3f}{marks[0]} | {b['image_auroc']:.3f} | "
            f"{marks[1]}{a['pixel_auroc']:.3f}{marks[1]} | {b['pixel_auroc']:.3f} |"
        )
    rows.append(f"\nPRD scoring (ONNX Runtime, CPU): {prd_seconds:.0f} s; {anchor_note}. Bold: PRD ahead.")
    table = "\n".join(rows)
    (args.out / "side_by_side.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
