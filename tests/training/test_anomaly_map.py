"""training.anomaly_map: the Gaussian kernel built once as a normalised buffer, 1 − cos maps that vanish for
identical features and peak where teacher and student differ, the two score rules and the output shapes."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from training.anomaly_map import AnomalyMap, GaussianBlur, cosine_distance_maps, feature_distance_maps  # noqa: E402
from training.config import TrainConfig  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SIZE = 64
SHAPES = [(24, 16), (40, 8), (112, 4)]  # efficientnet_lite0 at 64 px: (channels, side) fine → coarse


def _map(sigma: float = 4.0, channels: tuple[int, ...] = (), **knobs: object) -> AnomalyMap:
    """The map of a config with these knobs and no patch memory; every other knob has the config's default."""
    config = TrainConfig(image_size=SIZE, map_sigma=sigma, memory_entries=0, **knobs)
    return AnomalyMap.from_config(config, channels)


def _features(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s, generator=generator) for c, s in SHAPES]


def test_gaussian_kernel_is_a_normalised_buffer_built_once() -> None:
    blur = GaussianBlur(sigma=4.0)
    buffers = dict(blur.named_buffers())
    assert set(buffers) == {"kernel_h", "kernel_v"}
    assert not list(blur.parameters())
    torch.testing.assert_close(blur.kernel_h.sum(), torch.tensor(1.0))
    torch.testing.assert_close(blur.kernel_v.flatten(), blur.kernel_h.flatten())
    assert blur.kernel_h.shape[-1] == 2 * blur.radius + 1
    kernel = blur.kernel_h
    blur(torch.rand(1, 1, SIZE, SIZE))
    assert blur.kernel_h is kernel  # not rebuilt per call


def test_gaussian_kernel_is_symmetric_and_peaks_in_the_middle() -> None:
    kernel = GaussianBlur(sigma=2.0).kernel_h.flatten()
    torch.testing.assert_close(kernel, kernel.flip(0))
    assert kernel.argmax() == len(kernel) // 2


def test_blur_preserves_a_constant_map_and_its_shape() -> None:
    constant = torch.full((2, 1, SIZE, SIZE), 0.7)
    out = GaussianBlur(sigma=4.0)(constant)
    assert out.shape == constant.shape
    torch.testing.assert_close(out, constant)


def test_blur_preserves_the_mass_of_an_interior_spot() -> None:
    spot = torch.zeros(1, 1, SIZE, SIZE)
    spot[0, 0, 32, 32] = 1.0
    out = GaussianBlur(sigma=2.0)(spot)
    torch.testing.assert_close(out.sum(), torch.tensor(1.0))
    assert out.flatten().argmax() == 32 * SIZE + 32 and out.max() < 0.1


def test_cosine_distance_is_zero_for_identical_and_two_for_opposite_features() -> None:
    features = _features()
    same = cosine_distance_maps(features, features)
    opposite = cosine_distance_maps(features, [-f for f in features])
    for (_, s), d_same, d_opp in zip(SHAPES, same, opposite, strict=True):
        assert d_same.shape == (2, 1, s, s)
        assert d_same.abs().max() < 1e-5
        torch.testing.assert_close(d_opp, torch.full_like(d_opp, 2.0))


@pytest.mark.parametrize("rule", ["max", "max_minus_mean", "topk_mean"])
def test_output_shapes_and_identical_features_give_a_zero_map_and_score(rule: str) -> None:
    features = _features(n=3)
    score, anomaly_map = _map(sigma=4.0, score=rule)(features, [f.clone() for f in features])
    assert score.shape == (3,)
    assert anomaly_map.shape == (3, 1, SIZE, SIZE)
    assert anomaly_map.abs().max() < 1e-4
    assert score.abs().max() < 1e-4


