"""The defect-type probe's helpers: its descriptor at 3 × 3 is the model's, and its σ change composes Gaussians."""

from __future__ import annotations

import torch

from training.anomaly_map import GaussianBlur
from training.memory import patch_descriptors
from training.research.defect_types import blur_to, pooled_descriptors


def test_pooled_descriptors_at_three_are_the_memory_descriptors() -> None:
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 6, 8, 8, generator=generator)]
    assert torch.allclose(pooled_descriptors(features, 3), patch_descriptors(features))
    assert pooled_descriptors(features, 5).shape == (2, 10, 16, 16)
    assert not torch.allclose(pooled_descriptors(features, 5), patch_descriptors(features))


def test_blur_to_a_larger_sigma_matches_blurring_once() -> None:
    image = torch.zeros(1, 1, 96, 96)
    image[0, 0, 48, 48] = 1.0
    at_four = GaussianBlur(4)(image)[:, 0]
    at_eight = GaussianBlur(8)(image)[:, 0]
    assert torch.allclose(blur_to(at_four, 8, 4), at_eight, atol=1e-4)
    assert blur_to(at_four, 4, 4) is at_four
