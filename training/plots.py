"""How an evaluation report looks: ROC/PRO curves, score histograms, heatmap galleries (PNG, Agg backend) and the
markdown table and README that explain them.

Everything here takes numbers already computed (arrays, the ``metrics.json`` dict) and only draws or formats
them, so a change of style can never change a metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no global backend, no window

DPI = 90


@dataclass(frozen=True)
class Curve:
    """One labelled curve: x, y and the area figure shown in the legend (None when undefined)."""

    x: np.ndarray
    y: np.ndarray
    area: float | None


@dataclass(frozen=True)
class Tile:
    """One gallery case: the model input, its anomaly map, its ground-truth mask and a caption."""

    image: np.ndarray  # (S, S, 3) uint8
    anomaly_map: np.ndarray  # (S, S) float
    mask: np.ndarray  # (S, S) 0/1
    caption: str


def _legend_label(name: str, area: float | None) -> str:
    return f"{name} ({'n/a' if area is None else f'{area:.3f}'})"


def plot_curves(
    image_roc: Mapping[str, Curve],
    pixel_roc: Mapping[str, Curve],
    pro: Mapping[str, Curve],
    fpr_limit: float,
    path: Path,
) -> None:
    """Image ROC, pixel ROC and PRO (up to ``fpr_limit``) side by side, one line per category."""
    fig = Figure(figsize=(16, 5.2))
    axes = fig.subplots(1, 3)
    panels = (
        (image_roc, "Image-level ROC (legend: AUROC)", "true positive rate (defect images found)", 1.0),
        (pixel_roc, "Pixel-level ROC (legend: AUROC)", "true positive rate (defect pixels found)", 1.0),
        (pro, f"PRO curve, FPR ≤ {fpr_limit:g} (legend: AUPRO)", "per-region overlap", fpr_limit),
    )
    for ax, (curves, title, ylabel, xmax) in zip(axes, panels, strict=True):
        for name, curve in curves.items():
            ax.plot(curve.x, curve.y, label=_legend_label(name, curve.area), linewidth=1.6)
        if xmax == 1.0:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set(xlim=(0, xmax), ylim=(0, 1.01), title=title, xlabel="false positive rate", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "undefined (no defect pixels)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_histograms(
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]], thresholds: Mapping[str, float | None], path: Path
) -> None:
    """Per category, the image scores of normal and defect test images, with the F1-max threshold."""
    names = list(scores)
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    fig = Figure(figsize=(5.5 * columns, 3.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        normal, defect = scores[name]
        both = np.concatenate([normal, defect])
        bins = np.linspace(both.min(), both.max() if both.max() > both.min() else both.min() + 1.0, 31)
        ax.hist(normal, bins=bins, alpha=0.6, color="tab:blue", label=f"normal ({normal.size})")
        ax.hist(defect, bins=bins, alpha=0.6, color="tab:red", label=f"defect ({defect.size})")
        threshold = thresholds.get(name)
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="F1-max threshold")
        ax.set(title=name, xlabel="image anomaly score", ylabel="test images")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle("Image scores: normal vs defect (less overlap = better separation)")
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))
    fig.savefig(path, dpi=DPI)


def plot_gallery(
    category: str, rows: Sequence[tuple[str, Sequence[Tile]]], value_range: tuple[float, float], path: Path
) -> None:
    """Rows of cases, each shown as the input image and the heatmap over it, the true defect outlined.

    All tiles share one colour scale (``value_range``), so a hotter tile really has a higher anomaly map.
    """
    columns = max([len(tiles) for _, tiles in rows] + [1])
    fig = Figure(figsize=(2.6 * 2 * columns + 1.2, 3.3 * len(rows)), layout="constrained")
    fig.suptitle(f"{category}: image | heatmap (white outline = true defect; one colour scale)", fontsize=13)
    low, high = value_range
    for subfigure, (title, tiles) in zip(np.atleast_1d(fig.subfigures(len(rows), 1)), rows, strict=True):
        subfigure.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
        axes = subfigure.subplots(1, 2 * columns, squeeze=False)[0]
        for ax in axes:
            ax.axis("off")
        if not tiles:
            axes[0].text(0.0, 0.5, "(no such cases)", fontsize=10, transform=axes[0].transAxes)
        for column, tile in enumerate(tiles):
            plain, overlay = axes[2 * column], axes[2 * column + 1]
            plain.imshow(tile.image)
            overlay.imshow(tile.image)
            heat = overlay.imshow(tile.anomaly_map, cmap="jet", alpha=0.5, vmin=low, vmax=high)
            for ax in (plain, overlay):
                if tile.mask.any():
                    ax.contour(tile.mask, levels=[0.5], colors="white", linewidths=1.2)
            plain.set_title(tile.caption, fontsize=8, loc="left")
        if tiles:
            subfigure.colorbar(heat, ax=axes, shrink=0.8, pad=0.01, label="anomaly map")
    fig.savefig(path, dpi=DPI)


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


_COLUMNS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "image_f1_max": "image F1-max",
    "n_test": "test images",
}


def markdown_table(metrics: dict) -> str:
    """``metrics.json`` as a markdown table, one row per category and the mean (n_test there is the total)."""
    lines = [
        "| category | " + " | ".join(_COLUMNS.values()) + " | category recognised |",
        "|---" * (len(_COLUMNS) + 2) + "|",
    ]
    rows = [*metrics["categories"].items(), ("**mean**", metrics["mean"])]
    for name, entry in rows:
        recognised = metrics["details"].get(name, {}).get("category_recognition_accuracy")
        if name == "**mean**":
            recognised = metrics["category_recognition_accuracy"]
        cells = [_fmt(entry[key]) for key in _COLUMNS] + [_fmt(recognised)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_README = """# Evaluation report

