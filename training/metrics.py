"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO (MVTec definition) and F1-max.

Every curve comes from sorting the scores once, never from thresholding the maps again and again. A category of
~600 maps at 256² is ~40 M pixels: the normal pixels' scores are sorted (a value sort, ~0.5 s; an ``argsort`` of
all pixels would take ~8 s) and the far fewer defect pixels are located among them with binary search.

Definitions, matched exactly by the tests:
- AUROC is the trapezoid area of the ROC curve over all distinct thresholds (ties count half), equal to
  scikit-learn's ``roc_auc_score``.
- AUPRO follows the MVTec AD evaluation code (Bergmann et al., ``pro_curve_util.compute_pro`` and ``trapezoid``):
  regions are 8-connected components of each mask, every region weighs the same whatever its size, the false
  positive rate counts the normal pixels of all images, and the area under PRO(FPR) on [0, ``fpr_limit``]
  (interpolated at the limit) is divided by ``fpr_limit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class MetricError(ValueError):
    """A metric that is undefined for its inputs (one class only, NaN scores, mismatched shapes)."""


@dataclass(frozen=True)
class _Split:
    """Scores split by class and sorted ascending; ``pos_order`` maps sorted defects back to their input order."""

    neg: np.ndarray
    pos: np.ndarray
    pos_order: np.ndarray

    def at_or_above(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(false positives, true positives) when a score >= threshold is called a defect."""
        fp = self.neg.size - np.searchsorted(self.neg, thresholds, side="left")
        tp = self.pos.size - np.searchsorted(self.pos, thresholds, side="left")
        return fp, tp


@dataclass(frozen=True)
class PixelMetrics:
    """Pixel-level results, with curves thinned for plotting (the metrics themselves use every threshold)."""

    auroc: float
    aupro: float
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    pro_fpr: np.ndarray  # from 0 to fpr_limit
    pro: np.ndarray


def _split(positive: np.ndarray, scores: np.ndarray) -> _Split:
    positive = np.asarray(positive).reshape(-1) > 0
    scores = np.asarray(scores).reshape(-1)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    if positive.shape != scores.shape:
        raise MetricError(f"{positive.size} labels but {scores.size} scores")
    if not np.isfinite(scores).all():
        raise MetricError(f"{int((~np.isfinite(scores)).sum())} of {scores.size} scores are NaN or infinite")
    neg = scores[~positive]  # a copy, so sorting in place leaves the caller's array alone
    neg.sort()
    pos = scores[positive]
    pos_order = np.argsort(pos, kind="stable")
    return _Split(neg, pos[pos_order], pos_order)


def _auroc(split: _Split, what: str) -> float:
    """Mann-Whitney form of the ROC area: P(defect > normal) + ½ P(tie), identical to the trapezoid rule."""
    if split.pos.size == 0 or split.neg.size == 0:
        message = f"{what} needs normal and defect samples (got {split.neg.size} normal, {split.pos.size} defect)"
        raise MetricError(message)
    below = np.searchsorted(split.neg, split.pos, side="left").astype(np.float64)
    tied = np.searchsorted(split.neg, split.pos, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (split.pos.size * split.neg.size))


def _curve(split: _Split, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at descending thresholds, starting at (0, 0)."""
    fp, tp = split.at_or_above(thresholds)
    fpr = np.concatenate([[0.0], fp / max(split.neg.size, 1)])
    tpr = np.concatenate([[0.0], tp / max(split.pos.size, 1)])
    return fpr, tpr


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the image-level ROC curve; label 1 = defect, higher score = more anomalous."""
    return _auroc(_split(labels, scores), "image AUROC")


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    split = _split(labels, scores)
    _auroc(split, "a ROC curve")  # same class check
    return _curve(split, np.unique(np.concatenate([split.neg, split.pos]))[::-1])


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds, and that threshold (a score ≥ it is called a defect; the highest if tied)."""
    split = _split(labels, scores)
    if split.pos.size == 0:
        raise MetricError("F1 needs at least one defect sample (got none)")
    thresholds = np.unique(np.concatenate([split.neg, split.pos]))[::-1]
    fp, tp = split.at_or_above(thresholds)
    f1 = 2.0 * tp / (tp + fp + split.pos.size)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def _maps_and_masks(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim == 2 and maps.ndim == 2:  # a single map
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise MetricError(f"masks {masks.shape} and maps {maps.shape} must both be (N, H, W)")
    return masks > 0, maps


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Area under the ROC curve of all pixels of all maps pooled (mask > 0 = defect pixel)."""
    masks, maps = _maps_and_masks(masks, maps)
    return _auroc(_split(masks, maps), "pixel AUROC")


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """1 / (area of its region) for every defect pixel in flat (image by image, row-major) order; region count."""
    weights, n_regions = [], 0
    for mask in masks:
        if not mask.any():
            continue
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        areas = np.bincount(labels.reshape(-1), minlength=count).astype(np.float64)
        weights.append(1.0 / areas[labels[mask]])
        n_regions += count - 1
    return (np.concatenate(weights) if weights else np.empty(0)), n_regions


def _pro_curve(split: _Split, weights: np.ndarray, n_regions: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """PRO(FPR) at the distinct normal-pixel scores, from FPR 0 to just past ``limit``.

    Each distinct normal score v moves the curve from (FPR above v, PRO of defects > v) to (FPR at v, PRO of
    defects ≥ v); defect-only thresholds between them are vertical steps that add no area.
    """
    n_neg = split.neg.size
    last = split.neg[n_neg - min(n_neg, int(np.ceil(limit * n_neg)))]  # the normal score where FPR reaches limit
    top = split.neg[np.searchsorted(split.neg, last, side="left") :][::-1]  # normals ≥ it, descending
    ends = np.append(np.flatnonzero(top[1:] != top[:-1]), top.size - 1)
    values, fpr = top[ends], (ends + 1) / n_neg
    coverage = np.concatenate([[0.0], np.cumsum(weights[split.pos_order][::-1])]) / n_regions
    above = split.pos.size - np.searchsorted(split.pos, values, side="right")
    at_or_above = split.pos.size - np.searchsorted(split.pos, values, side="left")
    x = np.stack([np.concatenate([[0.0], fpr[:-1]]), fpr], axis=1).reshape(-1)
    y = np.stack([coverage[above], coverage[at_or_above]], axis=1).reshape(-1)
    return x, y


def _integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Trapezoid area of y(x) on [0, limit], interpolating y at the limit as MVTec does; also the clipped curve."""
    inside = int(np.searchsorted(x, limit, side="right"))
    x_in, y_in = x[:inside], y[:inside]
    if inside < x.size and x_in[-1] < limit:
        y_end = y[inside - 1] + (y[inside] - y[inside - 1]) * (limit - x[inside - 1]) / (x[inside] - x[inside - 1])
        x_in, y_in = np.append(x_in, limit), np.append(y_in, y_end)
    return float(np.sum((x_in[1:] - x_in[:-1]) * (y_in[1:] + y_in[:-1])) / 2.0), x_in, y_in


def _thin(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep ~2·points of the curve's own points, spread along both axes (for plots only)."""
    grid = np.linspace(0.0, 1.0, points)
    keep = np.union1d(np.searchsorted(x, grid * x[-1]), np.searchsorted(y, grid * y[-1]))
    keep = np.union1d(np.clip(keep, 0, x.size - 1), [0, x.size - 1])
    return x[keep], y[keep]


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, curve_points: int = 256) -> PixelMetrics:
    """Pixel AUROC and AUPRO from one sort of the pixels, plus both curves for plots.

    Args:
        masks: (N, H, W) ground truth, > 0 = defect; normal images have all-zero masks.
        maps: (N, H, W) anomaly maps, higher = more anomalous.
        fpr_limit: upper end of the FPR range AUPRO integrates over (MVTec: 0.3).
        curve_points: resolution of the returned curves.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _maps_and_masks(masks, maps)
    split = _split(masks, maps)
    auroc = _auroc(split, "pixel AUROC and AUPRO")
    weights, n_regions = _region_weights(masks)
    area, pro_fpr, pro = _integrate_to(*_pro_curve(split, weights, n_regions, fpr_limit), fpr_limit)
    picks = np.linspace(0.0, 1.0, curve_points)  # quantiles of each class: the arrays are sorted already
    quantiles = [a[np.round(picks * (a.size - 1)).astype(np.int64)] for a in (split.neg, split.pos)]
    thresholds = np.unique(np.concatenate(quantiles))
    roc_fpr, roc_tpr = _curve(split, thresholds[::-1])
    pro_fpr, pro = _thin(pro_fpr, pro, curve_points)
    return PixelMetrics(auroc, area / fpr_limit, roc_fpr, roc_tpr, pro_fpr, pro)


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve for FPR in [0, fpr_limit] (MVTec AD definition)."""
    return pixel_metrics(masks, maps, fpr_limit, curve_points=2).aupro
