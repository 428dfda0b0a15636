"""Argument parsing for ``python -m training {fit,evaluate,ablate,export,recalibrate,quantize,add-category,synth}``;
the work lives elsewhere.

Options are checked before any work: a choice outside its ``Literal`` in ``training/config.py`` is refused by
argparse (``choices`` come from that ``Literal``), any other bad value when the ``TrainConfig`` is built, naming the
option. Every later user error (bad data, missing weights file, unloadable run) ends as one line on stderr naming
the option or file. Either way: exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

from training.ablate import VARIANTS
from training.config import ConfigError, TrainConfig, field_types
from training.synthetic import SIZE as SYNTH_SIZE

# Options of `fit` and `ablate` that map one-to-one onto TrainConfig fields: flag → (field, help sentence). Parsers
# and `choices` come from the field's annotation; the default shown is TrainConfig's (argparse's is None, so only
# the options given override a base config).
FIT_OPTIONS: dict[str, tuple[str, str]] = {
    "--categories": ("categories", "comma-separated categories to train on (default: every one under --data)"),
    "--image-size": ("image_size", "side in pixels of the square the model sees"),
    "--max-tiles": ("max_tiles", "most aspect-kept tiles one image of a tiled category is cut into"),
    "--tile-categories": (
        "tile_categories",
        "comma-separated categories cut into tiles; empty for none (default: the categories whose photos share "
        "one frame)",
    ),
    "--grid": (
        "grid",
        "one of %(choices)s: auto cuts each tiled category whose photos are at least twice --image-size on their "
        "short side into a 2-D grid of tiles at native resolution (grid/1)",
    ),
    "--grid-scales": (
        "grid_scales",
        "per-category grid scale, e.g. wood=2,tire=1.5 (canvas short side = scale x --image-size; 1 = the strip); "
        "overrides --grid for the categories named (default: none)",
    ),
    "--grid-max-tiles": ("grid_max_tiles", "most tiles one image of a grid category is cut into"),
    "--teacher": ("teacher", "frozen pretrained teacher to distil from, one of %(choices)s"),
    "--teacher-weights": (
        "teacher_weights",
        "torchvision-format state dict for the teacher (required for the ResNets; default: bundled weights)",
    ),
    "--teacher-taps": (
        "teacher_taps",
        "three comma-separated EfficientNet-Lite block indices to tap, fine to coarse (default: the teacher's)",
    ),
    "--embed-dim": ("embed_dim", "channels of the one-class bottleneck's embedding"),
    "--prototypes": ("prototypes", "K normal prototypes shared by all categories; 0 switches MNP off (plain RD4AD)"),
    "--recall-topk": ("recall_topk", "prototypes each embedding vector is rebuilt from; 0 recalls all K"),
    "--recall-temperature": ("recall_temperature", "softmax temperature of the prototype recall"),
    "--coherence-weight": ("coherence_weight", "weight of the term pulling recalled prototypes to the embeddings"),
    "--decoder-width": ("decoder_width", "base channel width of the student decoder"),
    "--loss": (
        "loss",
        "distillation loss, one of %(choices)s: pixel is the mean of 1 - cos over positions, hard scales down the "
        "gradient of well-reconstructed positions",
    ),
    "--score": (
        "score",
        "image score from the smoothed map, one of %(choices)s: the map's peak, the peak above the map's mean, "
        "or the mean of its top fraction",
    ),
    "--memory-entries": ("memory_entries", "patch-memory entries per memory (coreset of teacher features); 0 is off"),
    "--memory-per-category": (
        "memory_per_category",
        "true: one patch memory per category, picked by the recognised category; false: one shared memory",
    ),
    "--memory-weight": ("memory_weight", "weight of the patch memory's map in the fused anomaly map"),
    "--lr": ("lr", "Adam learning rate"),
    "--batch-size": ("batch_size", "training batch size (tiles)"),
    "--epochs": ("epochs", "passes over the training tiles"),
    "--max-minutes": ("max_minutes", "stop after the epoch that passes this many minutes (default: no limit)"),
    "--seed": ("seed", "seed of initialisation and sampling: same seed and data, same weights on the CPU"),
    "--device": ("device", "where to train, one of %(choices)s (auto: CUDA when available)"),
    "--holdout-fraction": (
        "holdout_fraction",
        "share of train/good held out to scale the maps and calibrate, for categories without validation/good",
    ),
}
FLAGS = {name: flag for flag, (name, _) in FIT_OPTIONS.items()}


def boolean(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no); anything else is refused rather than read as false."""
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def _comma_list(item: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [item(x) for x in text.split(",") if x]

    parse.__name__ = f"comma-separated {item.__name__}"  # argparse names the type in its error
    return parse


def _scales(text: str) -> dict[str, float]:
    """``wood=2,tire=1.5`` → {"wood": 2.0, "tire": 1.5}."""
    pairs = [item.partition("=") for item in text.split(",") if item]
    if any(not name or not sep for name, sep, _ in pairs):
        raise ValueError(f"expected CATEGORY=SCALE pairs separated by commas, got {text!r}")
    return {name: float(value) for name, _, value in pairs}


_scales.__name__ = "CATEGORY=SCALE list"  # argparse names the type in its error


def _field_parser(name: str) -> Callable[[str], object]:
    """Text → value of the TrainConfig field ``name``, read from its annotation (``X | None`` parses as X)."""
    hint = field_types()[name]
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    origin = get_origin(hint)
    if origin is Literal:
        return str
    if origin is list:
        return _comma_list(get_args(hint)[0])
    if origin is dict:
        return _scales
    if origin is tuple:
        return lambda text: tuple(_comma_list(float)(text))
    return boolean if hint is bool else hint  # type: ignore[return-value]


def _choices(name: str) -> tuple[str, ...] | None:
    hint = field_types()[name]
    return get_args(hint) if get_origin(hint) is Literal else None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for flag, (name, sentence) in FIT_OPTIONS.items():
        default = getattr(defaults, name)
        shown = "" if default is None or "(default:" in sentence else f" (default: {default})"
        parser.add_argument(
            flag, dest=name, type=_field_parser(name), choices=_choices(name), default=None, help=sentence + shown
        )
    parser.add_argument(
        "--no-prototypes", action="store_true", help="plain RD4AD: the same as --prototypes 0 --memory-entries 0"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field, e.g. --set reseed_dead=false; checked like the options above (repeatable)",
    )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The config the options describe, checked before it is returned: a bad value names its option."""
    config = base or TrainConfig()
    updates = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
    options = {name: FLAGS[name] for name in updates}  # where each value came from, for the error message
    if getattr(args, "no_prototypes", False):
        updates["prototypes"] = 0
        updates["memory_entries"] = 0
    known = field_types()
    for item in getattr(args, "set", []):
        field, _, value = item.partition("=")
        if field not in known or not _:
            raise ValueError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        try:
            updates[field] = _field_parser(field)(value)
        except ValueError as exc:
            raise ValueError(f"--set {item}: {exc}") from exc
        options[field] = f"--set {field}"
    if getattr(args, "data", None):
        updates["data"] = [str(p) for p in args.data]
    try:
        return dataclasses.replace(config, **updates)
    except ConfigError as exc:
        raise ConfigError(f"{options.get(exc.name, exc.name)}: {exc.name}", exc.value, exc.rule) from exc


def _variants(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train one model on all categories under the data root(s)")
    fit.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout data root (repeatable)")
    fit.add_argument("--out", type=Path, required=True, help="run folder for config.json, checkpoint.pt and the log")
    fit.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt with the same settings")
    fit.epilog = (
        "Several processes or hosts: torchrun --nproc-per-node N -m training fit ... (DDP, gloo on the CPU, NCCL "
        "on CUDA; --batch-size stays the global batch; docs/scaling.md)"
    )
    add_config_options(fit)

    evaluate = sub.add_parser("evaluate", help="metrics, plots and a gallery on the test split")
    evaluate.add_argument("run", type=Path, help="training run folder (config.json, checkpoint.pt)")
    evaluate.add_argument(
        "--data", type=Path, action="append", default=None, help="MVTec-layout data root (default: the run's data)"
    )
    evaluate.add_argument("--report", type=Path, default=None, help="report folder (default: RUN/eval)")
    evaluate.add_argument(
        "--categories",
        type=_field_parser("categories"),
        default=None,
        help="comma-separated categories to evaluate (default: every one under the data roots)",
    )
    evaluate.add_argument("--onnx", type=Path, default=None, help="evaluate this exported model.onnx instead")
    evaluate.add_argument(
        "--device",
        choices=_choices("device"),
        default=TrainConfig.device,
        help="where the PyTorch model scores, one of %(choices)s (default: %(default)s; --onnx scores on the CPU)",
    )

    ablate = sub.add_parser("ablate", help="PRD against plain RD and each PRD part switched off, one table")
    ablate.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout data root (repeatable)")
    ablate.add_argument("--out", type=Path, required=True, help="folder for the table and each variant's run")
    ablate.add_argument(
        "--variants",
        type=_variants,
        default=None,
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all)",
    )
    ablate.add_argument(
        "--no-galleries",
        action="store_true",
        help="skip each variant's heatmap galleries (metrics, curves and histograms are still written)",
    )
    add_config_options(ablate)

    from training.export import add_export_arguments

    add_export_arguments(sub.add_parser("export", help="ONNX bundle + manifest into a model store"))

    from training.onboard import add_onboard_arguments
    from training.recalibrate import add_recalibrate_arguments

    add_recalibrate_arguments(
        sub.add_parser("recalibrate", help="a released bundle's graph as a new version, under today's scoring rule")
    )

    from training.quantize import add_quantize_arguments

    add_quantize_arguments(
        sub.add_parser("quantize", help="an int8 bundle (CPU lines) from a float one: static QDQ, own calibration")
    )

    add_onboard_arguments(sub.add_parser("add-category", help="add categories to a trained run from good images"))

    synth = sub.add_parser("synth", help="write a small generated MVTec-layout dataset (demos, tests)")
    synth.add_argument("out", type=Path, help="folder to write the dataset into")
    synth.add_argument(
        "--size", type=int, default=SYNTH_SIZE, help="side in pixels of the generated images (default: %(default)s)"
    )
    synth.add_argument(
        "--styles",
        type=_comma_list(str),
        default=None,
        help="comma-separated textures.STYLES, one category gen_<style> each, with the subtle defects too "
        "(the multi-class pressure set; default: two classic demo categories)",
    )
    synth.add_argument("--train", type=int, default=12, help="normal training images per category")
    synth.add_argument("--test-good", type=int, default=4, help="normal test images per category")
    synth.add_argument("--test-defect", type=int, default=4, help="defect test images per category")
    synth.add_argument(
        "--defects",
        type=_comma_list(str),
        default=None,
        help="with --styles: comma-separated defect types (default: scratch,spot,stain,warp,foreign; borrowed pastes "
        "another generated category's normal look)",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of every generated pixel")
    return parser


def _synthesise(args: argparse.Namespace) -> Path:
    from training.synthetic import DEFECT_TYPES, SUBTLE_DEFECTS, make_synthetic_dataset

    counts = {"n_train": args.train, "n_test_good": args.test_good, "n_test_defect": args.test_defect}
    if args.styles is None:
        if args.defects:
            raise ValueError("--defects: choose them with --styles (the classic demo set draws scratches and spots)")
        return make_synthetic_dataset(args.out, size=args.size, seed=args.seed, **counts)
    names = [f"gen_{style}" for style in args.styles]
    defects = args.defects or DEFECT_TYPES + SUBTLE_DEFECTS
    return make_synthetic_dataset(
        args.out, names, size=args.size, seed=args.seed, styles=args.styles, defect_types=defects, **counts
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    from training.backbones import TeacherError
    from training.data import DataError
    from training.model import RunError

    try:
        return _dispatch(args)
    except (DataError, TeacherError, RunError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "fit":
        from training.distributed import process_group
        from training.engine import fit, resolve_device

        config = config_from_args(args)
        # Under torchrun (WORLD_SIZE > 1): one process of a DDP group, gloo on the CPU, NCCL on CUDA.
        with process_group(cuda=resolve_device(config.device).type == "cuda") as world:
            fit(config, args.out, resume=args.resume)
        if world.main:
            print(f"trained: {args.out} on {world.size} process(es) (next: python -m training evaluate {args.out})")
    elif args.command == "evaluate":
        from training.report import evaluate_run

        metrics = evaluate_run(args.run, args.data, args.report, args.categories, args.onnx, args.device)
        mean = metrics["mean"]
        print(
            f"mean image AUROC {mean['image_auroc']:.3f}  pixel AUROC {mean['pixel_auroc']:.3f}  "
            f"AUPRO {mean['aupro']:.3f}  (report: {metrics['report_dir']})"
        )
    elif args.command == "ablate":
        from training.ablate import run_ablation

        run_ablation(config_from_args(args), args.out, args.variants, galleries=not args.no_galleries)
    elif args.command == "export":
        from training.export import run_export

        print(f"exported: {run_export(args)}")
    elif args.command == "recalibrate":
        from training.recalibrate import run_recalibrate

        print(f"recalibrated: {run_recalibrate(args)}")
    elif args.command == "quantize":
        from training.quantize import run_quantize

        print(f"quantized: {run_quantize(args)}")
    elif args.command == "add-category":
        from training.onboard import run_onboarding

        out = run_onboarding(args)
        print(f"added: {out} (next: python -m training export {out})")
    elif args.command == "synth":
        print(f"wrote: {_synthesise(args)}")
    return 0
