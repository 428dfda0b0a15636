"""Parity: the exported graph must score a file exactly as PyTorch does, or the export stops.

The same image files go two ways: PyTorch through training's loader (``training.data.load_images``, what
``training evaluate`` scores) and ONNX Runtime (CPU) through the service's decode/resize path
(``model_store.preprocess``). Pixels must be identical; score (per image) and anomaly map (relative to the
image's peak) must agree within ``PARITY_RTOL``; category similarities (cosines, so scale 1) within the same
number absolutely. The figures go into the manifest (``metrics.export_parity``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.onnx_graph import OUTPUT_NAMES, OnnxScorer

PARITY_RTOL = {"fp32": 1e-4, "fp16": 2e-2}
"""Largest relative difference ONNX Runtime (CPU) vs PyTorch fp32: score per image, map relative to its peak.
fp16 rounds every weight and activation to 11 significant bits; 1 − cos of close vectors amplifies that."""
PARITY_IMAGES = 8


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree (or the two image paths do); names the graph or the image files."""


@dataclass(frozen=True)
class ParityReport:
    precision: str
    n_images: int
    rtol: float
    score_max_rel_diff: float
    map_max_rel_diff: float
    similarity_max_abs_diff: float
    files: list[str]


def check_parity(
    model: nn.Module,
    scorer: OnnxScorer,
    samples: Sequence,
    precision: str,
    load_images: Callable[[Sequence, int], np.ndarray] | None = None,
) -> ParityReport:
    """Score the same files with PyTorch (training's loader) and ONNX Runtime (service's path); raise if apart."""
    if load_images is None:
        from training import data

        def load_images(files: Sequence, size: int) -> np.ndarray:
            return data.load_images(files, size, progress=False)

    size, rtol = int(model.input_size), PARITY_RTOL[precision]
    paths = [Path(getattr(s, "path", s)) for s in samples]
    served = scorer.load_files(paths)
    trained = load_images(samples, size)
    if trained.shape != served.shape or not np.array_equal(trained, served):
        bad = [str(p) for p, a, b in zip(paths, trained, served, strict=False) if not np.array_equal(a, b)]
        raise ParityError(f"training's image loader and the service's decode/resize disagree on pixels of {bad[:3]}")
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in zip(OUTPUT_NAMES, model(torch.from_numpy(trained)), strict=True)}
    onnx_out = scorer.run(served)
    score_diff = np.abs(onnx_out.score - reference["score"]) / np.maximum(np.abs(reference["score"]), 1e-6)
    reference_map = reference["anomaly_map"].reshape(onnx_out.anomaly_map.shape)
    map_peak = np.abs(reference_map).reshape(len(paths), -1).max(axis=1)
    map_diff = np.abs(onnx_out.anomaly_map - reference_map).reshape(len(paths), -1).max(axis=1)
    similarity_diff = np.abs(onnx_out.category_similarity - reference["category_similarity"])
    report = ParityReport(
        precision=precision,
        n_images=len(paths),
        rtol=rtol,
        score_max_rel_diff=float(score_diff.max()),
        map_max_rel_diff=float((map_diff / np.maximum(map_peak, 1e-6)).max()),
        similarity_max_abs_diff=float(similarity_diff.max()),
        files=[str(p) for p in paths],
    )
    if max(report.score_max_rel_diff, report.map_max_rel_diff, report.similarity_max_abs_diff) > rtol:
        message = (
            f"{scorer.path}: ONNX Runtime and PyTorch disagree beyond {rtol:g} ({precision}): "
            f"score {report.score_max_rel_diff:.2e}, "
            f"map {report.map_max_rel_diff:.2e} (relative), category_similarity {report.similarity_max_abs_diff:.2e}"
        )
        raise ParityError(message)
    return report


def parity_samples(index: object, count: int) -> list:
    """Up to ``count`` files: test images alternating categories and defect/normal, then train images if short."""
    chosen: list = []
    for split in ("test", "train"):
        kinds = [
            [s for s in getattr(index, split) if s.category == c and s.label == label]
            for c in index.categories
            for label in (1, 0)
        ]
        for depth in range(count):
            chosen += [kind[depth] for kind in kinds if depth < len(kind) and len(chosen) < count]
    if not chosen:
        raise ParityError("no images to check parity on: the data index is empty")
    return chosen[:count]
