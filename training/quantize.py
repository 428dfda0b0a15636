"""``python -m training quantize``: a float bundle → an int8 bundle for CPU lines, as its own version.

ONNX Runtime's static quantisation (``quantize_static``, QDQ format, unsigned 8-bit activations and signed 8-bit
weights, per-channel by default) of the graph's convolutions, calibrated on normal ``train/good`` images cut exactly
as the service feeds them (the bundle's ``Planner``: tiles for tiled categories), never on the calibration
hold-out. Only the nodes under ``INT8_SCOPES`` and not under ``FLOAT_SCOPES`` are quantised; everything else
stays float:

- the patch memory's nearest distances (``‖q‖² − 2 q·b + ‖b‖²`` cancels large terms, which 8 bits cannot resolve),
- the map maths (1 − cos per scale, upsampling, fusion, the Gaussian blur, whose single-channel convolution gains
  nothing from int8), the score,
- the input normalisation, the prototype recall and the category similarity (which routes the image),
- the teacher's stem and first block, which read the image itself: quantised, they cost the most accuracy.

Then the new version is calibrated on its own graph (``training.recalibrate``: thresholds and quantile tables of the
int8 scores), and its agreement with the float graph on the same inputs is recorded in ``metrics.quantization``.
What it costs and gains, measured: ``docs/quantization.md``::

    python -m training quantize model_store/repository/prd/7 --data ../shared/data --store S --name prd-int8
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import onnx

from model_store.bundle import DEFAULT_STORE, Bundle, BundleError
from model_store.preprocess import decode_rgb8
from training.calibrate import CalibrationError, holdout_split
from training.data import DataError, DatasetIndex
from training.export import NAME_PATTERN, ExportError
from training.onnx_graph import OnnxScorer
from training.parity import parity_samples
from training.recalibrate import NewGraph, holdout_of, load_source, recalibrate

log = logging.getLogger(__name__)

INT8_SCOPES = ("/teacher/", "/bottleneck/", "/decoder/")
"""Node-name scopes whose operators are quantised: the teacher, the bottleneck and the student's convolutions,
where the time goes outside the memory. Every other node (memory, map maths, recognition) stays float."""
FLOAT_SCOPES = ("/teacher/stem/", "/teacher/blocks.0/")
"""Scopes inside ``INT8_SCOPES`` kept float: the first layers, on the normalised pixels; which ones was measured
(docs/quantization.md)."""

Method = Literal["minmax", "entropy"]
"""How activation ranges are calibrated. ONNX Runtime's percentile calibrator is left out: it failed on ``prd/7``'s
graph (docs/quantization.md)."""
CALIBRATION_BATCH = 8


class QuantizeError(RuntimeError):
    """The bundle cannot be quantised as asked; names the file or the option."""


@dataclass(frozen=True)
class QuantizeSettings:
    """How the graph is quantised; checked before any work, recorded in ``metrics.quantization``."""

    method: Method = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    images_per_category: int = 16
    parity_images: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in get_args(Method):
            raise QuantizeError(f"--method {self.method!r}: choose one of {', '.join(get_args(Method))}")
        if self.images_per_category < 1:
            raise QuantizeError(f"--images-per-category must be at least 1, got {self.images_per_category}")
        if self.parity_images < 1:
            raise QuantizeError(f"--parity-images must be at least 1, got {self.parity_images}")


def calibration_inputs(source: Bundle, index: DatasetIndex, settings: QuantizeSettings) -> np.ndarray:
    """uint8 (N, S, S, 3) graph inputs of normal training images, ``images_per_category`` per category drawn at
    random (seeded) from ``train/good`` less the calibration hold-out, each cut as the service cuts an image of its
    category."""
    manifest = source.manifest
    fraction, seed = holdout_of(manifest)
    train, _ = holdout_split(index.train, fraction, seed, validation=index.validation)
    planner, draw, inputs = manifest.planner(), random.Random(settings.seed), []
    for category in manifest.categories:
        files = sorted(str(s.path) for s in train if s.category == category and s.label == 0)
        if not files:
            raise QuantizeError(f"category {category!r}: no train/good images under the --data roots to calibrate on")
        for path in draw.sample(files, min(settings.images_per_category, len(files))):
            tiles, _ = planner.first_pass(decode_rgb8(Path(path).read_bytes()), category)
            inputs.extend(tiles)
    return np.stack(inputs)


def _batches(inputs: np.ndarray, name: str) -> Iterator[dict[str, np.ndarray]]:
    from tqdm import tqdm

    for start in tqdm(range(0, len(inputs), CALIBRATION_BATCH), desc="int8 calibration", unit="batch"):
        yield {name: inputs[start : start + CALIBRATION_BATCH]}


def quantize_graph(
    float_path: Path,
    int8_path: Path,
    inputs: np.ndarray,
    settings: QuantizeSettings,
    scopes: tuple[str, ...] = INT8_SCOPES,
    float_scopes: tuple[str, ...] = FLOAT_SCOPES,
) -> list[str]:
    """Write the QDQ graph of ``float_path`` to ``int8_path``, quantising the nodes under ``scopes`` and not under
    ``float_scopes``; return their names.

    The float graph is first constant-folded by ONNX Runtime (``quant_pre_process``), which folds the teacher's
    explicit padding into its convolutions, so each convolution becomes one int8 kernel."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = _batches(inputs, name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(dir=Path(int8_path).parent) as work:
        folded = Path(work) / "folded.onnx"
        quant_pre_process(str(float_path), str(folded), skip_symbolic_shape=True)
        graph = onnx.load(str(folded)).graph
        chosen = [n.name for n in graph.node if n.name.startswith(scopes) and not n.name.startswith(float_scopes)]
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}
        quantize_static(
            str(folded),
            str(int8_path),
            Reader(graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            nodes_to_quantize=chosen,
            calibrate_method=methods[settings.method],
        )
    return chosen


def float_parity(float_path: Path, int8_path: Path, files: list[Path]) -> dict[str, object]:
    """The int8 graph against the float one on the same squashed inputs: score (relative), map (relative to the
    float map's peak), category similarity (absolute), and how often both recognise the same category."""
    reference, quantised = OnnxScorer(float_path), OnnxScorer(int8_path)
    batch = reference.load_files(files)
    a, b = reference.run(batch), quantised.run(batch)
    score = np.abs(b.score - a.score) / np.maximum(np.abs(a.score), 1e-6)
    peak = np.abs(a.anomaly_map).reshape(len(files), -1).max(axis=1)
    spread = np.abs(b.anomaly_map - a.anomaly_map).reshape(len(files), -1)
    mean_map, max_map = spread.mean(axis=1) / np.maximum(peak, 1e-6), spread.max(axis=1) / np.maximum(peak, 1e-6)
    return {
        "n_images": len(files),
        "score_max_rel_diff": float(score.max()),
        "score_mean_rel_diff": float(score.mean()),
        "map_max_rel_diff": float(max_map.max()),
        "map_mean_rel_diff": float(mean_map.mean()),
        "similarity_max_abs_diff": float(np.abs(b.category_similarity - a.category_similarity).max()),
        "category_agreement": float(
            (b.category_similarity.argmax(axis=1) == a.category_similarity.argmax(axis=1)).mean()
        ),
        "files": [str(f) for f in files],
    }


def int8_writer(settings: QuantizeSettings):
    """A ``training.recalibrate.GraphWriter`` that writes the int8 graph of the source's float graph."""

    def write(source: Bundle, index: DatasetIndex, path: Path) -> NewGraph:
        inputs = calibration_inputs(source, index, settings)
        log.info("quantising %s on %d normal graph inputs", source.onnx_path, len(inputs))
        chosen = quantize_graph(source.onnx_path, path, inputs, settings)
        files = [Path(s.path) for s in parity_samples(index, settings.parity_images)]
        parity = float_parity(source.onnx_path, path, files)
        log.info(
            "int8 against float on %d images: score %.2e mean / %.2e max (relative), categories agree %.3f",
            parity["n_images"],
            parity["score_mean_rel_diff"],
            parity["score_max_rel_diff"],
            parity["category_agreement"],
        )
        record = {
            "source": f"{source.manifest.name}/{source.manifest.version}",
            "settings": asdict(settings),
            "int8_scopes": list(INT8_SCOPES),
            "float_scopes": list(FLOAT_SCOPES),
            "quantized_nodes": len(chosen),
            "calibration_inputs": len(inputs),
            "float_parity": parity,
            "note": "metrics.categories and .mean are the float source's; the int8 graph's: docs/quantization.md",
        }
        return NewGraph("int8", {"quantization": record})

    return write


def quantize_bundle(
    bundle_dir: Path,
    data_roots: list[Path],
    store: Path,
    name: str,
    version: int | None = None,
    settings: QuantizeSettings | None = None,
) -> Path:
    """The int8 version of the float bundle in ``bundle_dir``, written to ``<store>/<name>/<version>``; return it."""
    settings = settings or QuantizeSettings()
    if not NAME_PATTERN.fullmatch(name):
        raise QuantizeError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only (it names a folder)")
    source = load_source(bundle_dir)
    if source.manifest.onnx.precision != "fp32":
        message = f"{source.directory / 'manifest.json'}: onnx.precision is {source.manifest.onnx.precision!r}; "
        raise QuantizeError(message + "quantize needs an fp32 bundle")
    merge = source.manifest.scoring.merge.scheme  # the source's rule; only the recognition floor is re-derived
    write = int8_writer(settings)
    return recalibrate(bundle_dir, data_roots, version, merge, write_graph=write, model_dir=Path(store) / name)


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m training quantize``."""
    defaults = QuantizeSettings()
    parser.add_argument("bundle", type=Path, help="the float bundle folder, e.g. model_store/repository/prd/7")
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="MVTec-layout root of its categories (repeatable)"
    )
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="model repository (default: %(default)s)")
    parser.add_argument("--name", required=True, help="model name in the store for the int8 bundle, e.g. prd-int8")
    parser.add_argument("--version", type=int, default=None, help="version to write (default: the next integer)")
    parser.add_argument(
        "--method",
        choices=get_args(Method),
        default=defaults.method,
        help="how activation ranges are calibrated, one of %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--per-tensor", action="store_true", help="one weight scale per tensor instead of one per output channel"
    )
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights (CPUs without VNNI)")
    parser.add_argument(
        "--images-per-category",
        type=int,
        default=defaults.images_per_category,
        help="normal train/good images per category the activation ranges come from (default: %(default)s)",
    )
    parser.add_argument(
        "--parity-images",
        type=int,
        default=defaults.parity_images,
        help="test images scored by both graphs for the recorded parity (default: %(default)s)",
    )


def run_quantize(args: argparse.Namespace) -> Path:
    """CLI entry: one line naming the problem on failure."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = QuantizeSettings(
            method=args.method,
            per_channel=not args.per_tensor,
            reduce_range=args.reduce_range,
            images_per_category=args.images_per_category,
            parity_images=args.parity_images,
        )
        return quantize_bundle(args.bundle, args.data, args.store, args.name, args.version, settings)
    except (QuantizeError, ExportError, BundleError, CalibrationError, DataError, ValueError) as exc:
        raise SystemExit(f"quantize failed: {exc}") from exc