{n_images} test images of {n_categories} categories at {size}×{size} px, scored in {seconds:.0f} s.
Produced by `training.evaluate.evaluate_scorer` (`python -m training evaluate RUN --data ROOT --report DIR`).

{table}
## Files
- `metrics.json`: the numbers above. `categories.<name>` and `mean` hold `image_auroc`, `pixel_auroc`, `aupro`,
  `image_f1_max`, `n_test` (in `mean`, the total; the other means are unweighted over categories; `null` =
  undefined, e.g. a category without defect images, see `warnings`). `details.<name>` adds per-defect-type image
  AUROC, the F1-max threshold, median scores and category-recognition accuracy.
- `metrics.md`: the table above.
- `scores.csv`: one row per test image: category, defect type, label (1 = defect), image score, map maximum,
  defect area fraction, the category the model recognised and the file path. Sort it to find any image.
- `curves.png`: image ROC, pixel ROC and PRO curve (up to FPR {fpr_limit:g}) with one line per category.
- `histograms.png`: image scores of normal (blue) and defect (red) test images per category, with the F1-max
  threshold; overlap is where the model confuses the two.
- `gallery_<category>.png`: per category, the highest-scoring defects (caught), the lowest-scoring defects
  (missed first), the highest-scoring normal images (false alarms); each case as the model input (squashed to
  {size}×{size}) and its heatmap, the true defect outlined in white, all tiles of a category on one colour
  scale. Captions: file, defect type, score and rank among the category's test images (1 = most anomalous).

## Definitions
- Image AUROC: area under the ROC of image scores (defect vs normal test images); 0.5 = chance, 1 = perfect.
- Pixel AUROC: the same over all pixels of all test images (defect pixel = inside a ground-truth mask).
- AUPRO: mean overlap of each connected defect region with the thresholded map, against the false positive rate
  of normal pixels; area up to FPR {fpr_limit:g}, divided by {fpr_limit:g} (MVTec AD). Small defects count as
  much as large ones, which pixel AUROC does not.
- Image F1-max: best F1 of "defect" vs "normal" over all score thresholds (an optimistic, threshold-tuned figure).
- Category recognised: share of test images whose most similar category centroid is their own category.
{warnings}"""


def readme_text(metrics: dict) -> str:
    """The report folder's README: the table, what each file shows, and the metric definitions."""
    warnings = "".join(f"\n- {w}" for w in metrics["warnings"])
    return _README.format(
        n_images=metrics["n_images"],
        n_categories=len(metrics["categories"]),
        size=metrics["image_size"],
        seconds=metrics["seconds"],
        table=markdown_table(metrics),
        fpr_limit=metrics["fpr_limit"],
        warnings=f"\n## Warnings{warnings}\n" if warnings else "",
    )
