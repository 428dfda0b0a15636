"""Teacher/student distances → anomaly map → image score. Defined once; exported inside the ONNX graph.

Map: per scale 1 − cos(teacher, student) over channels, bilinearly upsampled to the input size, summed over
scales, smoothed by a Gaussian (σ = 4 px by default, as RD4AD). The separable kernel is built once, as a buffer.
With a teacher-space patch memory (``training/memory.py``) the map is fused before smoothing:
``rd / rd_scale + α · memory / memory_scale``, both scales measured once on held-out normals.
Score: the map's maximum (RD4AD); ``max_minus_mean``, the peak above the image's own mean level, which cancels the
offset that exposure sets on a whole map (magnetic tiles photographed dark or bright give low or high maps
everywhere); or the mean of its top fraction of pixels, steadier when a single noisy pixel would otherwise decide.
"""

from __future__ import annotations

import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ImageScoreRule, TrainConfig
from training.memory import PatchMemory


def cosine_distance_maps(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per scale (N, 1, h, w) maps of 1 − cos over channels."""
    return [1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1) for t, s in zip(teacher, student, strict=True)]


def feature_distance_maps(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    magnitude_weight: float = 0.0,
    channel_weights: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Per scale (N, 1, h, w): 1 − cos, plus ``magnitude_weight`` · mean_c w_c (t_c − s_c)² when that weight is > 0.

    Cosine alone is blind to how strongly a feature fires, so a patch that is only darker or brighter than normal
    (magnetic tiles' "uneven" defects) looks normal to it. The magnitude term is the squared error of each channel
    in units of that channel's spread on the training features (``channel_weights[i]`` = 1 / (var_c + 0.1·mean
    var), measured once by the engine), so no channel with a large range dominates. Training and the anomaly map
    both use this one function.
    """
    maps = cosine_distance_maps(teacher, student)
    if magnitude_weight <= 0 or channel_weights is None:
        return maps
    return [
        m + magnitude_weight * ((t - s).pow(2) * w.view(1, -1, 1, 1)).mean(dim=1, keepdim=True)
        for m, t, s, w in zip(maps, teacher, student, channel_weights, strict=True)
    ]


SCORE_RULES: tuple[ImageScoreRule, ...] = get_args(ImageScoreRule)


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
    """The scoring head. Its knobs have no defaults here: their one default is ``TrainConfig``'s (``from_config``),
    so a map built outside ``PRDModel`` cannot score with other values than the run it stands for."""

    def __init__(
        self,
        image_size: int,
        sigma: float,
        *,
        score: ImageScoreRule,
        score_topk: float,
        magnitude_weight: float,
        memory_entries: int,
        memory_weight: float,
        channels: tuple[int, ...] = (),
        memory_banks: int = 1,
    ) -> None:
        super().__init__()
        if score not in SCORE_RULES:
            raise ValueError(f"score must be one of {', '.join(SCORE_RULES)}, not {score!r}")
        self.image_size = image_size
        self.blur = GaussianBlur(sigma)
        self.score_rule = score
        self.topk = max(1, int(round(score_topk * image_size * image_size)))
        self.magnitude_weight = magnitude_weight
        self.channels = tuple(channels)
        if magnitude_weight > 0:  # 1 / channel variance of the training features, set by the engine before training
            self.register_buffer("channel_weights", torch.ones(sum(self.channels)))
        else:
            self.channel_weights = None
        self.memory: PatchMemory | None = None
        if memory_entries > 0:
            self.memory = PatchMemory(memory_entries, sum(self.channels[:2]), banks=memory_banks)
            self.memory_weight = memory_weight
            self.register_buffer("rd_scale", torch.ones(()))
            self.register_buffer("memory_scale", torch.ones(()))

    @classmethod
    def from_config(cls, config: TrainConfig, channels: tuple[int, ...] = (), memory_banks: int = 1) -> AnomalyMap:
        """The map a run's config describes; ``channels``: the teacher's per tap, ``memory_banks``: one per memory."""
        return cls(
            config.image_size,
            config.map_sigma,
            score=config.score,
            score_topk=config.score_topk,
            magnitude_weight=config.magnitude_weight,
            memory_entries=config.memory_entries,
            memory_weight=config.memory_weight,
            channels=tuple(channels),
            memory_banks=memory_banks,
        )

    def per_scale_channel_weights(self) -> list[torch.Tensor] | None:
        if self.channel_weights is None:
            return None
        return list(torch.split(self.channel_weights, list(self.channels)))

    def component_maps(
        self,
        teacher: list[torch.Tensor],
        student: list[torch.Tensor],
        with_memory: bool = True,
        bank: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unscaled, unsmoothed (N, 1, S, S) maps: the student's summed distances, and the memory's (None without a
        memory, or when ``with_memory`` is False: the memory is the costly part and a probe may need only the first).
        ``bank`` (N,): the memory each image is measured against, when there is one per category."""
        size = (self.image_size, self.image_size)
        maps = [
            F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in feature_distance_maps(teacher, student, self.magnitude_weight, self.per_scale_channel_weights())
        ]
        rd = torch.stack(maps, dim=0).sum(dim=0)
        if self.memory is None or not with_memory:
            return rd, None
        return rd, F.interpolate(self.memory(teacher, bank), size=size, mode="bilinear", align_corners=False)

    def forward(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor], bank: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (score (N,), anomaly_map (N, 1, S, S))."""
        rd, memory = self.component_maps(teacher, student, bank=bank)
        if memory is not None:
            rd = rd / self.rd_scale + self.memory_weight * memory / self.memory_scale
        anomaly_map = self.blur(rd)
        flat = anomaly_map.flatten(1)
        if self.score_rule == "max":
            score = flat.max(dim=1).values
        elif self.score_rule == "max_minus_mean":
            score = flat.max(dim=1).values - flat.mean(dim=1)
        else:
            score = flat.topk(self.topk, dim=1).values.mean(dim=1)
        return score, anomaly_map
