"""The defect-type probe's pieces: the memory descriptor's averaging width (3 is the model's) and its σ change,
which composes Gaussians."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import torch.nn.functional as F  # noqa: E402

from tests.research.probes import load_probe  # noqa: E402
from training.anomaly_map import GaussianBlur  # noqa: E402
from training.memory import patch_descriptors, training_patches  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed
blur_to = load_probe("defect_types").blur_to


def test_patch_descriptors_average_over_the_pool_width_three_by_default() -> None:
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 6, 8, 8, generator=generator)]
    assert torch.allclose(patch_descriptors(features), patch_descriptors(features, 3))
    assert torch.allclose(patch_descriptors(features, 3)[:, :4], F.avg_pool2d(features[0], 3, 1, 1))
    assert torch.allclose(patch_descriptors(features, 1)[:, :4], features[0])
    assert patch_descriptors(features, 5).shape == (2, 10, 16, 16)
    assert not torch.allclose(patch_descriptors(features, 5), patch_descriptors(features))
    rows = training_patches(features, pool=5)
    assert rows.shape == (2 * 16 * 16, 10)
    assert torch.allclose(rows[:256].float(), patch_descriptors(features, 5)[0].flatten(1).T, atol=1e-2)


def test_blur_to_a_larger_sigma_matches_blurring_once() -> None:
    image = torch.zeros(1, 1, 96, 96)
    image[0, 0, 48, 48] = 1.0
    at_four = GaussianBlur(4)(image)[:, 0]
    at_eight = GaussianBlur(8)(image)[:, 0]
    assert torch.allclose(blur_to(at_four, 8, 4), at_eight, atol=1e-4)
    assert blur_to(at_four, 4, 4) is at_four
