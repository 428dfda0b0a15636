"""Calibration: from scores of held-out normal images to the decision rule a bundle ships with.

Held-out normals are ``validation/good`` when a category has it, else a deterministic slice of ``train/good`` that
the trainer leaves out (``holdout_split``, imported by the trainer so both halves agree) — never the test set,
which only *checks* the result (F1-max threshold, false-alarm rate and recall at the threshold, category
recognition). The scores come from the exported ONNX graph on the service's decode/resize path (see
``training.onnx_graph.OnnxScorer``), so the thresholds are exactly those of what is served.

Threshold rule (target false-alarm rate ``a``; ``n`` held-out scores; ``Q`` their linearly interpolated
quantile; ``s`` their standard deviation, at least 1 % of |median|)::

    threshold = Q(1 − a) + max(0, 1 − n·a) · s

With ``n·a ≥ 1`` (≥ 100 images at 1 %) the sample resolves the rate and the quantile is used as is. With fewer
images ``Q(1 − a)`` sits at the sample maximum, and a sample of ``n`` leaves about ``1/(n+1)`` of normal parts
above its maximum — more than ``a`` — so a margin of up to one standard deviation is added, shrinking to zero as
``n`` reaches ``1/a`` (the rule is continuous in ``n``). Heatmap colours: ``map_lo`` is the median pixel of normal
maps and ``map_hi = map_lo + 2·(t_map − map_lo)`` with ``t_map`` the same rule applied to each normal image's
hottest pixel, so a normal image's hottest pixel is drawn at most mid-scale and defects saturate. The held-out
scores' quantiles at 0, 5 %, …, 100 % are kept (``normal_quantiles``) so the service can say how unusual a score is.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np

from model_store.manifest import GLOBAL_KEY, NORMAL_QUANTILE_LEVELS, Calibration, CategoryCalibration
from training.metrics import f1_max
from training.unknown_parts import recognition_floor

DEFAULT_HOLDOUT_FRACTION = 0.1
DEFAULT_HOLDOUT_SEED = 0
FEW_IMAGES = 10
"""Fewer held-out normals than this in a category is reported as a warning: its threshold is mostly margin."""


class CalibrationError(ValueError):
    """Calibration cannot be done as asked (no held-out images, bad target rate); names the category or value."""


class SampleLike(Protocol):
    path: Path
    category: str
    label: int


class DatasetLike(Protocol):
    train: list
    validation: list
    test: list


@dataclass(frozen=True)
class FileScores:
    """Per-file outputs of the graph, reduced to what calibration needs (full maps would not fit for big sets)."""

    score: np.ndarray
    map_median: np.ndarray
    map_max: np.ndarray
    similarity: np.ndarray

    def select(self, keep: np.ndarray) -> FileScores:
        return FileScores(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})


class Scorer(Protocol):
    def score_files(self, paths: Sequence[Path], batch_size: int = 8, progress: str | None = None) -> FileScores: ...


def holdout_split(
    train_samples: Sequence[SampleLike],
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
    *,
    validation: Sequence[SampleLike] = (),
) -> tuple[list, list]:
    """Split train/good into (train, holdout); the holdout calibrates categories without ``validation/good``.

    Per category, files are ranked by a hash of (seed, category, file name) and the first ``round(fraction·n)``
    (at least 1, at most n − 1, none when fraction is 0) are held out. The choice depends on neither the data
    root's location nor the order of discovery, and adding files changes it only at the margin (ranks are per file).
    Categories that have ``validation`` samples are not split: their validation/good is the held-out set.
    """
    if not 0.0 <= fraction < 1.0:
        raise CalibrationError(f"holdout fraction must be in [0, 1), got {fraction}")
    has_validation = {s.category for s in validation}
    by_category: dict[str, list] = {}
    for sample in train_samples:
        by_category.setdefault(sample.category, []).append(sample)
    held: set[int] = set()
    for category, samples in by_category.items():
        if category in has_validation or fraction == 0.0 or len(samples) < 2:
            continue
        count = min(len(samples) - 1, max(1, round(fraction * len(samples))))
        ranked = sorted(
            samples, key=lambda s: (zlib.crc32(f"{seed}:{category}:{Path(s.path).name}".encode()), str(s.path))
        )
        held.update(id(s) for s in ranked[:count])
    return [s for s in train_samples if id(s) not in held], [s for s in train_samples if id(s) in held]


def calibration_sets(
    index: DatasetLike,
    categories: Sequence[str],
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
) -> dict[str, tuple[str, list]]:
    """Per category: (source description, held-out normal samples)."""
    _, holdout = holdout_split(index.train, fraction, seed, validation=index.validation)
    sets: dict[str, tuple[str, list]] = {}
    for category in categories:
        validation = [s for s in index.validation if s.category == category and s.label == 0]
        held = [s for s in holdout if s.category == category]
        if validation:
            sets[category] = ("validation/good", validation)
        elif held:
            sets[category] = (f"train/good holdout ({fraction:g} of train/good, seed {seed})", held)
        else:
            message = (
                f"category {category!r}: no held-out normal images to calibrate on (no validation/good folder, "
                f"and a holdout fraction of {fraction:g} leaves none of its train/good images out)"
            )
            raise CalibrationError(message)
    return sets


def score_spread(scores: np.ndarray) -> float:
    """Standard deviation (ddof 1), floored at 1 % of |median| (and 1e-6) so tiny samples still have a margin."""
    scores = np.asarray(scores, np.float64)
    std = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
    return max(std, 0.01 * abs(float(np.median(scores))), 1e-6)


def threshold_at_far(scores: np.ndarray, far: float) -> float:
    """The module docstring's rule: interpolated (1 − far) quantile plus a margin that vanishes at n·far ≥ 1."""
    scores = np.asarray(scores, np.float64)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise CalibrationError(f"cannot set a threshold from {scores.size} scores (empty, or NaN/inf among them)")
    spread = score_spread(scores)
    threshold = float(np.quantile(scores, 1.0 - far)) + max(0.0, 1.0 - scores.size * far) * spread
    median = float(np.median(scores))
    return threshold if threshold > median else median + spread  # only a constant sample gets here


