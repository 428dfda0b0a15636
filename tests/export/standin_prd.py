"""A small stand-in for ``training.model.PRDModel`` with the same interface, so export tests run in seconds.

It is not PRD: random tiny convolutions play teacher and student. What matters for export is that it exercises
the same graph shapes and operators as the real model — uint8 NHWC input normalised in the graph, two feature
scales, a top-k prototype recall (TopK), per-scale 1 − cos maps upsampled and summed, a fixed Gaussian blur, the
max as image score, and cosine similarity of pooled teacher features to per-category centroids.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ScoreOutput(NamedTuple):
    score: torch.Tensor
    anomaly_map: torch.Tensor
    category_similarity: torch.Tensor


@dataclass
class StandInConfig:
    input_size: int = 48
    prototypes: int = 8
    top_k: int = 2
    teacher: str = "standin_conv"
    holdout_fraction: float = 0.1
    holdout_seed: int = 0
    categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = math.ceil(2 * sigma)
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel_1d = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    return (kernel_1d[:, None] * kernel_1d[None, :])[None, None]


class StandInPRD(nn.Module):
    """uint8 (N,S,S,3) → ScoreOutput(score (N,), anomaly_map (N,1,S,S), category_similarity (N,C))."""

    def __init__(self, categories: list[str], input_size: int = 48, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = StandInConfig(input_size=input_size, categories=list(categories))
        self.input_size = input_size
        self.categories = list(categories)
        self.teacher_name = self.config.teacher
        self.teacher1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.teacher2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.prototypes = nn.Parameter(torch.randn(self.config.prototypes, 16))
        self.decoder2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.decoder1 = nn.Conv2d(16, 8, 3, 1, 1)
        self.register_buffer("blur", _gaussian_kernel(1.0))
        self.register_buffer("centroids", F.normalize(torch.randn(len(categories), 16), dim=1))
        self.eval()

    def _pooled(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        t1 = self.teacher1(x)
        t2 = self.teacher2(t1)
        return t1, t2, F.normalize(t2.mean(dim=(2, 3)), dim=1)

    def forward(self, images: torch.Tensor) -> ScoreOutput:
        t1, t2, pooled = self._pooled(images)
        n, c, h, w = t2.shape
        z = t2.permute(0, 2, 3, 1).reshape(n, h * w, c)
        similarity = F.normalize(z, dim=2) @ F.normalize(self.prototypes, dim=1).T
        top, index = similarity.topk(self.config.top_k, dim=2)
        weights = torch.zeros_like(similarity).scatter(2, index, torch.softmax(top, dim=2))
        z_hat = (weights @ self.prototypes).reshape(n, h, w, c).permute(0, 3, 1, 2)
        s2 = self.decoder2(z_hat)
        s1 = self.decoder1(F.interpolate(s2, size=t1.shape[2:], mode="bilinear", align_corners=False))
        size = (self.input_size, self.input_size)
        maps = [
            F.interpolate((1 - F.cosine_similarity(t, s, dim=1)).unsqueeze(1), size=size, mode="bilinear")
            for t, s in ((t1, s1), (t2, s2))
        ]
        anomaly_map = F.conv2d(maps[0] + maps[1], self.blur, padding=self.blur.shape[-1] // 2)
        score = anomaly_map.amax(dim=(1, 2, 3))
        return ScoreOutput(score, anomaly_map, pooled @ self.centroids.T)

    @torch.no_grad()
    def fit_centroids(self, images_by_category: dict[str, np.ndarray]) -> None:
        """Per-category mean of pooled teacher features, as the real model does after training."""
        rows = [self._pooled(torch.from_numpy(images_by_category[c]))[2].mean(0) for c in self.categories]
        self.centroids.copy_(F.normalize(torch.stack(rows), dim=1))
