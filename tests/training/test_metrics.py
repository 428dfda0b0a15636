"""training.metrics against references: scikit-learn for AUROC and ROC, hand-derived AUPRO cases, a direct
threshold-by-threshold AUPRO of the MVTec definition, and F1-max on a case small enough to check by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

sklearn_metrics = pytest.importorskip("sklearn.metrics")

from training.metrics import (  # noqa: E402
    MetricError,
    aupro,
    f1_max,
    image_auroc,
    pixel_auroc,
    pixel_metrics,
    roc_curve,
)

pytestmark = pytest.mark.torch  # the training half: runs where the training extras are installed


def test_image_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels, scores = rng.integers(0, 2, 60), rng.integers(0, 5, 60).astype(np.float32)  # many ties
        assert image_auroc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_roc_curve_matches_sklearn_points() -> None:
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, 40), np.round(rng.random(40), 1)
    fpr, tpr = roc_curve(labels, scores)
    ref_fpr, ref_tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_pixel_auroc_pools_all_pixels_like_sklearn() -> None:
    rng = np.random.default_rng(2)
    masks = (rng.random((4, 16, 16)) > 0.85).astype(np.uint8)
    maps = (rng.random((4, 16, 16)) + 0.4 * masks).astype(np.float32)
    expected = sklearn_metrics.roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_weighs_every_region_equally_whatever_its_size() -> None:
    # Image 1 is normal: 10 pixels scored 0.95, 0.85, ..., 0.05. Image 2: region R1 = 1 pixel (0.99), region
    # R2 = 3 pixels (0.91, 0.91, 0.01), separated by a normal pixel; its 6 normal pixels score 0.
    # 16 normal pixels: FPR steps of 1/16. PRO: 0.5 at FPR 0 (R1 found), 5/6 from FPR 1/16 (2/3 of R2 too), 1 only
    # at FPR 10/16. Area on [0, 0.3]: 0.5 * 1/16 + 5/6 * (0.3 - 1/16) = 11/48; normalised: 11/48 / 0.3 = 55/72.
    # (Pixel-wise TPR would plateau at 3/4, not 5/6.)
    masks = np.zeros((2, 1, 10), np.uint8)
    masks[1, 0, [0, 2, 3, 4]] = 1
    maps = np.zeros((2, 1, 10), np.float32)
    maps[0, 0] = np.arange(0.95, 0.0, -0.1)
    maps[1, 0, [0, 2, 3, 4]] = [0.99, 0.91, 0.91, 0.01]
    assert aupro(masks, maps) == pytest.approx(55 / 72, abs=1e-9)


def test_aupro_regions_are_eight_connected() -> None:
    # Diagonal neighbours (0,0) and (1,1) are one region of 2 pixels; (0,3) is a second region. Only (0,0) scores
    # above the normal pixels, so PRO is (1/2 + 0) / 2 = 1/4 over the whole FPR range (4-connectivity: 1/3).
    masks = np.array([[[1, 0, 0, 1], [0, 1, 0, 0]]], np.uint8)
    maps = np.where(masks > 0, 0.1, 0.2).astype(np.float32)
    maps[0, 0, 0] = 0.9
    assert aupro(masks, maps) == pytest.approx(0.25, abs=1e-12)


def test_aupro_interpolates_a_tied_threshold_at_the_limit() -> None:
    # Every pixel ties: one threshold moves the curve from (0, 0) straight to (1, 1); the area under y = x on
    # [0, L], divided by L, is L / 2.
    masks = np.array([[[1, 0, 0, 0]]], np.uint8)
    maps = np.full(masks.shape, 0.5, np.float32)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.15, abs=1e-12)
    assert aupro(masks, maps, fpr_limit=0.1) == pytest.approx(0.05, abs=1e-12)


def _aupro_by_thresholding(masks: np.ndarray, maps: np.ndarray, limit: float) -> float:
    """The MVTec definition written plainly: threshold at every distinct score, average overlap per region."""
    regions, normal = [], masks == 0
    for i, mask in enumerate(masks):
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        regions += [(i, labels == k) for k in range(1, count)]
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        found = maps >= threshold
        fpr = found[normal].mean()
        pro = np.mean([found[i][region].mean() for i, region in regions])
        points.append((fpr, pro))
    x, y = np.array(points).T
    inside = x <= limit
    area = np.trapezoid(y[inside], x[inside]) if hasattr(np, "trapezoid") else np.trapz(y[inside], x[inside])
    last, after = np.flatnonzero(inside)[-1], np.flatnonzero(~inside)
    if after.size and x[last] < limit:
        nxt = after[0]
        y_end = y[last] + (y[nxt] - y[last]) * (limit - x[last]) / (x[nxt] - x[last])
        area += (limit - x[last]) * (y[last] + y_end) / 2
    return area / limit


@pytest.mark.parametrize("limit", [0.3, 0.05])
def test_aupro_matches_the_definition_on_random_maps_with_ties(limit: float) -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 12, 12), np.uint8)
    for image, y, x, h, w in [(0, 1, 1, 3, 4), (0, 7, 6, 4, 2), (1, 4, 4, 1, 1), (2, 0, 8, 5, 4)]:
        masks[image, y : y + h, x : x + w] = 1
    maps = np.round(rng.random(masks.shape) + 0.5 * masks, 1).astype(np.float32)  # rounding makes ties
    assert aupro(masks, maps, limit) == pytest.approx(_aupro_by_thresholding(masks, maps, limit), abs=1e-9)


def test_pixel_metrics_curves_span_their_ranges() -> None:
    rng = np.random.default_rng(4)
    masks = (rng.random((3, 20, 20)) > 0.9).astype(np.uint8)
    result = pixel_metrics(masks, rng.random((3, 20, 20)) + masks, fpr_limit=0.3)
    assert result.roc_fpr[0] == 0.0 and result.roc_fpr[-1] == 1.0 and result.roc_tpr[-1] == 1.0
    assert np.all(np.diff(result.roc_fpr) >= 0) and np.all(np.diff(result.pro) >= 0)
    assert result.pro_fpr[-1] == pytest.approx(0.3)


def test_f1_max_finds_the_best_threshold_on_a_tiny_case() -> None:
    # threshold 0.8: F1 2/3; 0.4: 1/2; 0.35: TP 2, FP 1, FN 0 → 4/5; 0.1: 2/3.
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx((0.8, 0.35))


def test_metrics_refuse_inputs_they_are_undefined_for() -> None:
    with pytest.raises(MetricError, match="needs normal and defect"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="NaN or infinite"):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(MetricError, match="needs normal and defect"):
        aupro(np.zeros((2, 4, 4)), np.ones((2, 4, 4)))
    with pytest.raises(MetricError, match="must both be"):
        pixel_auroc(np.zeros((2, 4, 4)), np.ones((2, 4, 5)))
    with pytest.raises(MetricError, match="at least one defect"):
        f1_max([0, 0], [0.3, 0.4])
