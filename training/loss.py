"""Training objective: cosine distillation per scale, plus the prototype coherence term. Stateless functions.

``pixel``: mean over positions of 1 − cos(teacher, student), summed over scales — the per-position form matches
the anomaly map the model is judged by. ``hard``: the same, but positions below the batch's q-quantile of
distance (already well reconstructed) have their gradient scaled by 0.1, so training time goes to the patches
the student still gets wrong (Dinomaly's hard-mining idea, applied per position).
"""

from __future__ import annotations

from typing import get_args

import torch

from training.anomaly_map import feature_distance_maps
from training.config import LossMode

EASY_GRADIENT_SCALE = 0.1
LOSS_MODES: tuple[LossMode, ...] = get_args(LossMode)


def distillation_loss(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    mode: LossMode,
    quantile: float,
    magnitude_weight: float,
    channel_weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Summed over scales. ``mode``, ``quantile`` (``hard_mining_quantile``) and ``magnitude_weight`` come from the
    run's ``TrainConfig`` and have no defaults here, so the config's are the only ones a training step can use."""
    if mode not in LOSS_MODES:
        raise ValueError(f"unknown loss mode {mode!r} ({', '.join(LOSS_MODES)})")
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


def coherence_loss(best_similarity: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − cos(embedding, its nearest prototype)."""
    return (1 - best_similarity).mean()
