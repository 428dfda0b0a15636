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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import get_args

from model_store.bundle import MANIFEST_FILE, Bundle, BundleError, list_versions, load_bundle, sha256_file
from model_store.manifest import FORMAT_VERSION, Manifest
from model_store.planner import FEATHER_MERGE, MergeScheme, Planner
from training.calibrate import CalibrationError
from training.data import DataError, DatasetIndex, discover
from training.export import ExportError, calibrate_rule, publish
from training.onnx_graph import OnnxScorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewGraph:
    """What a graph writer made of the source's graph: its precision, and figures for ``manifest.metrics``."""

    precision: str
    metrics: dict[str, object] = field(default_factory=dict)


GraphWriter = Callable[[Bundle, DatasetIndex, Path], NewGraph]
"""(source bundle, data index, path to write) → the graph the new version serves (``training.quantize``)."""


def copy_graph(source: Bundle, index: DatasetIndex, path: Path) -> NewGraph:
    """The source's graph, byte for byte: what ``recalibrate`` serves by default."""
    shutil.copyfile(source.onnx_path, path)
    return NewGraph(source.manifest.onnx.precision)


def load_source(bundle_dir: Path) -> Bundle:
    """The bundle in ``bundle_dir`` (``<repository>/<name>/<version>``), checksum verified."""
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / MANIFEST_FILE).is_file():
        raise BundleError(f"{bundle_dir}: not a bundle folder (no {MANIFEST_FILE}; expected <store>/<name>/<version>)")
    return load_bundle(bundle_dir.parent.parent, bundle_dir.parent.name, bundle_dir.name)


def holdout_of(manifest: Manifest) -> tuple[float, int]:
    """The calibration hold-out (fraction of train/good, seed) the bundle's training run used."""
    holdout = manifest.training_data.get("holdout") or {}
    return float(holdout.get("fraction", 0.1)), int(holdout.get("seed", 0))


def recalibrate(
    bundle_dir: Path,
    data_roots: list[Path],
    version: int | None = None,
    map_merge: MergeScheme = FEATHER_MERGE,
    min_similarity: float | None = None,
    write_graph: GraphWriter = copy_graph,
    model_dir: Path | None = None,
) -> Path:
    """Write ``<model_dir>/<version>`` (default: beside ``bundle_dir``, the next version); return it.

    ``write_graph`` writes the new version's graph from the source's (default: a copy); the calibration is then
    that graph's."""
    source = load_source(bundle_dir)
    old = source.manifest
    model_dir = Path(model_dir) if model_dir is not None else source.directory.parent
    version = version or max(list_versions(model_dir.parent, model_dir.name), default=0) + 1
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; bundles are immutable: pick another --version")
    fraction, seed = holdout_of(old)
    index = discover([Path(r) for r in data_roots], old.categories)
    staging = model_dir / f".recalibrate-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        graph = write_graph(source, index, staging / old.onnx.file)
        rule = old.scoring.with_floor(min_similarity).with_merge(map_merge)
        scorer = OnnxScorer(staging / old.onnx.file, Planner(rule, old.categories))
        target_far = old.calibration.target_false_alarm_rate
        rule, calibration, report = calibrate_rule(
            scorer, index, old.categories, target_far, fraction, seed, min_similarity
        )
        raw = old.model_dump(mode="json")
        raw.update(
            format_version=FORMAT_VERSION,
            name=model_dir.name,
            version=version,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            scoring=rule.model_dump(mode="json"),
            calibration=calibration.model_dump(mode="json"),
            onnx={**raw["onnx"], "sha256": sha256_file(staging / old.onnx.file), "precision": graph.precision},
            metrics={**old.metrics, **report, **graph.metrics, "recalibrated_from": f"{old.name}/{old.version}"},
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
