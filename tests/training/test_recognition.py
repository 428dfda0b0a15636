"""training.recognition: per-scale normalised descriptors, k-means centroids per category, best-centroid similarity."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.recognition import category_similarity, fit_centroids, pooled_descriptor  # noqa: E402

pytestmark = pytest.mark.torch


def _features(seed: int, n: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n, c, s, s, generator=generator) for c, s in ((8, 8), (16, 4), (32, 2))]


def test_descriptor_is_unit_length_and_no_scale_drowns_the_others() -> None:
    features = _features(0)
    descriptor = pooled_descriptor(features)
    assert descriptor.shape == (3, 8 + 16 + 32)
    torch.testing.assert_close(descriptor.norm(dim=1), torch.ones(3))
    louder = [features[0], features[1], 100 * features[2]]  # a wide-range scale counts no more than the others
    torch.testing.assert_close(pooled_descriptor(louder), descriptor)


def _clusters(centres: torch.Tensor, per_centre: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = centres.repeat_interleave(per_centre, dim=0) + 0.05 * torch.randn(
        len(centres) * per_centre, centres.shape[1], generator=generator
    )
    return torch.nn.functional.normalize(points, dim=1)


def test_a_category_made_of_two_set_ups_is_recognised_by_its_nearer_centroid() -> None:
    # category 0: two far-apart clusters (dark and bright series); category 1: one cluster near the dark one
    axes = torch.eye(6)
    dark, bright, other = axes[0], axes[1], torch.nn.functional.normalize(axes[0] + 0.5 * axes[2], dim=0)
    points = torch.cat([_clusters(torch.stack([dark, bright]), 20, 0), _clusters(other[None], 20, 1)])
    ids = torch.tensor([0] * 40 + [1] * 20)
    one = fit_centroids(points, ids, 2, per_category=1)
    two = fit_centroids(points, ids, 2, per_category=2)
    assert one.shape == (2, 6) and two.shape == (4, 6)
    queries = _clusters(torch.stack([dark, bright, other]), 5, 2)
    truth = torch.tensor([0] * 10 + [1] * 5)
    with_one = category_similarity(queries, one, 1).argmax(dim=1)
    with_two = category_similarity(queries, two, 2).argmax(dim=1)
    assert torch.equal(with_two, truth)
    assert not torch.equal(with_one, truth)  # one mean centroid of two set-ups: dark images go to category 1
    torch.testing.assert_close(fit_centroids(points, ids, 2, per_category=2), two)  # deterministic


def test_a_category_with_fewer_images_than_centroids_repeats_them() -> None:
    points = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    ids = torch.tensor([0, 0, 0, 1, 1])
    centroids = fit_centroids(points, ids, 2, per_category=4)
    assert centroids.shape == (8, 4)
    own = category_similarity(points, centroids, 4)[torch.arange(5), ids]
    torch.testing.assert_close(own, torch.ones(5))  # every image is one of its category's centroids
    with pytest.raises(ValueError, match="category index 2"):
        fit_centroids(points, ids, 3, per_category=4)
