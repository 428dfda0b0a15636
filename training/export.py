"""``python -m training export RUN``: a trained run → a verified, calibrated bundle in the model store.

Steps, each of which stops the export with a message naming the file when it fails:

1. trace the whole scoring pipeline to ONNX (``training.onnx_graph``; ``--fp16`` converts it), onnx.checker;
2. parity: the same image files scored by PyTorch through training's loader (``training.data.load_images``)
   and by ONNX Runtime through the service's decode/resize path — score and map within ``PARITY_RTOL``;
3. calibration on held-out normal images with that ONNX graph (``training.calibrate``), checked on the test set,
   with category-recognition accuracy;
4. ``manifest.json`` validated by ``model_store.manifest.Manifest`` and the graph's I/O verified against it;
5. the version folder appears atomically (renamed from a temporary folder), then ``config.pbtxt`` is rewritten
   for the latest version so the store stays a valid Triton model repository.

An existing version is never overwritten: bundles are immutable once a service may have loaded them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from model_store.bundle import (
    DEFAULT_STORE,
    MANIFEST_FILE,
    BundleError,
    list_versions,
    read_manifest,
    sha256_file,
    verify_graph_io,
)
from model_store.manifest import FORMAT_VERSION, Calibration, InputSpec, Manifest, OnnxSpec
from model_store.planner import FEATHER_MERGE, Planner, ScoringRule
from model_store.triton import write_config
from training.calibrate import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    CalibrationError,
    calibrate,
)
from training.onnx_graph import OPSET, GraphError, OnnxScorer, export_onnx
from training.parity import PARITY_IMAGES, ParityError, check_parity, parity_samples
from training.unknown_parts import non_part_frames

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
"""Same rule as ``Manifest.name``, checked before minutes of work rather than after."""
ONNX_FILE = "model.onnx"
METRICS_FILE = "metrics.json"


class ExportError(RuntimeError):
    """The export cannot produce a bundle that is safe to serve; the message says which step and file."""


def export_bundle(
    run_dir: Path,
    store: Path,
    name: str = "prd",
    version: int | None = None,
    fp16: bool = False,
    data_roots: Sequence[Path] | None = None,
    target_far: float = 0.01,
    parity_images: int = PARITY_IMAGES,
    metrics_path: Path | None = None,
    min_similarity: float | None = None,
) -> Path:
    """Export ``run_dir`` (``training.model.load_run``) into ``<store>/<name>/<version>``; return that folder.

    ``data_roots`` default to the run's training data (``config.data``); they provide the parity images, the
    held-out normals for calibration and the labelled test images for the report. ``min_similarity`` is the
    scoring rule's recognition floor, calibrated under as it will be served (None: derived from the held-out
    normals, ``training.unknown_parts.recognition_floor``).
    """
    from training.data import discover
    from training.model import load_run

    model = load_run(Path(run_dir), device="cpu")
    config = model.config.to_dict()
    roots = [Path(r) for r in (data_roots or config.get("data") or [])]
    if not roots:
        raise ExportError(f"{run_dir}: no data to calibrate on: pass --data ROOT (the run's config.json names none)")
    index = discover(roots, categories=model.categories)
    metrics = _read_metrics(metrics_path, Path(run_dir))
    return export_model(
        model,
        store,
        index,
        name=name,
        version=version,
        fp16=fp16,
        target_far=target_far,
        parity_images=parity_images,
        metrics=metrics,
        training_data={"roots": [str(r) for r in roots], "run": str(run_dir), **index.summary()},
        min_similarity=min_similarity,
    )


def export_model(
    model: nn.Module,
    store: Path,
    index: object,
    *,
    name: str = "prd",
    version: int | None = None,
    fp16: bool = False,
    target_far: float = 0.01,
    parity_images: int = PARITY_IMAGES,
    metrics: dict | None = None,
    training_data: dict | None = None,
    load_images: Callable[[Sequence, int], np.ndarray] | None = None,
    min_similarity: float | None = None,
) -> Path:
    """Export a loaded model (``PRDModel`` interface) with a ``training.data.DatasetIndex``; see ``export_bundle``."""
    store = Path(store)
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only (it names a folder)")
    if not 0.0 < target_far < 0.5:
        raise ExportError(f"--target-far must be in (0, 0.5), got {target_far}")
    if version is None:
        version = max(list_versions(store, name), default=0) + 1
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    target = store / name / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; bundles are immutable: pick another --version or delete it")
    precision = "fp16" if fp16 else "fp32"
    config = model.config.to_dict()
    fraction = float(config.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION))
    seed = int(config.get("holdout_seed", DEFAULT_HOLDOUT_SEED))
    staging = store / name / f".export-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        graph = staging / ONNX_FILE
        log.info("exporting %s graph to %s", precision, graph)
        export_onnx(model, graph, fp16=fp16)
        rule = _scoring_rule(model, min_similarity)
        scorer = OnnxScorer(graph, Planner(rule, model.categories))
        parity = check_parity(model, scorer, parity_samples(index, parity_images), precision, load_images)
        log.info(
            "parity on %d images: score %.2e, map %.2e (limit %.0e)",
            parity.n_images,
            parity.score_max_rel_diff,
            parity.map_max_rel_diff,
            parity.rtol,
        )
        rule, calibration, report = calibrate_rule(
            scorer, index, model.categories, target_far, fraction, seed, min_similarity
        )
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            name=name,
            version=version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            onnx=OnnxSpec(file=ONNX_FILE, sha256=sha256_file(graph), opset=OPSET, precision=precision),
            input=InputSpec(height=int(model.input_size), width=int(model.input_size)),
            scoring=rule,
            categories=list(model.categories),
            added_categories=list(getattr(getattr(model, "config", None), "added_categories", None) or []),
            calibration=calibration,
            teacher=str(model.teacher_name),
            prd=_jsonable(getattr(model.config, "prd_settings", None) or config),
            training_data=_jsonable({**(training_data or {}), "holdout": {"fraction": fraction, "seed": seed}}),
            metrics=_jsonable({**(metrics or {}), **report, "export_parity": asdict(parity)}),
        )
        publish(staging, target, manifest, scorer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def calibrate_rule(
    scorer: OnnxScorer,
    index: object,
    categories: Sequence[str],
    target_far: float,
    fraction: float,
    seed: int,
    min_similarity: float | None,
) -> tuple[ScoringRule, Calibration, dict[str, object]]:
    """Thresholds for the scorer's graph under its rule, and the rule with its recognition floor: the given one, or
    the one derived from the held-out normals and the non-part frames (``training.unknown_parts``)."""
    rule = scorer.planner.rule
    non_part = scorer.run(non_part_frames(scorer.input_size)).category_similarity
    calibration, report = calibrate(scorer, index, categories, target_far, fraction, seed, non_part_similarity=non_part)
    derived = report.get("recognition_floor")
    if min_similarity is None and isinstance(derived, dict):
        # Below every held-out normal: calibration, scored without a floor, is what is served with it.
        rule = rule.with_floor(float(derived["min_similarity"]))
        floor, held = rule.routing.min_similarity, derived["n_images"]
        log.info("recognition floor %.4f (derived from %d held-out normals)", floor, held)
    for warning in report["calibration_warnings"]:
        log.warning("calibration: %s", warning)
    return rule, calibration, report


def publish(staging: Path, target: Path, manifest: Manifest, scorer: OnnxScorer) -> None:
    """Write the manifest, read it back as the service will, move the folder into place, refresh Triton's config."""
    (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    _verify_staged(staging, scorer)
    os.replace(staging, target)
    write_config(target.parent.parent, target.parent.name)
    log.info("bundle %s written (%s, threshold %s)", target, manifest.onnx.precision, _thresholds(manifest))


def _scoring_rule(model: nn.Module, min_similarity: float | None) -> ScoringRule:
    """The run's scoring rule (its tiling) with the export's similarity floor; stand-ins without a config squash."""
    config = getattr(model, "config", None)
    rule = config.scoring if config is not None and hasattr(config, "scoring") else None
    return (rule or ScoringRule.squash(int(model.input_size))).with_floor(min_similarity).with_merge(FEATHER_MERGE)


def _verify_staged(staging: Path, scorer: OnnxScorer) -> None:
    """Read the manifest back as the service will, and check the graph's I/O and checksum against it."""
    from model_store.bundle import Bundle

    bundle = Bundle(directory=staging, manifest=read_manifest(staging / MANIFEST_FILE))
    verify_graph_io(bundle, scorer.input_names, scorer.input_types, scorer.output_names)
    if sha256_file(bundle.onnx_path) != bundle.manifest.onnx.sha256:
        raise ExportError(f"{bundle.onnx_path}: changed while exporting (checksum differs from the manifest)")


def _read_metrics(path: Path | None, run_dir: Path) -> dict:
    """``training evaluate``'s metrics.json: the given file, else RUN/metrics.json, else RUN/eval/metrics.json."""
    candidates = [Path(path)] if path else [run_dir / METRICS_FILE, run_dir / "eval" / METRICS_FILE]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ExportError(f"{candidate}: unreadable evaluation metrics ({exc})") from exc
    if path:
        raise ExportError(f"{path}: --metrics file not found")
    log.warning("no evaluation metrics in %s (run `python -m training evaluate` first); bundle has none", run_dir)
    return {}


def _thresholds(manifest: Manifest) -> str:
    return ", ".join(f"{k}={v.threshold:.4g}" for k, v in manifest.calibration.per_category.items())


def _jsonable(value: object) -> dict:
    """Paths, tuples and numpy scalars → plain JSON types, so the manifest always serialises."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m training export``; the lead's ``training/cli.py`` calls this on its subparser."""
    parser.add_argument("run", type=Path, help="training run folder (config.json, checkpoint.pt, metrics.json)")
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help="model repository to write into (default: %(default)s)"
    )
    parser.add_argument("--name", default="prd", help="model name in the store (default: %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next integer)")
    parser.add_argument(
        "--fp16", action="store_true", help="float16 weights and compute (for GPUs); uint8 in, float32 out"
    )
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        default=None,
        help="data root for parity, calibration and test report; repeatable (default: the run's)",
    )
    parser.add_argument(
        "--target-far",
        type=float,
        default=0.01,
        help="false-alarm rate on normal parts the thresholds aim at (default: %(default)s)",
    )
    parser.add_argument(
        "--parity-images",
        type=int,
        default=PARITY_IMAGES,
        help="test images scored by both PyTorch and ONNX Runtime, which must agree (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics", type=Path, default=None, help="evaluation metrics.json (default: RUN/metrics.json)"
    )
    parser.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="recognition floor written into the scoring rule: an image whose best category similarity is below "
        "it is an unknown part (global calibration, no tiles); calibrated that way too (default: derived from the "
        "held-out normals, training.unknown_parts.recognition_floor; -1 for none in effect)",
    )


def run_export(args: argparse.Namespace) -> Path:
    """Entry point for the CLI: one line on failure instead of a traceback."""
    from training.data import DataError
    from training.model import RunError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        target = export_bundle(
            args.run,
            args.store,
            name=args.name,
            version=args.version,
            fp16=args.fp16,
            data_roots=args.data,
            target_far=args.target_far,
            parity_images=args.parity_images,
            metrics_path=args.metrics,
            min_similarity=args.min_similarity,
        )
    except (ExportError, GraphError, ParityError, CalibrationError, BundleError, DataError, RunError) as exc:
        raise SystemExit(f"export failed: {exc}") from exc
    print(target)
    return target
