"""Probe: image-score and map-normalisation rules on a trained run's RD maps (research, CPU).

    python -m training.research.score_probe runs/demo --data ../shared/data
Caches the test maps in RUN/probe_maps.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from training.calibrate import holdout_split
from training.data import discover, load_images, load_mask
from training.model import load_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data", default="../shared/data")
    a = ap.parse_args()
    index = discover([Path(a.data)])
    test = index.test
    _, held = holdout_split(index.train, 0.1, validation=index.validation)
    held = held + [s for s in index.validation if s.label == 0]
    cache = Path(a.run) / "probe_maps.pt"
    if cache.is_file():
        maps, held_maps = torch.load(cache)
    else:
        model = load_run(Path(a.run))

        def run(samples):
            imgs = load_images(samples, model.input_size, progress=False)
            with torch.no_grad():
                batches = [torch.from_numpy(imgs[i : i + 32]) for i in range(0, len(imgs), 32)]
                return torch.cat([model(batch).anomaly_map for batch in batches])

        maps, held_maps = run(test), run(held)
        torch.save((maps, held_maps), cache)
    held_cats = np.array([s.category for s in held])
    size = maps.shape[-1]
    masks = np.stack([load_mask(s, size) for s in test])[:, ::4, ::4]
    labels = np.array([s.label for s in test])
    cats = np.array([s.category for s in test])
    flat = maps.flatten(1)
    mean = flat.mean(1, keepdim=True)
    med = flat.median(1, keepdim=True).values

    def q(p: float) -> torch.Tensor:
        return flat.quantile(p, dim=1, keepdim=True)

    variants = {
        "max": (flat.max(1).values, flat),
        "max-mean": (flat.max(1).values - mean[:, 0], flat - mean),
        "max-median": (flat.max(1).values - med[:, 0], flat - med),
        "max/mean": (flat.max(1).values / mean[:, 0], flat / mean),
        "max-q25": (flat.max(1).values - q(0.25)[:, 0], flat - q(0.25)),
        "top1%-mean": (flat.topk(655, 1).values.mean(1) - mean[:, 0], flat - mean),
    }
    mu = torch.zeros_like(flat)
    sd = torch.ones_like(flat)
    for c in index.categories:
        h = held_maps.flatten(1)[torch.from_numpy(held_cats == c)]
        k = torch.from_numpy(cats == c)
        mu[k] = h.mean(0)
        sd[k] = h.std(0) + 0.1 * h.std(0).mean()
    z = (flat - mu) / sd
    variants["pos-mean"] = ((flat - mu).max(1).values, flat - mu)
    variants["pos-z"] = (z.max(1).values, z)
    variants["pos-mean q25"] = ((flat - mu).max(1).values - (flat - mu).quantile(0.25, 1), flat - mu)
    for name, (score, pix) in variants.items():
        res = []
        pix = pix.reshape(-1, size, size)[:, ::4, ::4].numpy()
        for c in index.categories:
            k = cats == c
            res.append((roc_auc_score(labels[k], score.numpy()[k]), roc_auc_score(masks[k].ravel(), pix[k].ravel())))
        r = np.array(res)
        body = " ".join(f"{c[:4]}:{i:.3f}/{p:.3f}" for c, (i, p) in zip(index.categories, res, strict=True))
        print(f"{name:14s} mean {r[:, 0].mean():.3f}/{r[:, 1].mean():.3f} | {body}", flush=True)


if __name__ == "__main__":
    main()