def category_calibration(
    scores: FileScores, far: float, source: str, f1_threshold: float | None = None
) -> CategoryCalibration:
    threshold = threshold_at_far(scores.score, far)
    map_lo = float(np.median(scores.map_median))
    map_hi = map_lo + 2.0 * (threshold_at_far(scores.map_max, far) - map_lo)
    return CategoryCalibration(
        n_images=int(scores.score.size),
        source=source,
        score_mean=float(scores.score.mean()),
        score_std=float(scores.score.std(ddof=1)) if scores.score.size > 1 else 0.0,
        score_lo=float(np.median(scores.score)),
        threshold=threshold,
        false_alarm_rate=float((scores.score > threshold).mean()),
        f1_threshold=f1_threshold,
        map_lo=map_lo,
        map_hi=map_hi,
        normal_quantiles=[float(q) for q in np.quantile(np.asarray(scores.score, np.float64), NORMAL_QUANTILE_LEVELS)],
    )


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) of ``training.metrics.f1_max`` (score ≥ threshold = defect); None without both classes."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return None
    f1, threshold = f1_max(labels, np.asarray(scores, np.float64))
    return threshold, f1


def decision_check(threshold: float, scores: np.ndarray, labels: np.ndarray) -> dict[str, float | int | None]:
    """How the calibrated threshold does on labelled test images (reported, never used to set it)."""
    flagged, labels = np.asarray(scores) > threshold, np.asarray(labels).astype(bool)
    tp = int((flagged & labels).sum())
    return {
        "n_good": int((~labels).sum()),
        "n_defect": int(labels.sum()),
        "false_alarm_rate": float(flagged[~labels].mean()) if (~labels).any() else None,
        "recall": float(flagged[labels].mean()) if labels.any() else None,
        "f1": float(2.0 * tp / (flagged.sum() + labels.sum())) if labels.any() else None,
    }


