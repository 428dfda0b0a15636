"""Probe: how a trained run's student map and patch memory are best fused and scored (research, CPU).

    python docs/research/fusion_probe.py runs/demo [--alphas 1,2,3,4,6] [--data ../shared/data]

Takes the run's own two components (student map over ``rd_scale``, memory map over ``memory_scale``, both smoothed;
smoothing is linear, so mixing smoothed maps equals smoothing the mixed map) and prints mean and per-category image
/ pixel AUROC for the memory alone, the student map alone and ``rd + α · memory`` for each α, under each image-score
rule. Each test image of a tiled category is cut into the run's tiles (``config.scoring``) and each component
stitched back (``probe_maps.tiled_component_maps``); the image score is taken on the stitched map, where overlaps
are averaged (the graph takes the highest tile's score: the two agree except at an overlap's peak). Nothing is
retrained; the components are cached in RUN/component_maps_tiled.pt (a run that tiles nothing: RUN/component_maps.pt,
as before).
Measures the choice of ``memory_weight`` and ``score`` (``training/config.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from probe_maps import SCORE_RULES, TestTruth, tiled_component_maps  # noqa: E402

from training import data  # noqa: E402
from training.model import load_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--alphas", default="1,2,3,4,6")
    args = parser.parse_args()
    index = data.discover([Path(args.data)])
    model = load_run(args.run)
    tiled = sorted(model.config.scoring.tiling.categories)
    cache = args.run / ("component_maps_tiled.pt" if tiled else "component_maps.pt")
    if cache.is_file():
        saved = torch.load(cache)
    else:
        if model.anomaly_map.memory is None:
            raise SystemExit(f"{args.run}: trained without a patch memory; nothing to fuse")
        rd, memory = tiled_component_maps(model, index.test)
        assert memory is not None
        saved = {"rd": rd.half(), "memory": memory.half()}
        torch.save(saved, cache)
    rd, memory = saved["rd"].float(), saved["memory"].float()
    truth = TestTruth.of(index, rd.shape[-1])
    candidates = [("rd", rd), ("memory", memory)]
    candidates += [(f"rd + {a:g}·memory", rd + a * memory) for a in (float(a) for a in args.alphas.split(","))]
    for name, anomaly_map in candidates:
        for rule in SCORE_RULES:
            print(truth.line(name, anomaly_map, rule), flush=True)


if __name__ == "__main__":
    main()
