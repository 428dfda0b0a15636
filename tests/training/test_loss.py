"""training.loss: per-position cosine distillation (``pixel``), its hard-mining variant (``hard``: easy positions'
gradient scaled down), the coherence term, and an unknown mode refused."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.loss import EASY_GRADIENT_SCALE, coherence_loss, distillation_loss  # noqa: E402

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed

SHAPES = [(8, 8), (16, 4), (32, 2)]  # (channels, side) fine → coarse


def _features(seed: int, n: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, s, s, generator=generator) for c, s in SHAPES]


def _loss(
    teacher: list[torch.Tensor], student: list[torch.Tensor], mode: str = "pixel", quantile: float = 0.9
) -> torch.Tensor:
    """The distillation loss without the magnitude term (its own tests are the anomaly map's)."""
    return distillation_loss(teacher, student, mode, quantile, magnitude_weight=0.0, target="point")


def _student(seed: int = 1) -> list[torch.Tensor]:
    return [f.requires_grad_() for f in _features(seed)]


@pytest.mark.parametrize("mode", ["pixel", "hard"])
def test_distillation_loss_is_zero_for_identical_features(mode: str) -> None:
    teacher = _features(0)
    loss = _loss(teacher, [f.clone() for f in teacher], mode=mode)
    assert loss.shape == ()
    assert abs(float(loss)) < 1e-5


@pytest.mark.parametrize("mode", ["pixel", "hard"])
def test_distillation_loss_is_positive_and_differentiable_for_different_features(mode: str) -> None:
    student = _student()
    loss = _loss(_features(0), student, mode=mode)
    assert 0 < loss.item() <= 2 * len(SHAPES)
    loss.backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0 for s in student)


def test_pixel_loss_is_the_sum_over_scales_of_the_mean_cosine_distance() -> None:
    teacher, student = _features(0), _features(1)
    expected = sum((1 - F.cosine_similarity(t, s, dim=1)).mean() for t, s in zip(teacher, student, strict=True))
    torch.testing.assert_close(_loss(teacher, student, mode="pixel"), expected)


def test_pixel_loss_is_scale_invariant_per_position() -> None:
    teacher, student = _features(0), _features(1)
    scaled = [s * torch.rand(s.shape[0], 1, *s.shape[2:]).add(0.5) for s in student]
    torch.testing.assert_close(_loss(teacher, scaled), _loss(teacher, student))


def test_hard_loss_has_the_pixel_form_and_lies_between_pixel_mean_and_worst_position() -> None:
    teacher, student = _features(0), _features(1)
    pixel = _loss(teacher, student, mode="pixel")
    hard = _loss(teacher, student, mode="hard")
    worst = sum((1 - F.cosine_similarity(t, s, dim=1)).max() for t, s in zip(teacher, student, strict=True))
    assert float(pixel) <= float(hard) <= float(worst)


def test_hard_loss_scales_down_the_gradient_of_easy_positions() -> None:
    """Per position, the gradient of the loss w.r.t. that position's distance: ``pixel`` gives every position the same
    weight; ``hard`` gives positions below the 0.9-quantile of distance one tenth of the weight of the hard ones."""
    teacher = _features(0)[:1]
    generator = torch.Generator().manual_seed(1)
    student = teacher[0] + 0.6 * torch.randn(teacher[0].shape, generator=generator)  # mostly easy, varied
    distance = (1 - F.cosine_similarity(teacher[0], student, dim=1)).flatten()
    cutoff = torch.quantile(distance, 0.9)
    easy, hard = distance < cutoff, distance >= cutoff
    assert easy.sum() > 0 and hard.sum() > 0

    def position_grads(mode: str) -> torch.Tensor:
        s = student.clone().requires_grad_()
        _loss(teacher, [s], mode=mode, quantile=0.9).backward()
        return s.grad.norm(dim=1).flatten()

    pixel_grad, hard_grad = position_grads("pixel"), position_grads("hard")
    ratio = hard_grad / pixel_grad  # same distance function, so the ratio is the position's relative weight
    assert torch.all(ratio[easy] < ratio[hard].min())
    torch.testing.assert_close(ratio[easy] / ratio[hard].mean(), torch.full_like(ratio[easy], EASY_GRADIENT_SCALE))
    torch.testing.assert_close(ratio[hard], torch.full_like(ratio[hard], float(ratio[hard].mean())))
    assert torch.all(hard_grad[easy] < pixel_grad[easy])  # easy positions: smaller gradient than under ``pixel``
    assert torch.all(hard_grad[hard] > pixel_grad[hard])  # the freed weight goes to the hard ones


