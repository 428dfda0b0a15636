"""The trainable one-class bottleneck (RD4AD's OCBE): fuse the teacher's three scales into one compact embedding.

Each scale is brought to the embedding stride with strided 3×3 convolutions (one per halving, as RD4AD), the
three are concatenated and mixed by two residual 3×3 blocks into ``embed_dim`` channels. Fusing all scales lets
one embedding vector describe a patch at several granularities, which is what the prototypes then filter.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class OneClassBottleneck(nn.Module):
    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], embed_dim: int, embed_stride: int) -> None:
        super().__init__()
        branches = []
        for ch, stride in zip(channels, strides, strict=True):
            layers: list[nn.Module] = []
            if stride > embed_stride:  # a coarser tap is brought up to the embedding grid
                layers.append(nn.Upsample(scale_factor=stride // embed_stride, mode="bilinear", align_corners=False))
            elif embed_stride % stride:
                raise ValueError(f"embed_stride {embed_stride} is not a multiple of teacher stride {stride}")
            halvings = int(math.log2(max(1, embed_stride // stride)))
            width = ch
            for _ in range(halvings):
                layers.append(conv_bn_relu(width, max(width * 2, 64), stride=2))
                width = max(width * 2, 64)
            branches.append(nn.Sequential(*layers) if layers else nn.Identity())
            branches[-1].out_channels = width  # type: ignore[union-attr]
        self.branches = nn.ModuleList(branches)
        fused = sum(b.out_channels for b in branches)  # type: ignore[misc]
        self.mix = nn.Sequential(conv_bn_relu(fused, embed_dim, kernel=1), ResidualBlock(embed_dim))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        aligned = [branch(f) for branch, f in zip(self.branches, features, strict=True)]
        return self.mix(torch.cat(aligned, dim=1))
