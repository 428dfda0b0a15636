"""Strip (``aspect-strip/1``, or the squash) against the 2-D grid (``grid/1``) at one small training budget.

    python docs/research/grid_resolution.py --out /work/scratch-grid/syn --synthetic 1024 --image-size 128 \
        --epochs 4 --memory-entries 512 --grid-max-tiles 6 [--defect-contrast 0.35]
    python docs/research/grid_resolution.py --out /work/scratch-grid/shared --data ../shared/data \
        --categories tire wood --image-size 128 --epochs 4 --memory-entries 512 --grid-max-tiles 6
    python docs/research/grid_resolution.py --out /tmp/unused --data ../shared/data --choice-only

Trains one run per variant with the same budget and seed: ``strip`` (``--grid off``: the tiled categories in
aspect-kept strips, the others squashed) and ``grid`` (``--grid auto``: each tiled category whose photos are at
least twice the image size on their short side cut into a grid at its native resolution, ``tiling.native_scale``).
Each run is evaluated on the test images as the service scores them (no category given: squashed pass, then the
recognised category's tiles): image AUROC, pixel AUROC and AUPRO per category (pixel figures on the image-size
square, masks squashed to it). Then the cost, side by side: the test images decoded once, then scored by each
run's planner in alternating rounds (PyTorch on the CPU, batches of 16 images), giving graph inputs per image and
images/s (the median round). ``--synthetic SIZE`` first writes generated parts at that size with small defects
(``training.synthetic``, 0.1–1 % of the image, ``--defect-contrast`` of the way to near-black or near-white) under
OUT/data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from model_store.outputs import GraphOutputs  # noqa: E402
from model_store.planner import Planner  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import discover, load_rgb  # noqa: E402
from training.engine import fit, with_resolved_tiling  # noqa: E402
from training.evaluate import METRIC_KEYS, evaluate_scorer  # noqa: E402
from training.report import torch_score_fn  # noqa: E402
from training.synthetic import make_synthetic_dataset  # noqa: E402

VARIANTS = {"strip": "off", "grid": "auto"}
SYNTHETIC_CATEGORIES = ("stripes", "blobs", "checker")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--categories", nargs="+", default=None)
    parser.add_argument("--synthetic", type=int, default=None, help="write generated parts of this size first")
    parser.add_argument("--defect-contrast", type=float, default=1.0, help="with --synthetic: fainter defects below 1")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--memory-entries", type=int, default=512)
    parser.add_argument("--grid-max-tiles", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--choice-only", action="store_true", help="print fit's grid choice at image sizes 256 and 128 and stop"
    )
    return parser.parse_args()


def print_choice(root: Path, categories: list[str] | None) -> None:
    """What ``fit --grid auto`` decides from the training images' headers (no training)."""
    index = discover([root], categories)
    for size in (256, 128):
        for cap in (4, 6):
            config = with_resolved_tiling(TrainConfig(image_size=size, grid="auto", grid_max_tiles=cap), index)
            print(f"image size {size}, grid_max_tiles {cap}: tiled {config.tile_categories}, grid {config.grid_scales}")


def synthetic_root(out: Path, size: int, contrast: float) -> Path:
    root = out / "data"
    if not root.is_dir():
        make_synthetic_dataset(
            root,
            SYNTHETIC_CATEGORIES,
            n_train=30,
            n_test_good=10,
            n_test_defect=10,
            size=size,
            defect_area=(0.001, 0.01),
            defect_contrast=contrast,
        )
    return root


def train(args: argparse.Namespace, root: Path, variant: str) -> tuple[object, float]:
    config = TrainConfig(
        data=[str(root)],
        categories=args.categories,
        image_size=args.image_size,
        epochs=args.epochs,
        memory_entries=args.memory_entries,
        grid=VARIANTS[variant],
        grid_max_tiles=args.grid_max_tiles,
        seed=args.seed,
        device="cpu",
    )
    started = time.perf_counter()
    model = fit(config, args.out / variant, progress=False)
    return model, time.perf_counter() - started


def throughput(models: dict, images: list[np.ndarray], rounds: int) -> dict[str, dict[str, float]]:
    """Images/s and graph inputs per image of each model's planner, rounds alternating between the models."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    inputs: dict[str, int] = {}
    for _ in range(rounds):
        for name, model in models.items():
            score, planner, count = torch_score_fn(model, torch.device("cpu")), model_planner(model), [0]

            def run(batch: np.ndarray, score=score, count=count) -> GraphOutputs:
                count[0] += len(batch)
                return GraphOutputs.from_arrays(*score(batch))

            started = time.perf_counter()
            for start in range(0, len(images), 16):
                planner.score(run, images[start : start + 16])
            seconds[name].append(time.perf_counter() - started)
            inputs[name] = count[0]
    return {
        name: {
            "inputs_per_image": inputs[name] / len(images),
            "images_per_s": len(images) / statistics.median(seconds[name]),
            "round_seconds": [round(s, 2) for s in seconds[name]],
        }
        for name in models
    }


def model_planner(model) -> Planner:
    return Planner(model.config.scoring, model.categories)


def main() -> None:
    args = arguments()
    torch.manual_seed(args.seed)
    root = synthetic_root(args.out, args.synthetic, args.defect_contrast) if args.synthetic else args.data
    if args.choice_only:
        print_choice(root, args.categories)
        return
    index = discover([root], args.categories)
    models, report = {}, {"command": " ".join(sys.argv), "variants": {}}
    for variant in VARIANTS:
        model, seconds = train(args, root, variant)
        models[variant] = model
        metrics = evaluate_scorer(
            torch_score_fn(model, torch.device("cpu")),
            index,
            args.image_size,
            args.out / variant / "eval",
            progress=False,
            model_categories=model.categories,
            scoring=model.config.scoring,
        )
        report["variants"][variant] = {
            "scoring": model.config.scoring.tiling.model_dump(mode="json"),
            "train_seconds": round(seconds, 1),
            "training_tiles": json.loads((args.out / variant / "training_data.json").read_text())["training_tiles"],
            "metrics": {name: {k: entry[k] for k in METRIC_KEYS} for name, entry in metrics["categories"].items()},
            "mean": {k: metrics["mean"][k] for k in METRIC_KEYS},
        }
    images = [load_rgb(sample.path) for sample in index.test]
    report["cost"] = throughput(models, images, args.rounds)
    (args.out / "grid_resolution.json").write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict) -> None:
    print(report["command"])
    for variant, entry in report["variants"].items():
        print(f"\n{variant}: {json.dumps(entry['scoring'])}")
        print(f"  trained {entry['train_seconds']} s on {entry['training_tiles']} tiles")
        for name, row in [*entry["metrics"].items(), ("mean", entry["mean"])]:
            print(f"  {name:10s} " + "  ".join(f"{k} {_fmt(row[k])}" for k in row))
    print("\ncost (test images decoded once; rounds alternate between the runs; PyTorch CPU, 16 images a batch)")
    for variant, cost in report["cost"].items():
        print(
            f"  {variant:6s} graph inputs/image {cost['inputs_per_image']:.2f}  images/s {cost['images_per_s']:.2f}"
            f"  rounds {cost['round_seconds']}"
        )


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
