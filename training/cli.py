"""Argument parsing for ``python -m training {fit,evaluate,ablate,export,synth}``; the work lives elsewhere.

Every user error (bad data, unknown teacher, missing weights file, unloadable run) ends as one line on stderr
naming the option or file, and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from training.config import TrainConfig

# Options of `fit` that map one-to-one onto TrainConfig fields (flag → field); types come from the dataclass.
FIT_OPTIONS = {
    "--categories": "categories",
    "--image-size": "image_size",
    "--max-tiles": "max_tiles",
    "--tile-categories": "tile_categories",
    "--teacher": "teacher",
    "--teacher-weights": "teacher_weights",
    "--teacher-taps": "teacher_taps",
    "--embed-dim": "embed_dim",
    "--prototypes": "prototypes",
    "--recall-topk": "recall_topk",
    "--recall-temperature": "recall_temperature",
    "--coherence-weight": "coherence_weight",
    "--decoder-width": "decoder_width",
    "--loss": "loss",
    "--score": "score",
    "--memory-entries": "memory_entries",
    "--memory-per-category": "memory_per_category",
    "--memory-weight": "memory_weight",
    "--lr": "lr",
    "--batch-size": "batch_size",
    "--epochs": "epochs",
    "--max-minutes": "max_minutes",
    "--seed": "seed",
    "--device": "device",
    "--holdout-fraction": "holdout_fraction",
}
LIST_FIELDS = {"categories": str, "teacher_taps": int, "tile_categories": str}


def _field_type(name: str) -> type:
    default = getattr(TrainConfig(), name)
    if name in LIST_FIELDS:
        return lambda text: [LIST_FIELDS[name](x) for x in text.split(",") if x]  # type: ignore[return-value]
    if isinstance(default, bool):
        return lambda text: text.lower() in ("1", "true", "yes")  # type: ignore[return-value]
    if default is None:
        return float if name == "max_minutes" else str
    return type(default)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for flag, name in FIT_OPTIONS.items():
        parser.add_argument(
            flag, dest=name, type=_field_type(name), default=None, help=f"(default: {getattr(defaults, name)})"
        )
    parser.add_argument("--no-prototypes", action="store_true", help="plain RD4AD: --prototypes 0 --memory-entries 0")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field, e.g. --set reseed_dead=false (repeatable)",
    )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    config = base or TrainConfig()
    updates = {name: getattr(args, name) for name in FIT_OPTIONS.values() if getattr(args, name, None) is not None}
    if getattr(args, "no_prototypes", False):
        updates["prototypes"] = 0
        updates["memory_entries"] = 0
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in getattr(args, "set", []):
        field, _, value = item.partition("=")
        if field not in known or not _:
            raise ValueError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        updates[field] = _field_type(field)(value)
    if getattr(args, "data", None):
        updates["data"] = [str(p) for p in args.data]
    return dataclasses.replace(config, **updates)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train one model on all categories under the data root(s)")
    fit.add_argument("--data", type=Path, action="append", required=True, help="MVTec-layout root (repeatable)")
    fit.add_argument("--out", type=Path, required=True, help="run folder")
    fit.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    add_config_options(fit)

    evaluate = sub.add_parser("evaluate", help="metrics, plots and a gallery on the test split")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--data", type=Path, action="append", default=None, help="default: the run's data")
    evaluate.add_argument("--report", type=Path, default=None, help="report folder (default: RUN/eval)")
    evaluate.add_argument("--categories", type=_field_type("categories"), default=None)
    evaluate.add_argument("--onnx", type=Path, default=None, help="evaluate this exported model.onnx instead")
    evaluate.add_argument("--device", default="auto")

    ablate = sub.add_parser("ablate", help="PRD against plain RD and each PRD part switched off, one table")
    ablate.add_argument("--data", type=Path, action="append", required=True)
    ablate.add_argument("--out", type=Path, required=True)
    ablate.add_argument("--variants", default=None, help="comma-separated subset (default: all)")
    add_config_options(ablate)

    from training.export import add_export_arguments

    add_export_arguments(sub.add_parser("export", help="ONNX bundle + manifest into a model store"))

    synth = sub.add_parser("synth", help="write a small generated MVTec-layout dataset (demos, tests)")
    synth.add_argument("out", type=Path)
    synth.add_argument("--size", type=int, default=64)
    return parser


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
        from training.engine import fit

        fit(config_from_args(args), args.out, resume=args.resume)
        print(f"trained: {args.out} (next: python -m training evaluate {args.out})")
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

        variants = args.variants.split(",") if args.variants else None
        run_ablation(config_from_args(args), args.out, variants)
    elif args.command == "export":
        from training.export import run_export

        print(f"exported: {run_export(args)}")
    elif args.command == "synth":
        from training.synthetic import make_synthetic_dataset

        print(f"wrote: {make_synthetic_dataset(args.out, size=args.size)}")
    return 0