def test_a_localised_difference_puts_the_map_maximum_there() -> None:
    teacher = _features(n=1)
    student = [f.clone() for f in teacher]
    student[0][0, :, 12, 3] = -student[0][0, :, 12, 3]  # one position of the 1/4 map (16×16 grid)
    score, anomaly_map = _map(sigma=2.0)(teacher, student)
    row, col = divmod(int(anomaly_map.flatten().argmax()), SIZE)
    assert abs(row - (12 * 4 + 1.5)) <= 3 and abs(col - (3 * 4 + 1.5)) <= 3
    assert score[0] == anomaly_map.max() and score[0] > 0.1
    far = anomaly_map[0, 0, :24, 32:]
    assert far.max() < 1e-3 * score[0]


def test_score_is_per_image() -> None:
    teacher = _features(n=2)
    student = [f.clone() for f in teacher]
    student[1][1, :, 2, 2] = -student[1][1, :, 2, 2]  # only image 1 differs
    score, _ = _map(sigma=4.0)(teacher, student)
    assert score[0] < 1e-4 < score[1]


def test_topk_mean_score_is_the_mean_of_the_top_fraction_and_at_most_the_max() -> None:
    teacher, student = _features(seed=0), _features(seed=1)
    max_score, anomaly_map = _map(sigma=4.0, score="max")(teacher, student)
    topk = _map(sigma=4.0, score="topk_mean", score_topk=0.05)
    topk_score, same_map = topk(teacher, student)
    torch.testing.assert_close(same_map, anomaly_map)  # the rule changes the score, never the map
    assert topk.topk == round(0.05 * SIZE * SIZE)
    expected = anomaly_map.flatten(1).sort(dim=1, descending=True).values[:, : topk.topk].mean(dim=1)
    torch.testing.assert_close(topk_score, expected)
    torch.testing.assert_close(max_score, anomaly_map.flatten(1).max(dim=1).values)
    assert torch.all(topk_score <= max_score) and torch.all(topk_score < max_score)
    assert torch.all(topk_score >= anomaly_map.flatten(1).mean(dim=1))


def test_max_minus_mean_score_is_the_peak_above_the_maps_own_mean() -> None:
    teacher, student = _features(seed=0), _features(seed=1)
    rule = _map(sigma=4.0, score="max_minus_mean")
    score, anomaly_map = rule(teacher, student)
    flat = anomaly_map.flatten(1)
    torch.testing.assert_close(score, flat.max(dim=1).values - flat.mean(dim=1))
    torch.testing.assert_close(anomaly_map, _map(sigma=4.0)(teacher, student)[1])
    assert torch.all(score > 0)


def test_magnitude_term_sees_a_scaled_feature_that_cosine_cannot() -> None:
    teacher = _features(seed=0)
    student = [2 * f for f in teacher]  # same direction, twice the strength
    weights = [torch.full((f.shape[1],), 0.25) for f in teacher]
    cosine_only = feature_distance_maps(teacher, student)
    with_magnitude = feature_distance_maps(teacher, student, magnitude_weight=0.5, channel_weights=weights)
    assert all(m.abs().max() < 1e-5 for m in cosine_only)
    for m, t in zip(with_magnitude, teacher, strict=True):
        torch.testing.assert_close(m, 0.5 * 0.25 * t.pow(2).mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-4)
    same = feature_distance_maps(teacher, [f.clone() for f in teacher], magnitude_weight=0.5, channel_weights=weights)
    assert all(m.abs().max() < 1e-5 for m in same)


def test_anomaly_map_with_magnitude_weight_splits_its_channel_weights_per_scale() -> None:
    teacher = _features(seed=0)
    student = [2 * f for f in teacher]
    channels = tuple(c for c, _ in SHAPES)
    plain = _map(sigma=4.0)
    weighted = _map(sigma=4.0, magnitude_weight=1.0, channels=channels)
    assert plain.channel_weights is None and "channel_weights" in dict(weighted.named_buffers())
    assert [w.shape[0] for w in weighted.per_scale_channel_weights()] == list(channels)
    assert plain(teacher, student)[0].max() < 1e-4 < weighted(teacher, student)[0].min()


def test_unknown_score_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="score"):
        AnomalyMap(SIZE, 4.0, score="mean", score_topk=0.01, magnitude_weight=0.0, memory_entries=0, memory_weight=1.0)
