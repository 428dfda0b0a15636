"""Training objective: cosine distillation per scale, plus the prototype coherence term. Stateless functions.

``pixel``: mean over positions of 1 − cos(teacher, student), summed over scales — the per-position form matches
the anomaly map the model is judged by. ``hard``: the same, but positions below the batch's q-quantile of
distance (already well reconstructed) have their gradient scaled by 0.1, so training time goes to the patches
the student still gets wrong (Dinomaly's hard-mining idea, applied per position).

The target (``loss_target``) loosens what must match: ``point`` compares each scale position by position;
``global`` compares each scale's whole map of an image as one vector (a student may be off at a position if the
map as a whole points the same way; hard mining then scales the easy positions' gradient without changing the
value, as Dinomaly's global hard-mining cosine); ``group`` brings the coarser scales to the finest grid and
compares all of them at once per position, one cosine over the joined channels.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from training.anomaly_map import feature_distance_maps
from training.config import LossMode, LossTarget

EASY_GRADIENT_SCALE = 0.1
LOSS_MODES: tuple[LossMode, ...] = get_args(LossMode)
LOSS_TARGETS: tuple[LossTarget, ...] = get_args(LossTarget)


def distillation_loss(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    mode: LossMode,
    quantile: float,
    magnitude_weight: float,
    target: LossTarget,
    channel_weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Summed over scales. ``mode``, ``quantile`` (``hard_mining_quantile``), ``magnitude_weight`` and ``target``
    (``loss_target``) come from the run's ``TrainConfig`` and have no defaults here, so the config's are the only
    ones a training step can use."""
    if mode not in LOSS_MODES:
        raise ValueError(f"unknown loss mode {mode!r} ({', '.join(LOSS_MODES)})")
    if target not in LOSS_TARGETS:
        raise ValueError(f"unknown loss target {target!r} ({', '.join(LOSS_TARGETS)})")
    if target == "group":  # one comparison standing for every scale: weighted as many, against the coherence term
        return len(teacher) * distillation_loss([_joined(teacher)], [_joined(student)], mode, quantile, 0.0, "point")
    if target == "global":
        return sum(_global_cosine(t, s, mode, quantile) for t, s in zip(teacher, student, strict=True))
    total = teacher[0].new_zeros(())
    for distance in feature_distance_maps(teacher, student, magnitude_weight, channel_weights):
        distance = distance[:, 0]
        if mode == "hard":
            cutoff = torch.quantile(distance.detach().flatten()[:: max(1, distance.numel() // 65536)], quantile)
            weight = torch.where(distance.detach() < cutoff, EASY_GRADIENT_SCALE, 1.0)
            total = total + (distance * weight).sum() / weight.sum()
        else:
            total = total + distance.mean()
    return total


def _joined(maps: list[torch.Tensor]) -> torch.Tensor:
    """Every scale at the finest one's resolution, channels concatenated."""
    size = max((m.shape[-2:] for m in maps), key=lambda hw: hw[0] * hw[1])
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)


def _global_cosine(teacher: torch.Tensor, student: torch.Tensor, mode: LossMode, quantile: float) -> torch.Tensor:
    """Mean over images of 1 − cos(teacher map, student map), each map flattened; with ``hard``, the gradient at
    positions whose own distance is under the batch's quantile is scaled by ``EASY_GRADIENT_SCALE`` (value kept)."""
    if mode == "hard":
        with torch.no_grad():
            distance = 1 - F.cosine_similarity(teacher, student, dim=1).unsqueeze(1)
            cutoff = torch.quantile(distance.flatten()[:: max(1, distance.numel() // 65536)], quantile)
            scale = torch.where(distance < cutoff, EASY_GRADIENT_SCALE, 1.0)
        student = student.detach() + scale * (student - student.detach())
    return (1 - F.cosine_similarity(teacher.flatten(1), student.flatten(1), dim=1)).mean()


def coherence_loss(best_similarity: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − cos(embedding, its nearest prototype)."""
    return (1 - best_similarity).mean()
