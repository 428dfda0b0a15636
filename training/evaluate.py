"""Evaluating any scorer on the test split: metrics per category, and a report folder a person can read alone.

A scorer is a plain function ``score_fn(images) -> (scores, maps, category_similarity)`` on uint8 NHWC batches,
so the torch model (``python -m training evaluate``) and an exported bundle (``score_fn_from_onnx``) are judged
by the same code on the same pixels (``training.data.load_images``: the service's decode and resize).

Report folder: ``metrics.json`` (the issue's schema plus details), ``metrics.md``, ``scores.csv`` (one row per
test image), ``curves.png``, ``histograms.png``, ``gallery_<category>.png`` and a ``README.md`` explaining them.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_store.bundle import MANIFEST_FILE, read_manifest
from model_store.outputs import GraphOutputs
from model_store.planner import Planner, ScoringRule
from model_store.tiling import square_map
from training import plots
from training.data import DatasetIndex, Sample, load_images, load_mask, load_rgb
from training.metrics import MetricError, f1_max, image_auroc, pixel_metrics, roc_curve

ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
GALLERY_CASES = 4


class EvaluationError(RuntimeError):
    """A scorer that returned something unusable (wrong shapes, NaN); the message names the batch's first file."""


@dataclass
class _Scored:
    """Everything the scorer said about one category's test images, kept for metrics and pictures."""

    samples: list[Sample]
    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, S, S) float32
    masks: np.ndarray  # (N, S, S) uint8 0/1
    similarity: np.ndarray | None  # (N, C)
    tiles: np.ndarray  # (N,) tiles each image was scored as (1: squashed)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def _checked(outputs: tuple, n: int, size: int, n_categories: int, where: Path) -> tuple:
    """Scores (n,), maps (n, S, S) float32 and similarity (n, C) or None, or an EvaluationError saying what is off."""
    scores, maps, similarity = outputs
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 4 and maps.shape[1] == 1:  # the ONNX layout (N, 1, S, S)
        maps = maps[:, 0]
    problem = None
    if scores.shape != (n,) or maps.shape != (n, size, size):
        problem = f"returned scores {scores.shape} and maps {maps.shape}; expected ({n},) and ({n}, {size}, {size})"
    elif not (np.isfinite(scores).all() and np.isfinite(maps).all()):
        problem = "returned NaN or infinite scores or maps"
    elif similarity is not None:
        similarity = np.asarray(similarity, dtype=np.float64)
        if similarity.shape != (n, n_categories):
            problem = f"returned category_similarity {similarity.shape}; expected ({n}, {n_categories})"
    if problem:
        raise EvaluationError(f"score_fn {problem} (batch starting with {where})")
    return scores, maps, similarity


def _score(
    score_fn: ScoreFn,
    samples: list[Sample],
    size: int,
    batch_size: int,
    bar: tqdm,
    planner: Planner,
) -> _Scored:
    """Each image scored as the service scores it without a given category (``Planner.score``: squashed, then cut
    into tiles when its recognised category is tiled), its map brought to S × S, where the masks are (the
    reference detector's pixel grid)."""
    scores, maps, masks, similarity, counts = [], [], [], [], []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]

        def run(images: np.ndarray, first: Path = batch[0].path) -> GraphOutputs:
            scores, maps, similarity = _checked(score_fn(images), len(images), size, len(planner.categories), first)
            if similarity is None:  # a scorer without recognition: every image of no known category
                similarity = np.full((len(images), len(planner.categories)), np.nan)
            return GraphOutputs.from_arrays(scores, maps, similarity)

        for merged in planner.score(run, [load_rgb(s.path) for s in batch]):
            scores.append(merged.score)
            maps.append(square_map(merged.anomaly_map, size))
            similarity.append(merged.category_similarity)
            counts.append(merged.tiles)
        masks.extend(load_mask(s, size) for s in batch)
        bar.update(len(batch))
    known = np.stack(similarity)
    known = None if np.isnan(known).all() else known  # NaN: the scorer recognises no category
    return _Scored(samples, np.array(scores), np.stack(maps), np.stack(masks), known, np.array(counts))


def _metric(fn: Callable, *args: object, warnings: list[str], what: str) -> object:
    try:
        return fn(*args)
    except MetricError as exc:
        warnings.append(f"{what}: {exc}")
        return None