def recognition_report(similarity: np.ndarray, truth: Sequence[str], categories: Sequence[str]) -> dict[str, object]:
    """Accuracy of argmax(category_similarity) against the folder's category, overall and per category."""
    predicted = np.asarray(categories)[np.asarray(similarity).argmax(axis=1)]
    truth_array = np.asarray(truth)
    per_category: dict[str, object] = {}
    for category in categories:
        mine = truth_array == category
        if mine.any():
            confused = {str(p): int(c) for p, c in zip(*np.unique(predicted[mine], return_counts=True), strict=True)}
            per_category[category] = {
                "n": int(mine.sum()),
                "accuracy": float((predicted[mine] == category).mean()),
                "predicted": confused,
            }
    return {
        "n": int(truth_array.size),
        "accuracy": float((predicted == truth_array).mean()),
        "per_category": per_category,
    }


def calibrate(
    scorer: Scorer,
    index: DatasetLike,
    categories: Sequence[str],
    target_far: float = 0.01,
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
    progress: bool = True,
    non_part_similarity: np.ndarray | None = None,
) -> tuple[Calibration, dict[str, object]]:
    """Calibration for every category and ``GLOBAL_KEY``, and a report of how it does on the test images; with
    the held-out normals' similarities finite, the report holds the derived ``recognition_floor`` too
    (``training.unknown_parts``; ``non_part_similarity``: the graph's similarities for ``non_part_frames``)."""
    if not 0.0 < target_far < 0.5:
        raise CalibrationError(f"target false-alarm rate must be in (0, 0.5), got {target_far}")
    sets = calibration_sets(index, categories, fraction, seed)
    held = [(category, s) for category in categories for s in sets[category][1]]
    held_scores = scorer.score_files([s.path for _, s in held], progress="calibration images" if progress else None)
    held_category = np.array([category for category, _ in held])
    test = [s for s in index.test if s.category in categories]
    test_scores = (
        scorer.score_files([s.path for s in test], progress="test images" if progress else None) if test else None
    )
    test_category = np.array([s.category for s in test])
    labels = np.array([s.label for s in test], dtype=int)
    per_category: dict[str, CategoryCalibration] = {}
    checks: dict[str, object] = {}
    warnings: list[str] = []
    for key in [*categories, GLOBAL_KEY]:
        mine = np.ones(len(held), bool) if key == GLOBAL_KEY else held_category == key
        source = "held-out normal images of all categories" if key == GLOBAL_KEY else sets[key][0]
        in_test = np.ones(len(test), bool) if key == GLOBAL_KEY else test_category == key
        best = f1_max_threshold(test_scores.score[in_test], labels[in_test]) if test_scores is not None else None
        result = category_calibration(held_scores.select(mine), target_far, source, best[0] if best else None)
        per_category[key] = result
        if result.n_images < FEW_IMAGES:
            warnings.append(f"{key}: only {result.n_images} held-out normal images; its threshold is mostly margin")
        if test_scores is not None and in_test.any():
            checks[key] = decision_check(result.threshold, test_scores.score[in_test], labels[in_test])
            checks[key]["f1_max"] = best[1] if best else None
    report: dict[str, object] = {"calibration_check": checks, "calibration_warnings": warnings}
    if np.isfinite(held_scores.similarity).all() and held_scores.similarity.size:
        report["recognition_floor"] = recognition_floor(held_scores.similarity, non_part_similarity)
    if test_scores is not None:
        report["category_recognition"] = recognition_report(test_scores.similarity, list(test_category), categories)
    return Calibration(target_false_alarm_rate=target_far, per_category=per_category), report
