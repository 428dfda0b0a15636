"""``recalibrate``: a new bundle version from a released one's graph, byte for byte, under today's scoring rule.

A bundle's graph fixes the scores; what sits around it (the merge of tile maps, the thresholds and their quantile
tables, the recognition floor) is the manifest's and may improve without retraining. This writes the next version
with the same ``model.onnx``, the source's tiling and routing with ``--map-merge`` (default: the crossfade new
exports use), a fresh calibration on the same held-out normals (the source's hold-out fraction and seed), and the
recognition floor derived as an export derives it. No training run is needed, so a bundle whose run folder is gone
can still be brought up to date::

    python -m training recalibrate model_store/repository/prd/6 --data ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

from model_store.bundle import BundleError, list_versions, load_bundle
from model_store.manifest import FORMAT_VERSION, Manifest
from model_store.planner import FEATHER_MERGE, MergeScheme, Planner
from training.calibrate import CalibrationError
from training.data import DataError, discover
from training.export import ExportError, calibrate_rule, publish
from training.onnx_graph import OnnxScorer

log = logging.getLogger(__name__)


def recalibrate(
    bundle_dir: Path,
    data_roots: list[Path],
    version: int | None = None,
    map_merge: MergeScheme = FEATHER_MERGE,
    min_similarity: float | None = None,
) -> Path:
    """Write ``<repository>/<name>/<version>`` (default: the next) beside ``bundle_dir``; return it."""
    bundle_dir = Path(bundle_dir)
    source = load_bundle(bundle_dir.parent.parent, bundle_dir.parent.name, bundle_dir.name)  # checksum verified
    old = source.manifest
    model_dir = bundle_dir.parent
    version = version or max(list_versions(model_dir.parent, model_dir.name), default=0) + 1
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; bundles are immutable: pick another --version")
    holdout = old.training_data.get("holdout") or {}
    fraction, seed = float(holdout.get("fraction", 0.1)), int(holdout.get("seed", 0))
    index = discover([Path(r) for r in data_roots], old.categories)
    staging = model_dir / f".recalibrate-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(source.onnx_path, staging / old.onnx.file)
        rule = old.scoring.with_floor(min_similarity).with_merge(map_merge)
        scorer = OnnxScorer(staging / old.onnx.file, Planner(rule, old.categories))
        target_far = old.calibration.target_false_alarm_rate
        rule, calibration, report = calibrate_rule(
            scorer, index, old.categories, target_far, fraction, seed, min_similarity
        )
        raw = old.model_dump(mode="json")
        raw.update(
            format_version=FORMAT_VERSION,
            version=version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            scoring=rule.model_dump(mode="json"),
            calibration=calibration.model_dump(mode="json"),
            metrics={**old.metrics, **report, "recalibrated_from": f"{old.name}/{old.version}"},
        )
        publish(staging, target, Manifest.model_validate(raw), scorer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def add_recalibrate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m training recalibrate``."""
    parser.add_argument("bundle", type=Path, help="the released bundle folder, e.g. model_store/repository/prd/6")
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="MVTec-layout root of its categories (repeatable)"
    )
    parser.add_argument("--version", type=int, default=None, help="version to write (default: the next integer)")
    parser.add_argument(
        "--map-merge",
        choices=get_args(MergeScheme),
        default=FEATHER_MERGE,
        help="how tile maps merge, one of %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="recognition floor to write instead of the one derived from the held-out normals (default: derived)",
    )


def run_recalibrate(args: argparse.Namespace) -> Path:
    """CLI entry: one line naming the problem on failure."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return recalibrate(args.bundle, args.data, args.version, args.map_merge, args.min_similarity)
    except (ExportError, BundleError, CalibrationError, DataError, ValueError) as exc:
        raise SystemExit(f"recalibrate failed: {exc}") from exc
