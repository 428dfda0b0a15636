"""Which known category an image shows: pooled teacher descriptors against a few centroids per category.

The graph answers ``category_similarity`` (N, C) so the service can pick a category's threshold and patch memory
when the camera does not say which part it is. How well it does is part of every evaluation
(``category_recognition_accuracy`` in ``metrics.json``). Choices, and why:

- **Descriptor**: each tapped scale global-average-pooled and L2-normalised on its own, then concatenated and
  normalised, so the widest, coarsest map does not drown the others (one normalisation over the concatenation
  recognised fewer test images).
- **Several centroids per category** (k-means, ``category_centroids``=16): a category photographed under several
  set-ups (magnetic tiles: dark and bright series) is several clusters, not one, and one mean centroid sits between
  them; similarity to a category is the best over its centroids. 16 leaves room for categories with more set-ups
  than those of ``../shared/data``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KMEANS_ITERATIONS = 25


def pooled_descriptor(features: list[torch.Tensor]) -> torch.Tensor:
    """(N, ΣC): per-scale mean-pooled, per-scale L2-normalised, concatenated and L2-normalised teacher features."""
    per_scale = [F.normalize(f.mean(dim=(2, 3)), dim=1) for f in features]
    return F.normalize(torch.cat(per_scale, dim=1), dim=1)


def category_similarity(descriptors: torch.Tensor, centroids: torch.Tensor, per_category: int) -> torch.Tensor:
    """(N, C): cosine similarity to each category's most similar centroid; ``centroids`` is (C·per_category, D)."""
    similarity = descriptors @ F.normalize(centroids, dim=1).t()
    return similarity.reshape(descriptors.shape[0], -1, per_category).amax(dim=2)


@torch.no_grad()
def fit_centroids(
    descriptors: torch.Tensor, category_ids: torch.Tensor, n_categories: int, per_category: int, seed: int = 0
) -> torch.Tensor:
    """(n_categories·per_category, D): k-means centroids of each category's descriptors (deterministic for a seed).

    A category with fewer images than ``per_category`` repeats its descriptors, so every category has the same
    number of rows and the graph's reshape stays static.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for k in range(n_categories):
        points = descriptors[category_ids == k].float().cpu()
        if len(points) == 0:
            raise ValueError(f"category index {k} has no training descriptors")
        if len(points) <= per_category:
            rows.append(points[torch.arange(per_category) % len(points)])
            continue
        centers = points[torch.randperm(len(points), generator=generator)[:per_category]].clone()
        for _ in range(KMEANS_ITERATIONS):
            assign = (points @ centers.t()).argmax(dim=1)  # unit vectors: most similar = nearest
            for j in range(per_category):
                members = points[assign == j]
                if len(members):
                    centers[j] = F.normalize(members.mean(dim=0), dim=0)
        rows.append(centers)
    return torch.cat(rows).to(descriptors.device)
