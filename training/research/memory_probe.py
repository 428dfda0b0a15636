"""Probe: the teacher-space patch memory (``training/memory.py``) on a trained run, without retraining (research, CPU).

    python -m training.research.memory_probe runs/demo [--entries 4096,16384] [--alphas 0.5,1,2,4]

For each memory size, a random subsample and the greedy coreset of the run's training patches (the same
descriptors the model would build); maps scaled by their mean over the held-out normal images, as
``engine.calibrate_map_scales`` does; image AUROC with both score rules and pixel AUROC (every 4th pixel) per
category, for the memory alone and mixed into the run's RD map. The RD test maps come from ``map_breakdown``'s
cache when present. Blur is linear, so mixing smoothed maps equals smoothing the mixed map.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from training import data
from training.anomaly_map import GaussianBlur
from training.engine import cache_teacher_features, held_out_samples, training_samples
from training.memory import PatchMemory, build_memory, patch_descriptors, training_patches
from training.model import PRDModel, load_run
from training.research.map_breakdown import anomaly_maps

SCORE_RULES = {
    "max": lambda flat: flat.max(1).values,
    "max-mean": lambda flat: flat.max(1).values - flat.mean(1),
    "top1%": lambda flat: flat.topk(max(1, flat.shape[1] // 100), dim=1).values.mean(1),
}


@dataclass
class TestTruth:
    """What the probes score test maps against: each test image's label and category, masks at every 4th pixel."""

    categories: list[str]
    image_categories: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    @classmethod
    def of(cls, index: data.DatasetIndex, size: int) -> TestTruth:
        masks = np.stack([data.load_mask(s, size) for s in index.test])[:, ::4, ::4]
        labels = np.array([s.label for s in index.test])
        return cls(index.categories, np.array([s.category for s in index.test]), labels, masks)

    def line(self, name: str, anomaly_map: torch.Tensor, rule: str) -> str:
        """Mean and per-category image / pixel AUROC of (N, S, S) test maps, the image score by ``rule``."""
        score = SCORE_RULES[rule](anomaly_map.flatten(1)).numpy()
        pixels = anomaly_map[:, ::4, ::4].numpy()
        rows = [
            (roc_auc_score(self.labels[k], score[k]), roc_auc_score(self.masks[k].ravel() > 0, pixels[k].ravel()))
            for k in (self.image_categories == c for c in self.categories)
        ]
        body = " ".join(f"{c[:4]}:{i:.3f}/{p:.3f}" for c, (i, p) in zip(self.categories, rows, strict=True))
        mean = np.array(rows).mean(0)
        return f"{name:30s} {rule:8s} mean {mean[0]:.3f}/{mean[1]:.3f} | {body}"


def teacher_maps(model: PRDModel, images: np.ndarray) -> list[torch.Tensor]:
    """The first two teacher maps (those the memory describes), cached as the trainer caches them."""
    return cache_teacher_features(model, images, torch.device("cpu"), progress=False)[:2]


@torch.no_grad()
def memory_maps(
    memory: PatchMemory,
    features: list[torch.Tensor],
    size: int,
    blur: GaussianBlur,
    bank: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, S, S) smoothed memory maps; with ``bank`` (N,), image i against that memory of a per-category one."""
    out = []
    for i in range(0, len(features[0]), 16):
        m = memory([f[i : i + 16].float() for f in features], None if bank is None else bank[i : i + 16])
        out.append(blur(F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False))[:, 0])
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--entries", default="4096,16384")
    parser.add_argument("--alphas", default="0.5,1,2,4")
    parser.add_argument("--random", action="store_true", help="also a random subsample of the same size")
    parser.add_argument("--save", type=Path, default=None, help="write the test and held-out maps (float16) here")
    args = parser.parse_args()
    started = time.monotonic()
    index = data.discover([Path(args.data)])
    model = load_run(args.run)
    size = model.input_size
    train, held_out = training_samples(model.config, index), held_out_samples(model.config, index)
    test = index.test
    train_features = teacher_maps(model, data.load_images(train, size, progress=False))
    held_images = data.load_images(held_out, size, progress=False)
    held_features = teacher_maps(model, held_images)
    test_images = data.load_images(test, size, progress=False)
    test_features = teacher_maps(model, test_images)
    cache = args.run / "breakdown_maps.pt"
    rd_test = torch.load(cache) if cache.is_file() else anomaly_maps(model, test_images)
    rd_held = anomaly_maps(model, held_images)
    rd_scale = rd_held.mean()
    print(f"features: {time.monotonic() - started:.0f} s; {len(train)} train, {len(held_out)} held out", flush=True)
    blur = GaussianBlur(model.config.map_sigma)
    truth = TestTruth.of(index, size)

    def report(name: str, anomaly_map: torch.Tensor) -> None:
        for rule in ("max-mean", "max"):
            print(truth.line(name, anomaly_map, rule), flush=True)

    report("rd (the run's map)", rd_test / rd_scale)
    dim = patch_descriptors([f[:1].float() for f in train_features]).shape[1]
    for entries in (int(e) for e in args.entries.split(",")):
        kinds = ["coreset", "random"] if args.random else ["coreset"]
        for kind in kinds:
            t0 = time.monotonic()
            if kind == "coreset":
                bank = build_memory(train_features, entries, progress=False)
            else:
                every = training_patches(train_features).float()
                bank = every[torch.randperm(len(every), generator=torch.Generator().manual_seed(0))[:entries]]
            built = time.monotonic() - t0
            memory = PatchMemory(entries, dim)
            memory.set_entries(bank)
            memory_held = memory_maps(memory, held_features, size, blur)
            memory_scale = memory_held.mean()
            memory_test = memory_maps(memory, test_features, size, blur) / memory_scale
            if args.save is not None:
                maps = {"rd_test": rd_test / rd_scale, "rd_held": rd_held / rd_scale, "memory_test": memory_test}
                maps["memory_held"] = memory_held / memory_scale
                torch.save({k: v.half() for k, v in maps.items()}, args.save.with_suffix(f".{kind}{entries}.pt"))
            elapsed = time.monotonic() - started
            print(f"-- {kind} {entries}: built in {built:.0f} s, maps at {elapsed:.0f} s", flush=True)
            report(f"memory {kind} {entries}", memory_test)
            for alpha in (float(a) for a in args.alphas.split(",")):
                report(f"rd + {alpha:g}·memory {kind} {entries}", rd_test / rd_scale + alpha * memory_test)


if __name__ == "__main__":
    main()