def test_unknown_loss_mode_is_a_value_error_naming_the_modes() -> None:
    with pytest.raises(ValueError, match="pixel") as caught:
        _loss(_features(0), _features(1), mode="l2")
    assert "l2" in str(caught.value) and "hard" in str(caught.value)


@pytest.mark.parametrize("target", ["global", "group"])
@pytest.mark.parametrize("mode", ["pixel", "hard"])
def test_loose_targets_are_zero_for_identical_features_and_differentiable_otherwise(target: str, mode: str) -> None:
    teacher = _features(0)
    same = distillation_loss(teacher, [f.clone() for f in teacher], mode, 0.9, 0.0, target)
    assert same.shape == () and abs(float(same)) < 1e-5
    student = _student()
    loss = distillation_loss(teacher, student, mode, 0.9, 0.0, target)
    assert 0 < loss.item() <= 2 * len(SHAPES)
    loss.backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0 for s in student)


def test_global_target_is_one_cosine_per_scale_map_and_hard_mining_keeps_its_value() -> None:
    teacher, student = _features(0), _features(1)
    expected = sum(
        (1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean()
        for t, s in zip(teacher, student, strict=True)
    )
    torch.testing.assert_close(distillation_loss(teacher, student, "pixel", 0.9, 0.0, "global"), expected)
    torch.testing.assert_close(distillation_loss(teacher, student, "hard", 0.9, 0.0, "global"), expected)


def test_global_target_with_hard_mining_scales_down_the_gradient_of_easy_positions() -> None:
    teacher = _features(0)[:1]
    student = teacher[0] + 0.6 * torch.randn(teacher[0].shape, generator=torch.Generator().manual_seed(1))
    distance = (1 - F.cosine_similarity(teacher[0], student, dim=1)).flatten()
    easy = distance < torch.quantile(distance, 0.9)

    def position_grads(mode: str) -> torch.Tensor:
        s = student.clone().requires_grad_()
        distillation_loss(teacher, [s], mode, 0.9, 0.0, "global").backward()
        return s.grad.norm(dim=1).flatten()

    ratio = position_grads("hard") / position_grads("pixel")
    torch.testing.assert_close(ratio[easy], torch.full_like(ratio[easy], EASY_GRADIENT_SCALE))
    torch.testing.assert_close(ratio[~easy], torch.ones_like(ratio[~easy]))


def test_group_target_compares_all_scales_at_once_on_the_finest_grid() -> None:
    """Scaling one scale's student map changes the per-scale cosines not at all, the joined cosine does: the group
    target lets the scales trade error; it is weighted as many comparisons as there are scales."""
    teacher, student = _features(0), _features(1)
    finest = teacher[0].shape[-2:]
    joined = [
        torch.cat([F.interpolate(m, size=finest, mode="bilinear", align_corners=False) for m in maps], dim=1)
        for maps in (teacher, student)
    ]
    expected = len(SHAPES) * (1 - F.cosine_similarity(joined[0], joined[1], dim=1)).mean()
    torch.testing.assert_close(distillation_loss(teacher, student, "pixel", 0.9, 0.0, "group"), expected)
    louder = [student[0] * 3, *student[1:]]
    torch.testing.assert_close(_loss(teacher, louder), _loss(teacher, student))
    group = distillation_loss(teacher, student, "pixel", 0.9, 0.0, "group")
    assert not torch.isclose(distillation_loss(teacher, louder, "pixel", 0.9, 0.0, "group"), group)


def test_unknown_loss_target_is_a_value_error_naming_the_targets() -> None:
    with pytest.raises(ValueError, match="point") as caught:
        distillation_loss(_features(0), _features(1), "pixel", 0.9, 0.0, "pairs")
    assert "pairs" in str(caught.value) and "group" in str(caught.value)


def test_coherence_loss_is_zero_on_the_manifold_and_grows_with_distance() -> None:
    assert float(coherence_loss(torch.ones(2, 3, 3))) == 0.0
    near, far = coherence_loss(torch.full((2, 3, 3), 0.9)), coherence_loss(torch.full((2, 3, 3), 0.2))
    torch.testing.assert_close(near, torch.tensor(0.1))
    assert float(far) > float(near)
