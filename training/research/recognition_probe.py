"""Probe: category recognition from pooled teacher descriptors — descriptor form × centroids per category (CPU).

    python -m training.research.recognition_probe runs/demo --data ../shared/data

Prints, for three descriptor forms (one normalisation over the concatenated scales; each scale normalised; each
scale's mean and std normalised) and 1, 4 or 16 k-means centroids per category (and 1-NN over every training
image), the share of test images whose best category is their own. The figures in ``training/recognition.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from training.calibrate import holdout_split
from training.data import discover, load_images
from training.model import load_run
from training.recognition import category_similarity, fit_centroids, pooled_descriptor

FORMS: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {
    "concatenated": lambda f: F.normalize(torch.cat([x.mean(dim=(2, 3)) for x in f], 1), dim=1),
    "per-scale": pooled_descriptor,  # the shipped descriptor itself
    "per-scale mean+std": lambda f: F.normalize(
        torch.cat([F.normalize(torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1), dim=1) for x in f], 1), dim=1
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    model = load_run(args.run)
    index = discover([args.data])
    train, _ = holdout_split(index.train, 0.1, validation=index.validation)
    cats = index.categories

    @torch.no_grad()
    def features(samples: list) -> list[list[torch.Tensor]]:
        images = load_images(samples, model.input_size, progress=False)
        return [model.teacher_features(torch.from_numpy(images[i : i + 32])) for i in range(0, len(images), 32)]

    train_features, test_features = features(train), features(index.test)
    train_ids = torch.tensor([cats.index(s.category) for s in train])
    test_ids = torch.tensor([cats.index(s.category) for s in index.test])
    for name, form in FORMS.items():
        train_desc = torch.cat([form(f) for f in train_features])
        test_desc = torch.cat([form(f) for f in test_features])
        for per_category in (1, 4, 16):
            centroids = fit_centroids(train_desc, train_ids, len(cats), per_category)
            hits = category_similarity(test_desc, centroids, per_category).argmax(dim=1) == test_ids
            per = " ".join(f"{c}:{hits[test_ids == k].float().mean():.3f}" for k, c in enumerate(cats))
            print(f"{name:20s} {per_category:2d} per category: {hits.float().mean():.3f} | {per}", flush=True)
        hits = train_ids[(test_desc @ train_desc.t()).argmax(dim=1)] == test_ids
        print(f"{name:20s} 1-NN over training images: {hits.float().mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