def _category_report(
    name: str, scored: _Scored, model_categories: list[str], fpr_limit: float, warnings: list[str]
) -> tuple[dict, dict, dict[str, plots.Curve]]:
    """(the issue's five numbers, extra details, curves for plots) of one category."""
    labels, scores = scored.labels, scored.scores
    pixel = _metric(pixel_metrics, scored.masks, scored.maps, fpr_limit, warnings=warnings, what=f"{name} pixel")
    f1 = _metric(f1_max, labels, scores, warnings=warnings, what=f"{name} F1")
    entry = {
        "image_auroc": _metric(image_auroc, labels, scores, warnings=warnings, what=f"{name} image AUROC"),
        "pixel_auroc": pixel.auroc if pixel else None,
        "aupro": pixel.aupro if pixel else None,
        "image_f1_max": f1[0] if f1 else None,
        "n_test": len(scored.samples),
    }
    by_type = {}
    for defect_type in sorted({s.defect_type for s in scored.samples if s.label == 1}):
        chosen = np.array([s.label == 0 or s.defect_type == defect_type for s in scored.samples])
        by_type[defect_type] = _metric(image_auroc, labels[chosen], scores[chosen], warnings=[], what="")
    details = {
        "n_good": int((labels == 0).sum()),
        "n_defect": int((labels == 1).sum()),
        "f1_threshold": f1[1] if f1 else None,
        "image_auroc_by_defect_type": by_type,
        "median_score_good": float(np.median(scores[labels == 0])) if (labels == 0).any() else None,
        "median_score_defect": float(np.median(scores[labels == 1])) if (labels == 1).any() else None,
        "category_recognition_accuracy": None,
        "tiles_per_image": float(scored.tiles.mean()),
    }
    if scored.similarity is not None and name in model_categories:
        predicted = scored.similarity.argmax(axis=1)
        details["category_recognition_accuracy"] = float((predicted == model_categories.index(name)).mean())
    curves = {}
    if entry["image_auroc"] is not None:
        curves["image"] = plots.Curve(*roc_curve(labels, scores), entry["image_auroc"])
    if pixel:
        curves["pixel"] = plots.Curve(pixel.roc_fpr, pixel.roc_tpr, pixel.auroc)
        curves["pro"] = plots.Curve(pixel.pro_fpr, pixel.pro, pixel.aupro)
    return entry, details, curves


