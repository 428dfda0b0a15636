"""``evaluate_run``: score a run's model (PyTorch, or its exported ONNX graph) on the test split and write a report.

The report folder is written by ``training.evaluate.evaluate_scorer``; a copy of ``metrics.json`` also goes to
``RUN/metrics.json`` so ``training export`` records the evaluation in the bundle's manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from training.data import discover
from training.engine import resolve_device
from training.evaluate import evaluate_scorer, score_fn_from_onnx
from training.model import PRDModel, load_run

ScoreArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def torch_score_fn(model: PRDModel, device: torch.device) -> Callable[[np.ndarray], ScoreArrays]:
    """uint8 NHWC batch → (scores, maps, category similarity) as numpy, the ScoreFn ``evaluate_scorer`` takes."""

    @torch.no_grad()
    def score(images: np.ndarray) -> ScoreArrays:
        out = model(torch.from_numpy(images).to(device))
        return out.score.cpu().numpy(), out.anomaly_map.cpu().numpy(), out.category_similarity.cpu().numpy()

    return score


def evaluate_run(
    run_dir: Path,
    data: Sequence[Path] | None = None,
    report_dir: Path | None = None,
    categories: Sequence[str] | None = None,
    onnx_path: Path | None = None,
    device: str = "auto",
    progress: bool = True,
    galleries: bool = True,
) -> dict:
    run_dir = Path(run_dir)
    target = torch.device("cpu") if onnx_path else resolve_device(device)
    model = load_run(run_dir, device=str(target))
    roots = [Path(p) for p in (data or model.config.data)]
    index = discover(roots, categories)
    report_dir = Path(report_dir) if report_dir else run_dir / "eval"
    score_fn = score_fn_from_onnx(onnx_path) if onnx_path else torch_score_fn(model, target)
    metrics = evaluate_scorer(
        score_fn,
        index,
        model.input_size,
        report_dir,
        progress=progress,
        model_categories=model.categories,
        scoring=model.config.scoring,
        galleries=galleries,
    )
    metrics["report_dir"] = str(report_dir)
    metrics["scored_with"] = str(onnx_path) if onnx_path else f"pytorch ({target})"
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
