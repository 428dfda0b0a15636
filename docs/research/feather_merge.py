"""Tile maps averaged (``max-mean-squashed/1``) against crossfaded (``max-feather-squashed/1``): metrics and seams.

    python docs/research/feather_merge.py --data ../shared/data --bundle model_store/repository/prd/6 \
        --categories kolektor tire [--out runs/feather_merge]

Runs the bundle's graph once per input (outputs cached by the input's bytes) and evaluates its test images with
``training.evaluate.evaluate_scorer`` under the bundle's rule and under the same rule with the feathered merge,
printing image AUROC, pixel AUROC and AUPRO side by side (the score is the same under both: only maps move). Then
the seam figure, on every test image cut into more than one tile: the median absolute jump between adjacent rows
(columns for wide images) of the stitched canvas map at the overlap's edges (where a tile starts or ends inside the
canvas) and elsewhere, relative to the image's map range; a seam shows as a ratio well above 1.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from model_store.outputs import GraphOutputs  # noqa: E402
from model_store.planner import FEATHER_MERGE, Planner  # noqa: E402
from model_store.preprocess import decode_rgb8  # noqa: E402
from training.data import discover  # noqa: E402
from training.evaluate import METRIC_KEYS, evaluate_scorer, score_fn_from_onnx  # noqa: E402


class CachedScoreFn:
    """The graph, run once per distinct input: both merges (and the seam pass) see the same outputs."""

    def __init__(self, inner) -> None:
        self.inner, self.cache, self.runs = inner, {}, 0

    def __call__(self, images: np.ndarray):
        keys = [hashlib.sha1(image.tobytes()).hexdigest() for image in images]
        todo = [i for i, key in enumerate(keys) if key not in self.cache]
        if todo:
            self.runs += len(todo)
            score, maps, similarity = self.inner(images[todo])
            for row, i in enumerate(todo):
                self.cache[keys[i]] = (score[row], maps[row], similarity[row])
        rows = [self.cache[key] for key in keys]
        return tuple(np.stack([row[k] for row in rows]) for k in range(3))


def seam_jumps(canvas: np.ndarray, layout) -> tuple[np.ndarray, np.ndarray]:
    """Per-step jumps along the long side at the overlap edges and elsewhere, relative to the map's range."""
    along_rows = layout.height > layout.width
    profile = canvas if along_rows else canvas.T
    jumps = np.abs(np.diff(profile, axis=0)).mean(axis=1) / max(float(np.ptp(canvas)), 1e-12)
    starts = [top if along_rows else left for top, left in layout.origins]
    length, size = profile.shape[0], layout.size
    edges = {s - 1 for s in starts if s > 0} | {s + size - 1 for s in starts if s + size < length}
    at_edge = np.zeros(jumps.size, bool)
    at_edge[[e for e in edges if 0 <= e < jumps.size]] = True
    return jumps[at_edge], jumps[~at_edge]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--categories", nargs="+", default=["kolektor", "tire"])
    parser.add_argument("--out", type=Path, default=Path("runs/feather_merge"))
    args = parser.parse_args()
    started = time.monotonic()
    inner = score_fn_from_onnx(args.bundle / "model.onnx")
    score_fn = CachedScoreFn(inner)
    index = discover([args.data], args.categories)
    rules = {"mean": inner.scoring, "feather": inner.scoring.with_merge(FEATHER_MERGE)}
    metrics = {}
    for label, rule in rules.items():
        metrics[label] = evaluate_scorer(
            score_fn, index, inner.size, args.out / label, progress=False,
            model_categories=inner.categories, scoring=rule,
        )  # fmt: skip
    print(f"bundle {args.bundle}; merges: {rules['mean'].merge.scheme} vs {rules['feather'].merge.scheme}")
    print(f"{'category':<14}" + "".join(f"{key + ' mean/feather':>30}" for key in METRIC_KEYS[:3]))
    for category in args.categories:
        cells = []
        for key in METRIC_KEYS[:3]:
            a, b = (metrics[label]["categories"][category][key] for label in rules)
            cells.append(f"{a:>14.4f} / {b:<13.4f}" if a is not None and b is not None else f"{'n/a':>30}")
        print(f"{category:<14}" + "".join(cells))
    print("\nseams: median jump between adjacent rows of the canvas map / the map's range, multi-tile test images")
    print(f"{'category':<14}{'images':>7}{'merge':>9}{'at tile edges':>15}{'elsewhere':>12}{'ratio':>8}")
    for category in args.categories:
        samples = index.samples("test", category)
        for label, rule in rules.items():
            planner, edge, rest, n = Planner(rule, inner.categories), [], [], 0
            for sample in samples:
                rgb = decode_rgb8(sample.path.read_bytes())
                layout = rule.layout(rgb.shape[0], rgb.shape[1], category)
                if layout.count < 2:
                    continue
                score, maps, similarity = score_fn(planner.first_pass(rgb, category)[0])
                merged = planner.merge(GraphOutputs.from_arrays(score, maps, similarity), layout, category)
                at, off = seam_jumps(merged.anomaly_map, layout)
                edge.append(np.median(at))
                rest.append(np.median(off))
                n += 1
            if n:
                e, r = float(np.median(edge)), float(np.median(rest))
                print(f"{category:<14}{n:>7}{label:>9}{e:>15.5f}{r:>12.5f}{e / r:>8.2f}")
    print(f"\ngraph runs: {score_fn.runs} inputs; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