def _gallery(name: str, scored: _Scored, size: int, path: Path) -> None:
    """Highest-scoring defects, lowest-scoring defects and highest-scoring normals, on one colour scale."""
    order = np.argsort(-scored.scores, kind="stable")
    rank = {int(i): r + 1 for r, i in enumerate(order)}
    defects = [int(i) for i in order if scored.samples[i].label == 1]
    normals = [int(i) for i in order if scored.samples[i].label == 0]
    best = defects[: min(GALLERY_CASES, (len(defects) + 1) // 2)]
    worst = defects[len(best) :][::-1][:GALLERY_CASES]
    rows = [
        ("Highest-scoring defects (caught most clearly)", best),
        ("Lowest-scoring defects (missed first as the threshold rises)", worst),
        ("Highest-scoring normal images (first false alarms)", normals[:GALLERY_CASES]),
    ]
    chosen = [i for _, picks in rows for i in picks]
    images = dict(zip(chosen, load_images([scored.samples[i] for i in chosen], size, progress=False), strict=True))
    sample = scored.maps[:, ::4, ::4]
    normal_maps = sample[scored.labels == 0] if normals else sample
    low, high = float(np.percentile(normal_maps, 1)), float(np.percentile(sample, 99.9))

    def tile(i: int) -> plots.Tile:
        s = scored.samples[i]
        caption = f"{s.path.stem} · {s.defect_type}\nscore {scored.scores[i]:.4g} · rank {rank[i]}/{len(order)}"
        return plots.Tile(images[i], scored.maps[i], scored.masks[i], caption)

    plots.plot_gallery(
        name, [(title, [tile(i) for i in picks]) for title, picks in rows], (low, max(high, low + 1e-9)), path
    )


def _score_rows(scored: _Scored, model_categories: list[str]) -> list[dict[str, object]]:
    rows = []
    for i, sample in enumerate(scored.samples):
        predicted, similarity = "", ""
        if scored.similarity is not None:
            best = int(scored.similarity[i].argmax())
            predicted, similarity = model_categories[best], f"{scored.similarity[i, best]:.6g}"
        rows.append(
            {
                "category": sample.category,
                "defect_type": sample.defect_type,
                "label": sample.label,
                "score": f"{scored.scores[i]:.6g}",
                "map_max": f"{scored.maps[i].max():.6g}",
                "defect_area_fraction": f"{scored.masks[i].mean():.6g}",
                "predicted_category": predicted,
                "predicted_similarity": similarity,
                "path": str(sample.path),
            }
        )
    return rows


@dataclass
class _Report:
    """What the report folder gets, gathered category by category so only one category's maps are in memory."""

    model_categories: list[str]
    fpr_limit: float
    entries: dict[str, dict] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict[str, plots.Curve]] = field(default_factory=lambda: {"image": {}, "pixel": {}, "pro": {}})
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    rows: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    galleries: bool = True

    def add(self, name: str, scored: _Scored, size: int, report_dir: Path) -> None:
        entry, details, curves = _category_report(name, scored, self.model_categories, self.fpr_limit, self.warnings)
        self.entries[name], self.details[name] = entry, details
        for kind, curve in curves.items():
            self.curves[kind][name] = curve
        self.histograms[name] = (scored.scores[scored.labels == 0], scored.scores[scored.labels == 1])
        self.rows.extend(_score_rows(scored, self.model_categories))
        if scored.similarity is not None and name not in self.model_categories:
            self.warnings.append(f"{name}: not one of the model's categories {self.model_categories}")
        if self.galleries:
            _gallery(name, scored, size, report_dir / f"gallery_{name}.png")

    def metrics(self, size: int, seconds: float) -> dict:
        entries = list(self.entries.values())
        mean: dict[str, object] = {}
        for key in METRIC_KEYS:
            values = [e[key] for e in entries if e[key] is not None]
            mean[key] = float(np.mean(values)) if values else None
        n_images = mean["n_test"] = sum(e["n_test"] for e in entries)
        known = [(d["category_recognition_accuracy"], d["n_good"] + d["n_defect"]) for d in self.details.values()]
        known = [(accuracy, n) for accuracy, n in known if accuracy is not None]
        return {
            "categories": self.entries,
            "mean": mean,
            "category_recognition_accuracy": sum(a * n for a, n in known) / sum(n for _, n in known) if known else None,
            "tiles_per_image": sum(d["tiles_per_image"] * (d["n_good"] + d["n_defect"]) for d in self.details.values())
            / n_images,
            "details": self.details,
            "model_categories": self.model_categories,
            "image_size": size,
            "fpr_limit": self.fpr_limit,
            "n_images": n_images,
            "seconds": round(seconds, 2),
            "warnings": self.warnings,
        }

    def write(self, metrics: dict, report_dir: Path) -> None:
        thresholds = {name: details["f1_threshold"] for name, details in self.details.items()}
        curves = self.curves
        plots.plot_curves(curves["image"], curves["pixel"], curves["pro"], self.fpr_limit, report_dir / "curves.png")
        plots.plot_histograms(self.histograms, thresholds, report_dir / "histograms.png")
        with open(report_dir / "scores.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (report_dir / "metrics.md").write_text(plots.markdown_table(metrics))
        (report_dir / "README.md").write_text(plots.readme_text(metrics))


def evaluate_scorer(
    score_fn: ScoreFn,
    index: DatasetIndex,
    size: int,
    report_dir: Path,
    batch_size: int = 16,
    progress: bool = True,
    model_categories: Sequence[str] | None = None,
    fpr_limit: float = 0.3,
    scoring: ScoringRule | None = None,
    galleries: bool = True,
) -> dict:
    """Score every test image of ``index``, write the report folder and return what ``metrics.json`` holds.

    Args:
        score_fn: uint8 (N, S, S, 3) → scores (N,), maps (N, S, S) or (N, 1, S, S), category similarity (N, C)
            or None.
        index: the dataset; its test split is evaluated category by category.
        size: side S of the model input.
        report_dir: created if missing; files in it are overwritten.
        batch_size: images per ``score_fn`` call.
        progress: show a progress bar.
        model_categories: the model's category order (the similarity's columns); default ``index.categories``.
            Pass it whenever the index holds a subset of the model's categories.
        fpr_limit: AUPRO integration limit.
        scoring: the bundle's or run's scoring rule (``model_store.planner``; default: every image squashed): each
            image is scored as the service scores it, ``batch_size`` images (not tiles) at a time.
        galleries: draw ``gallery_<category>.png`` (the slowest part of a report on a few CPU cores; an ablation of
            many variants can go without).

    Raises:
        EvaluationError: no test images, or the scorer's outputs have the wrong shape or are not finite.
        DataError: an unreadable image or mask.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = _Report(list(model_categories or index.categories), fpr_limit, galleries=galleries)
    with tqdm(total=len(index.test), desc="evaluating", unit="img", disable=not progress) as bar:
        planner = Planner(scoring or ScoringRule.squash(size), report.model_categories)
        for name in index.categories:
            samples = index.samples("test", name)
            if samples:
                scored = _score(score_fn, samples, size, batch_size, bar, planner)
                report.add(name, scored, size, report_dir)
            else:
                report.warnings.append(f"{name}: no test images; category skipped")
    if not report.entries:
        raise EvaluationError(f"no test images in categories {index.categories}: nothing to evaluate")
    metrics = report.metrics(size, time.perf_counter() - started)
    report.write(metrics, report_dir)
    return metrics


class OnnxScoreFn:
    """A ``score_fn`` on an exported graph (``model_store.session``: ONNX Runtime, CPU).

    ``size`` is the graph's input side; ``categories`` the bundle's category order and ``scoring`` its scoring rule
    when a ``manifest.json`` lies beside the graph (the bundle layout), else None (every image squashed).
    """

    def __init__(self, onnx_path: Path) -> None:
        from model_store.session import GraphSession

        self.session = GraphSession(Path(onnx_path))
        self.size = self.session.input_size
        manifest_path = Path(onnx_path).parent / MANIFEST_FILE
        manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
        self.categories = list(manifest.categories) if manifest else None
        self.scoring = manifest.scoring if manifest else None

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = self.session.run(images)
        return outputs.score, outputs.anomaly_map, outputs.category_similarity


def score_fn_from_onnx(onnx_path: Path) -> OnnxScoreFn:
    """The scorer of an exported graph, for ``evaluate_scorer(fn, index, fn.size, dir, model_categories=...)``."""
    return OnnxScoreFn(onnx_path)
