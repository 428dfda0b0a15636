"""A small stand-in for ``training.model.PRDModel`` with the same interface, so export tests run in seconds.

It is not PRD: random tiny convolutions play teacher and student. What matters for export is that it exercises
the same graph shapes and operators as the real model — uint8 NHWC input normalised in the graph, two feature
scales, a top-k prototype recall (TopK), per-scale 1 − cos maps upsampled and summed, a fixed Gaussian blur, the
max as image score, and cosine similarity of pooled teacher features to per-category centroids. With
``memory_entries`` it also has a patch memory under the real model's scope name (``anomaly_map.memory``):
nearest-entry distances of the teacher's features, computed as ‖q‖² − 2 q·b + ‖b‖², added to the map.
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


class StandInMemory(nn.Module):
    """(N, D, h, w) features → (N, 1, h, w) Euclidean distance of each position to its nearest memory entry."""

    def __init__(self, entries: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("entries", torch.randn(entries, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = features.shape
        rows = features.flatten(2).transpose(1, 2)
        products = rows @ self.entries.T
        squared = rows.pow(2).sum(2, keepdim=True) - 2 * products + self.entries.pow(2).sum(1)
        return squared.min(dim=2).values.clamp(min=0).sqrt().reshape(n, 1, h, w)


class StandInMap(nn.Module):
    """Calls the memory, so its nodes are exported under ``/anomaly_map/memory/`` as the real model's are."""

    def __init__(self, entries: int, dim: int) -> None:
        super().__init__()
        self.memory = StandInMemory(entries, dim)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.memory(features), size=size, mode="bilinear")


class StandInTeacher(nn.Module):
    """Two strided convolutions, exported under ``/teacher/`` as the real teacher is."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t1 = self.stem(x)
        return t1, self.stage2(t1)


class StandInDecoder(nn.Module):
    """The student, coarse to fine, exported under ``/decoder/`` as the real one is."""

    def __init__(self) -> None:
        super().__init__()
        self.coarse = nn.Conv2d(16, 16, 3, 1, 1)
        self.fine = nn.Conv2d(16, 8, 3, 1, 1)

    def forward(self, z_hat: torch.Tensor, fine_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        s2 = self.coarse(z_hat)
        s1 = self.fine(F.interpolate(s2, size=fine_size, mode="bilinear", align_corners=False))
        return s1, s2


class StandInPRD(nn.Module):
    """uint8 (N,S,S,3) → ScoreOutput(score (N,), anomaly_map (N,1,S,S), category_similarity (N,C))."""

    def __init__(self, categories: list[str], input_size: int = 48, seed: int = 0, memory_entries: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = StandInConfig(input_size=input_size, categories=list(categories))
        self.input_size = input_size
        self.categories = list(categories)
        self.teacher_name = self.config.teacher
        self.teacher = StandInTeacher()  # scope names as the real model's, which training.quantize selects by
        self.prototypes = nn.Parameter(torch.randn(self.config.prototypes, 16))
        self.decoder = StandInDecoder()
        self.register_buffer("blur", _gaussian_kernel(1.0))
        self.register_buffer("centroids", F.normalize(torch.randn(len(categories), 16), dim=1))
        self.anomaly_map = StandInMap(memory_entries, 8) if memory_entries else None
        self.eval()

    def _pooled(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        t1, t2 = self.teacher(x)
        return t1, t2, F.normalize(t2.mean(dim=(2, 3)), dim=1)

    def forward(self, images: torch.Tensor) -> ScoreOutput:
        t1, t2, pooled = self._pooled(images)
        n, c, h, w = t2.shape
        z = t2.permute(0, 2, 3, 1).reshape(n, h * w, c)
        similarity = F.normalize(z, dim=2) @ F.normalize(self.prototypes, dim=1).T
        top, index = similarity.topk(self.config.top_k, dim=2)
        weights = torch.zeros_like(similarity).scatter(2, index, torch.softmax(top, dim=2))
        z_hat = (weights @ self.prototypes).reshape(n, h, w, c).permute(0, 3, 1, 2)
        s1, s2 = self.decoder(z_hat, t1.shape[2:])
        size = (self.input_size, self.input_size)
        maps = [
            F.interpolate((1 - F.cosine_similarity(t, s, dim=1)).unsqueeze(1), size=size, mode="bilinear")
            for t, s in ((t1, s1), (t2, s2))
        ]
        fused = maps[0] + maps[1]
        if self.anomaly_map is not None:
            fused = fused + 0.1 * self.anomaly_map(t1, size)
        anomaly_map = F.conv2d(fused, self.blur, padding=self.blur.shape[-1] // 2)
        score = anomaly_map.amax(dim=(1, 2, 3))
        return ScoreOutput(score, anomaly_map, pooled @ self.centroids.T)

    @torch.no_grad()
    def fit_memory(self, images: np.ndarray) -> None:
        """Memory entries drawn from the teacher's features of normal images, as the real model's are."""
        rows = self.teacher.stem((torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.0) / 128.0)
        rows = rows.flatten(2).transpose(1, 2).reshape(-1, rows.shape[1])
        memory = self.anomaly_map.memory
        pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[: len(memory.entries)]
        memory.entries.copy_(rows[pick])

    @torch.no_grad()
    def fit_centroids(self, images_by_category: dict[str, np.ndarray]) -> None:
        """Per-category mean of pooled teacher features, as the real model does after training."""
        rows = [self._pooled(torch.from_numpy(images_by_category[c]))[2].mean(0) for c in self.categories]
        self.centroids.copy_(F.normalize(torch.stack(rows), dim=1))
