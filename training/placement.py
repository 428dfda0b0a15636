"""The MNP filter placed on the teacher's features (``filter_at="teacher"``) instead of on the embedding.

The teacher's taps have different strides and widths; the bank needs one vector per position. ``TeacherFusion``
brings every tap to the embedding grid (average pooling for finer taps, bilinear for coarser ones) and joins the
channels, so one vector describes a patch at every scale, as the embedding does. After recall, ``split`` cuts the
rebuilt vectors back into the taps' channel groups and brings each to its tap's resolution: the bottleneck then
sees only mixes of normal teacher prototypes, never the teacher's features of the image itself. Every operation
exports to ONNX (AveragePool, Resize, Concat, Split).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TeacherFusion(nn.Module):
    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], grid_stride: int) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.strides = tuple(strides)
        self.grid_stride = grid_stride

    @property
    def dim(self) -> int:
        """Width of a fused vector: the bank's prototype width at this placement."""
        return sum(self.channels)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, ΣC, h, w) on the embedding grid (h, w: the finest tap's size over grid_stride / its stride)."""
        finest = features[self.strides.index(min(self.strides))]
        ratio = self.grid_stride // min(self.strides)
        size = (max(1, finest.shape[-2] // ratio), max(1, finest.shape[-1] // ratio))
        aligned = []
        for f, stride in zip(features, self.strides, strict=True):
            if stride < self.grid_stride:
                f = F.avg_pool2d(f, self.grid_stride // stride)
            if tuple(f.shape[-2:]) != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            aligned.append(f)
        return torch.cat(aligned, dim=1)

    def split(self, fused: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """The taps rebuilt from ``fused``, each at the resolution of its tap in ``like``."""
        parts = torch.split(fused, list(self.channels), dim=1)
        return [
            F.interpolate(p, size=tuple(f.shape[-2:]), mode="bilinear", align_corners=False)
            for p, f in zip(parts, like, strict=True)
        ]
