"""The student: a decoder mirroring the teacher's stages, reconstructing its three maps from the embedding.

Coarse to fine: at each teacher stride the running map is upsampled (bilinear ×2 per halving, no transposed
convolutions and their checkerboards), refined by a residual block, and a 1×1 head projects it to the teacher's
channel count for that scale. The student sees only the (prototype-filtered) embedding, never the teacher's maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.bottleneck import ResidualBlock, conv_bn_relu


class StudentDecoder(nn.Module):
    def __init__(
        self, embed_dim: int, embed_stride: int, channels: tuple[int, ...], strides: tuple[int, ...], width: int
    ) -> None:
        super().__init__()
        self.strides = strides
        self.embed_stride = embed_stride
        self.stages = nn.ModuleList()
        self.heads = nn.ModuleList()
        in_ch = embed_dim
        for ch, stride in reversed(list(zip(channels, strides, strict=True))):
            # Halve the width per doubling of resolution: the cost per scale stays flat and the finest scale cheap.
            stage_width = max(32, width * stride // max(strides), ch)
            self.stages.append(nn.Sequential(conv_bn_relu(in_ch, stage_width), ResidualBlock(stage_width)))
            self.heads.append(nn.Conv2d(stage_width, ch, 1))
            in_ch = stage_width

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Returns the student's maps fine → coarse, matching the teacher's order."""
        outputs = []
        h = embedding
        current = self.embed_stride
        for stage, head, stride in zip(self.stages, self.heads, reversed(self.strides), strict=True):
            if stride != current:
                h = F.interpolate(h, scale_factor=current / stride, mode="bilinear", align_corners=False)
                current = stride
            h = stage(h)
            outputs.append(head(h))
        return outputs[::-1]
