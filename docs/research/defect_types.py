"""Probe: where one category's pixel AUROC is lost, defect type by defect type, and what the patch memory can recover
(research, CPU).

    python docs/research/defect_types.py runs/demo [--category magnetic_tile] [--entries 4096,16384]
        [--pools 3,5] [--sigmas 4,8] [--data ../shared/data]

Part 1, the run's own maps (the student map, the memory map, and the fused map ``rd + α · memory`` with the run's
α), on the category's test images as the run scores them (``probe_maps.tiled_component_maps``; read from the
cache ``fusion_probe`` writes when present): pixel AUROC over the whole category, then per defect type (that type's
images plus the good ones), each type's share of the category's defect pixels, and the median *within-image* AUROC
(defect against normal pixels of one image): a map that cannot order one image's own pixels cannot localise that
defect, however it is scaled.

Part 2, patch-memory variants built for this category alone from the run's teacher on squashed images (the run's
training split; scale: mean over its held-out normals, as ``engine.calibrate_map_scales``): entries by greedy
coreset (``--entries``), local averaging of the teacher maps (``--pools``: 3 is the model's), smoothing σ
(``--sigmas``; the student map is smoothed to the same σ for the fused row — Gaussians compose). Nothing is retrained.
Categories the run tiles are refused in part 2 (their memories are built on tiles).
Measured the limits of the magnetic-tile pixel AUROC (``docs/research/README.md``); output of the default bundle's run
in ``docs/research/results/defect_types_prd6_cpu.txt``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from probe_maps import tiled_component_maps  # noqa: E402

from training import data  # noqa: E402
from training.anomaly_map import GaussianBlur  # noqa: E402
from training.engine import cache_teacher_features, held_out_samples, training_samples  # noqa: E402
from training.memory import PatchMemory, greedy_coreset, patch_descriptors, training_patches  # noqa: E402
from training.model import load_run  # noqa: E402


class DefectTruth:
    """The category's test masks (every 4th pixel of the S × S grid) and each image's defect type."""

    def __init__(self, samples: list[data.Sample], size: int) -> None:
        self.masks = np.stack([data.load_mask(s, size) for s in samples])[:, ::4, ::4] > 0
        self.types = np.array([s.defect_type for s in samples])
        self.labels = np.array([s.label for s in samples])
        self.defects = sorted(set(self.types) - {"good"})

    def shares(self) -> str:
        total = self.masks.sum()
        return " ".join(f"{t}:{self.masks[self.types == t].sum() / total:.0%}" for t in self.defects)

    def line(self, name: str, maps: torch.Tensor) -> str:
        pixels = maps[:, ::4, ::4].numpy()
        image = roc_auc_score(self.labels, maps.flatten(1).max(1).values.numpy())
        parts = [f"image {image:.3f} pixel {roc_auc_score(self.masks.ravel(), pixels.ravel()):.3f} |"]
        for defect in self.defects:
            chosen = (self.types == defect) | (self.types == "good")
            pooled = roc_auc_score(self.masks[chosen].ravel(), pixels[chosen].ravel())
            within = [
                roc_auc_score(self.masks[i].ravel(), pixels[i].ravel())
                for i in np.flatnonzero(self.types == defect)
                if 0 < self.masks[i].mean() < 1
            ]
            parts.append(f"{defect} {pooled:.3f} (within {np.median(within):.2f})")
        return f"{name:34s} " + " ".join(parts)


def blur_to(maps: torch.Tensor, sigma: float, base_sigma: float) -> torch.Tensor:
    """(N, S, S) maps smoothed at ``base_sigma`` brought to ``sigma`` (a second Gaussian of the difference)."""
    if sigma <= base_sigma:
        return maps
    blur = GaussianBlur(math.sqrt(sigma**2 - base_sigma**2))
    return torch.cat([blur(maps[i : i + 64, None])[:, 0] for i in range(0, len(maps), 64)])


@torch.no_grad()
def distance_maps(memory: PatchMemory, features: list[torch.Tensor], pool: int, size: int) -> torch.Tensor:
    """(N, 1, S, S) unsmoothed nearest-entry distances of descriptors averaged over ``pool`` × ``pool``."""
    out = []
    for i in range(0, len(features[0]), 16):
        query = patch_descriptors([f[i : i + 16].float() for f in features], pool)
        n, _, h, w = query.shape
        distances = memory.nearest_distances(query.flatten(2).transpose(1, 2)).reshape(n, 1, h, w)
        out.append(F.interpolate(distances, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(out)


def smoothed(maps: torch.Tensor, blur: GaussianBlur) -> torch.Tensor:
    """(N, 1, S, S) → (N, S, S) smoothed, 64 maps at a time."""
    return torch.cat([blur(maps[i : i + 64])[:, 0] for i in range(0, len(maps), 64)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="trained run with a patch memory")
    parser.add_argument("--category", default="magnetic_tile")
    parser.add_argument("--entries", default="4096,16384")
    parser.add_argument("--pools", default="3,5")
    parser.add_argument("--sigmas", default="4,8")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    started = time.monotonic()
    model = load_run(args.run)
    fusion = model.anomaly_map
    if fusion.memory is None:
        raise SystemExit(f"{args.run}: trained without a patch memory; nothing to break down")
    index = data.discover([Path(args.data)])
    if args.category not in index.categories:
        raise SystemExit(f"--category {args.category!r}: not among {index.categories}")
    size, alpha, sigma = model.input_size, fusion.memory_weight, model.config.map_sigma
    chosen = [i for i, s in enumerate(index.test) if s.category == args.category]
    samples = [index.test[i] for i in chosen]
    tiled = bool(model.config.scoring.tiling.categories)
    cache = args.run / ("component_maps_tiled.pt" if tiled else "component_maps.pt")
    saved = torch.load(cache) if cache.is_file() else None  # fusion_probe's: every test image, in index order
    if saved is not None and len(saved["rd"]) == len(index.test):
        rd, memory = saved["rd"].float()[chosen], saved["memory"].float()[chosen]
    else:  # no cache, or one written for other data
        rd, maybe_memory = tiled_component_maps(model, samples)
        assert maybe_memory is not None
        memory = maybe_memory
    truth = DefectTruth(samples, size)
    print(f"{args.category}: share of defect pixels {truth.shares()}", flush=True)
    print(truth.line("the run's student map", rd), flush=True)
    print(truth.line("the run's memory", memory), flush=True)
    print(truth.line(f"the run's rd + {alpha:g}·memory", rd + alpha * memory), flush=True)
    if args.category in model.config.scoring.tiling.categories:
        raise SystemExit(f"{args.category}: tiled by this run; the memory variants are built on squashed images")

    def features_of(split: list[data.Sample]) -> list[torch.Tensor]:
        images = data.load_images(split, size, progress=False)
        return cache_teacher_features(model, images, torch.device("cpu"), progress=False)[:2]

    train = features_of([s for s in training_samples(model.config, index) if s.category == args.category])
    held = features_of([s for s in held_out_samples(model.config, index) if s.category == args.category])
    test = features_of(samples)
    print(f"features: {time.monotonic() - started:.0f} s", flush=True)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    for pool in (int(p) for p in args.pools.split(",")):
        rows = training_patches(train, pool=pool)
        for entries in (int(e) for e in args.entries.split(",")):
            memory_bank = PatchMemory(entries, rows.shape[1])
            memory_bank.set_entries(rows[greedy_coreset(rows, entries)].float())
            held_maps = distance_maps(memory_bank, held, pool, size)  # the costly part, once for every σ
            test_maps = distance_maps(memory_bank, test, pool, size)
            for s in sigmas:
                blur = GaussianBlur(s)
                variant = smoothed(test_maps, blur) / smoothed(held_maps, blur).mean()
                name = f"{entries} pool {pool} σ {s:g}"
                print(truth.line(f"memory {name}", variant), flush=True)
                print(truth.line(f"rd + {alpha:g}·memory {name}", blur_to(rd, s, sigma) + alpha * variant), flush=True)
            print(f"  {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
