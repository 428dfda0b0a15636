"""Which parts of a float bundle's graph can be int8: quantise different node scopes, score some categories.

    python docs/research/int8_scopes.py --data ../shared/data --bundle model_store/repository/prd/7 \\
        --categories tire --variants fp32,all,student,teacher,no_stem_b0,late_b5

Each variant is ``training.quantize.quantize_graph`` with its own scopes (the same calibration inputs for all),
scored as the service scores (``training.evaluate``: tiles, routing, the bundle's rule) on the test images of
``--categories``. Picked ``training.quantize.FLOAT_SCOPES`` (the teacher's stem and first block stay float).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

import training.quantize as quantize  # noqa: E402
from training.data import discover  # noqa: E402
from training.evaluate import evaluate_scorer, score_fn_from_onnx  # noqa: E402
from training.recalibrate import load_source  # noqa: E402

STUDENT = ("/bottleneck/", "/decoder/")


def blocks(indices: range) -> tuple[str, ...]:
    return tuple(f"/teacher/blocks.{i}/" for i in indices)


VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # (quantised scopes, float scopes inside them)
    "all": (("/teacher/", *STUDENT), ()),
    "student": (STUDENT, ()),
    "teacher": (("/teacher/",), ()),
    "no_stem_b0": (("/teacher/", *STUDENT), ("/teacher/stem/", "/teacher/blocks.0/")),
    "late_b5": ((*blocks(range(5, 14)), *STUDENT), ()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True, help="the float bundle folder")
    parser.add_argument("--categories", default="tire", help="comma-separated categories to score")
    parser.add_argument("--variants", default="fp32," + ",".join(VARIANTS), help="fp32 and/or " + ", ".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/int8_scopes"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = load_source(args.bundle)
    manifest = source.manifest
    settings = quantize.QuantizeSettings()
    inputs = quantize.calibration_inputs(source, discover([args.data], manifest.categories), settings)
    index = discover([args.data], args.categories.split(","))
    for name in args.variants.split(","):
        started = time.monotonic()
        path = source.onnx_path
        if name != "fp32":
            path = args.out / f"{name}.onnx"
            quantize.quantize_graph(source.onnx_path, path, inputs, settings, *VARIANTS[name])
        metrics = evaluate_scorer(
            score_fn_from_onnx(path),
            index,
            manifest.input.height,
            args.out / name,
            model_categories=manifest.categories,
            scoring=manifest.scoring,
            progress=False,
        )
        keys = ("image_auroc", "pixel_auroc", "aupro")
        figures = {c: {k: round(v[k], 4) for k in keys} for c, v in metrics["categories"].items()}
        print(name, figures, f"{time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
