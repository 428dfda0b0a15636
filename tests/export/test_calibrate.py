"""Calibration rules on known score lists, the holdout split and the test-set reports (no torch, no graph)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from model_store.manifest import GLOBAL_KEY
from training.calibrate import (
    CalibrationError,
    FileScores,
    calibrate,
    calibration_sets,
    category_calibration,
    f1_max_threshold,
    holdout_split,
    recognition_report,
    threshold_at_far,
)
from training.data import DatasetIndex, Sample


def _train(category: str, count: int, root: str = "/data") -> list[Sample]:
    folder = f"{root}/{category}/train/good"
    return [Sample(Path(f"{folder}/{i:03d}.png"), category, 0, "good", None, "train") for i in range(count)]


def _scores(values) -> FileScores:
    values = np.asarray(values, np.float64)
    return FileScores(score=values, map_median=values / 4, map_max=values, similarity=np.zeros((values.size, 1)))


def test_threshold_is_the_interpolated_quantile_when_the_sample_resolves_the_rate() -> None:
    scores = np.arange(200, dtype=float)
    assert threshold_at_far(scores, 0.01) == pytest.approx(np.quantile(scores, 0.99))  # 197.01


def test_threshold_adds_a_spread_margin_when_there_are_few_images() -> None:
    scores = np.arange(1.0, 11.0)  # 10 images at 1 %: the quantile is the max region, margin 0.9 std
    expected = np.quantile(scores, 0.99) + 0.9 * scores.std(ddof=1)
    assert threshold_at_far(scores, 0.01) == pytest.approx(expected)
    assert threshold_at_far(scores, 0.01) > scores.max()


def test_threshold_rule_is_continuous_where_the_margin_vanishes() -> None:
    scores = np.random.default_rng(0).normal(1.0, 0.1, 100)
    assert threshold_at_far(scores[:99], 0.01) == pytest.approx(threshold_at_far(scores, 0.01), rel=0.05)


def test_constant_or_single_scores_still_give_a_threshold_above_the_median() -> None:
    assert threshold_at_far(np.full(200, 0.5), 0.01) > 0.5
    assert threshold_at_far(np.array([0.5]), 0.01) == pytest.approx(0.5 + 0.99 * 0.005)


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")]])
def test_threshold_refuses_empty_or_nan_scores(bad) -> None:
    with pytest.raises(CalibrationError, match="cannot set a threshold"):
        threshold_at_far(np.array(bad), 0.01)


def test_category_calibration_orders_its_statistics() -> None:
    result = category_calibration(_scores(np.linspace(0.1, 0.3, 50)), 0.01, "validation/good", f1_threshold=0.4)
    assert result.score_lo == pytest.approx(0.2) and result.threshold > 0.3
    assert result.false_alarm_rate == 0.0 and result.n_images == 50 and result.f1_threshold == 0.4
    assert result.map_lo == pytest.approx(0.05)
    assert result.map_hi == pytest.approx(0.05 + 2 * (threshold_at_far(np.linspace(0.1, 0.3, 50), 0.01) - 0.05))


def test_holdout_split_is_deterministic_and_independent_of_order_and_root() -> None:
    samples = _train("wood", 67) + _train("tile", 30)
    train, held = holdout_split(samples, 0.1, 0)
    assert len(train) + len(held) == 97 and {s.category for s in held} == {"wood", "tile"}
    assert sum(s.category == "wood" for s in held) == 7 and sum(s.category == "tile" for s in held) == 3
    shuffled = _train("tile", 30, root="/elsewhere") + _train("wood", 67, root="/elsewhere")
    random.Random(1).shuffle(shuffled)
    assert sorted(s.path.name for s in holdout_split(shuffled, 0.1, 0)[1]) == sorted(s.path.name for s in held)
    assert {s.path for s in holdout_split(samples, 0.1, 1)[1]} != {s.path for s in held}


def test_holdout_keeps_its_files_when_new_files_arrive() -> None:
    before = {s.path for s in holdout_split(_train("wood", 60), 0.1, 0)[1]}
    after = {s.path for s in holdout_split(_train("wood", 70), 0.1, 0)[1]}
    assert len(before - after) <= 1  # only a file displaced by a newcomer that ranks before it can leave


def test_categories_with_validation_are_not_split() -> None:
    validation = [Sample(Path("/data/tire/validation/good/0.png"), "tire", 0, "good", None, "validation")]
    train, held = holdout_split(_train("tire", 20) + _train("wood", 20), 0.1, 0, validation=validation)
    assert {s.category for s in held} == {"wood"} and len(train) == 38


def test_calibration_sets_prefer_validation_and_refuse_a_category_without_held_out_images() -> None:
    validation = [Sample(Path("/data/tire/validation/good/0.png"), "tire", 0, "good", None, "validation")]
    index = DatasetIndex(["tire", "wood"], _train("tire", 20) + _train("wood", 20), validation, [])
    sets = calibration_sets(index, ["tire", "wood"], 0.1, 0)
    assert sets["tire"] == ("validation/good", validation)
    assert sets["wood"][0] == "train/good holdout (0.1 of train/good, seed 0)" and len(sets["wood"][1]) == 2
    with pytest.raises(CalibrationError, match=r"category 'wood': no held-out normal images"):
        calibration_sets(index, ["tire", "wood"], 0.0, 0)


def test_f1_max_threshold_on_a_known_list() -> None:
    threshold, f1 = f1_max_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert (threshold, f1) == (pytest.approx(0.35), pytest.approx(0.8))  # flag ≥ 0.35: tp 2, fp 1
    assert f1_max_threshold(np.array([0.1, 0.2]), np.array([0, 0])) is None


def test_recognition_report_counts_argmax_against_the_folder() -> None:
    similarity = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    report = recognition_report(similarity, ["a", "b", "b", "b"], ["a", "b"])
    assert report["accuracy"] == 0.75 and report["n"] == 4
    assert report["per_category"]["b"] == {"n": 3, "accuracy": pytest.approx(2 / 3), "predicted": {"a": 1, "b": 2}}


class _FakeScorer:
    """Scores files by name: held-out normals 0.1–0.2, test normals 0.15, defects 0.9; similarity from the folder."""

    def score_files(self, paths, batch_size: int = 8, progress: str | None = None) -> FileScores:
        values = np.array([0.9 if "defect" in str(p) else 0.1 + int(Path(p).stem) / 100 for p in paths])
        similarity = np.array([[1.0, 0.0] if "/a/" in str(p) else [0.0, 1.0] for p in paths])
        return FileScores(score=values, map_median=values / 2, map_max=values, similarity=similarity)


def test_calibrate_covers_every_category_and_the_global_key_and_checks_on_test_images() -> None:
    train = _train("a", 20) + _train("b", 20)
    test = [Sample(Path(f"/data/{c}/test/good/5.png"), c, 0, "good", None, "test") for c in "ab"]
    test += [Sample(Path(f"/data/{c}/test/defect/1.png"), c, 1, "defect", Path("m.png"), "test") for c in "ab"]
    index = DatasetIndex(["a", "b"], train, [], test)
    calibration, report = calibrate(_FakeScorer(), index, ["a", "b"], progress=False)
    assert set(calibration.per_category) == {"a", "b", GLOBAL_KEY}
    assert calibration.per_category[GLOBAL_KEY].n_images == 4 and calibration.target_false_alarm_rate == 0.01
    assert calibration.per_category["a"].f1_threshold == pytest.approx(0.9)
    assert report["calibration_check"]["a"]["recall"] == 1.0
    assert report["category_recognition"]["accuracy"] == 1.0
    assert any("only 2 held-out normal images" in w for w in report["calibration_warnings"])
    with pytest.raises(CalibrationError, match="target false-alarm rate"):
        calibrate(_FakeScorer(), DatasetIndex(["a"], train, [], test), ["a"], target_far=0.0)


def test_calibration_keeps_a_quantile_table_of_the_held_out_scores() -> None:
    values = np.arange(101, dtype=float)
    table = category_calibration(_scores(values), 0.01, "test").normal_quantiles
    assert table is not None and len(table) == 21
    assert table[0] == 0 and table[10] == 50 and table[-1] == 100


def test_false_alarm_probability_is_the_fraction_of_normals_at_least_as_high() -> None:
    values = np.random.default_rng(1).normal(1.0, 0.2, 400)
    calibration = category_calibration(_scores(values), 0.01, "test")
    for score in (0.7, 0.9, 1.0, 1.2, 1.35):
        expected = float((values >= score).mean())
        assert calibration.false_alarm_probability(score) == pytest.approx(expected, abs=0.03)
    assert calibration.false_alarm_probability(values.min() - 1) == 1.0
    assert calibration.false_alarm_probability(values.max() + 1) == 0.0
    probabilities = [calibration.false_alarm_probability(s) for s in np.linspace(0, 2, 50)]
    assert all(a >= b for a, b in zip(probabilities, probabilities[1:], strict=False))


def test_a_bundle_without_a_quantile_table_has_no_false_alarm_probability() -> None:
    calibration = category_calibration(_scores(np.arange(20.0)), 0.01, "test").model_copy(
        update={"normal_quantiles": None}
    )
    assert calibration.false_alarm_probability(5.0) is None


def test_recognition_floor_is_below_every_held_out_normal_by_a_margin() -> None:
    from training.unknown_parts import recognition_floor

    similarity = np.array([[0.95, 0.2], [0.9, 0.3], [0.1, 0.85], [0.2, 0.97]])
    best = similarity.max(axis=1)
    derived = recognition_floor(similarity, spreads=2.0)
    assert derived["min_similarity"] == pytest.approx(best.min() - 2.0 * best.std(ddof=1))
    assert derived["n_images"] == 4 and derived["non_part_best_max"] is None


def test_recognition_floor_comes_down_to_halfway_towards_non_part_frames() -> None:
    from training.unknown_parts import recognition_floor

    similarity = np.array([[0.95, 0.2], [0.9, 0.3], [0.1, 0.89], [0.2, 0.97]])
    far = recognition_floor(similarity, np.array([[0.3, 0.4]]))
    assert far["min_similarity"] == pytest.approx(0.5 * (0.4 + 0.89))  # lower than min − 2 spreads (≈ 0.85)
    close = recognition_floor(similarity, np.array([[0.88, 0.1]]))
    assert close["min_similarity"] == pytest.approx(recognition_floor(similarity)["min_similarity"])
    with pytest.raises(ValueError, match="recognition floor"):
        recognition_floor(np.zeros((0, 2)))


def test_non_part_frames_are_deterministic_blank_and_noise_squares() -> None:
    from training.unknown_parts import non_part_frames

    frames = non_part_frames(32)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, non_part_frames(32))
    assert (frames[0] == 0).all() and (frames[4] == 255).all()
