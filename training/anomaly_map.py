"""Teacher/student distances → anomaly map → image score. Defined once; exported inside the ONNX graph.

Map: per scale 1 − cos(teacher, student) over channels, bilinearly upsampled to the input size, summed over
scales, smoothed by a Gaussian (σ = 4 px by default, as RD4AD). The separable kernel is built once, as a buffer.
Score: the map's maximum (RD4AD), or the mean of its top fraction of pixels, which is steadier when a single
noisy pixel would otherwise decide.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cosine_distance_maps(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale (N, 1, h, w) maps of 1 − cos over channels."""
    return [1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1) for t, s in zip(teacher, student, strict=True)]


class GaussianBlur(nn.Module):
    def __init__(self, sigma: float) -> None:
        super().__init__()
        radius = max(1, math.ceil(4 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel_h", kernel.view(1, 1, 1, -1))
        self.register_buffer("kernel_v", kernel.view(1, 1, -1, 1))
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), self.kernel_h)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), self.kernel_v)


class AnomalyMap(nn.Module):
    def __init__(self, image_size: int, sigma: float, score: str = "max", score_topk: float = 0.01) -> None:
        super().__init__()
        if score not in ("max", "topk_mean"):
            raise ValueError(f"score must be 'max' or 'topk_mean', not {score!r}")
        self.image_size = image_size
        self.blur = GaussianBlur(sigma)
        self.score_rule = score
        self.topk = max(1, int(round(score_topk * image_size * image_size)))

    def forward(self, teacher: list[torch.Tensor], student: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (score (N,), anomaly_map (N, 1, S, S))."""
        size = (self.image_size, self.image_size)
        maps = [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in cosine_distance_maps(teacher, student)
        ]
        anomaly_map = self.blur(torch.stack(maps, dim=0).sum(dim=0))
        flat = anomaly_map.flatten(1)
        if self.score_rule == "max":
            score = flat.max(dim=1).values
        else:
            score = flat.topk(self.topk, dim=1).values.mean(dim=1)
        return score, anomaly_map
