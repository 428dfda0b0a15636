"""``add-category``: a trained run learns new kinds of part from their good images alone, in minutes.

Most of what a category needs comes from its normal images through the frozen teacher: its recognition centroids,
its patch memory and (at export) its calibration. The bottleneck, the prototypes and the student are shared by
every category and stay exactly as trained, and so do the channel weights and map scales, which are global. The
new run therefore scores every image of a category it already knew bit for bit as before, as long as the image is
still recognised as that category (the new centroids only add columns to ``category_similarity``); the new
category's maps come from a student that never saw it, so its student share is weaker than a full fit's
(``docs/onboarding.md`` measures by how much).

Needs a run with one patch memory per category (``memory_per_category``, the default) or none: a shared memory
would have to be rebuilt, which would move the known categories' scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from model_store.tiling import fixed_frame
from training.data import DataError, discover, image_size, load_tiles
from training.engine import cache_teacher_features, held_out_samples, resolve_device, training_samples
from training.memory import build_category_memories
from training.model import CONFIG_FILE, PRDModel, RunError, load_run, save_checkpoint
from training.recognition import fit_centroids, pooled_descriptor

log = logging.getLogger(__name__)

MIN_TRAIN_IMAGES = 10
"""Good images a new category needs at least: with the run's hold-out of 10 %, one or more are held out for its
threshold and the rest build its centroids and memory (calibration warns below 10 held-out images)."""

MIN_SIDE = 32
"""Shortest image side the teacher's coarsest stage (1/32) still sees as one position."""


class OnboardError(ValueError):
    """A category that cannot be added; the message names it and what to do."""


def add_categories(
    run_dir: Path, data_roots: list[Path], names: list[str], out_dir: Path, progress: bool = True
) -> PRDModel:
    """Write ``out_dir``: ``run_dir``'s model with ``names`` added from their good images under ``data_roots``."""
    started = time.monotonic()
    model = load_run(Path(run_dir))
    config = model.config
    _check_names(names, model.categories)
    if config.memory_entries > 0 and not config.memory_per_category:
        message = (
            f"{run_dir}: its patch memory is shared by all categories, so adding one would move every score; "
            "add categories to a run trained with --memory-per-category true"
        )
        raise OnboardError(message)
    index = discover([Path(r) for r in data_roots], names)
    added_config = dataclasses.replace(config, categories=names)
    samples = training_samples(added_config, index)
    _check_images(index, names, samples, added_config)
    tiled = [n for n in names if config.max_tiles > 1 and fixed_frame(_sizes(index, n))]
    new_config = dataclasses.replace(
        config,
        data=list(dict.fromkeys([*config.data, *[str(r) for r in data_roots]])),
        categories=[*model.categories, *names],
        tile_categories=[*(config.tile_categories or []), *tiled],
        added_categories=[*config.added_categories, *names],
    )
    device = resolve_device(config.device)
    grown = PRDModel(new_config, new_config.categories).to(device).eval()
    tiles = load_tiles(samples, new_config.scoring, progress=progress, workers=config.workers)
    features = cache_teacher_features(grown, tiles.images, device, progress)
    owners = torch.tensor([names.index(s.category) for s in samples], dtype=torch.long)
    category_ids = owners[torch.from_numpy(tiles.owners)].to(device)
    state = model.trained_state()
    descriptors = torch.cat(
        [pooled_descriptor([f[i : i + 256].float() for f in features]) for i in range(0, len(category_ids), 256)]
    )
    centroids = fit_centroids(descriptors, category_ids, len(names), config.category_centroids, config.seed)
    state["centroids"] = torch.cat([state["centroids"].to(device), centroids])
    if config.memory_entries > 0:
        memories = build_category_memories(
            features, category_ids, len(names), config.memory_entries, config.seed, progress
        ).flatten(0, 1)
        state["anomaly_map.memory.entries"] = torch.cat([state["anomaly_map.memory.entries"].to(device), memories])
        state["anomaly_map.memory.entry_norms"] = state["anomaly_map.memory.entries"].pow(2).sum(dim=1)
    grown.load_state_dict(state, strict=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_config.save(out_dir / CONFIG_FILE)
    save_checkpoint(grown, out_dir, epoch=-1, added_from=str(run_dir))
    summary = {
        **index.summary(),
        "added_to": str(run_dir),
        "added": names,
        "trained_on": len(samples),
        "seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "onboarding.json").write_text(json.dumps(summary, indent=2))
    log.info("added %s to %s in %.0f s: %s", names, run_dir, summary["seconds"], out_dir)
    return grown


def _check_names(names: list[str], known: list[str]) -> None:
    if not names:
        raise OnboardError("--category: name at least one category to add")
    again = sorted({n for n in names if names.count(n) > 1})
    if again:
        raise OnboardError(f"--category {again[0]}: named twice")
    clash = [n for n in names if n in known]
    if clash:
        raise OnboardError(f"--category {clash[0]}: the model already has it (its categories: {', '.join(known)})")


def _sizes(index: object, name: str) -> list[tuple[int, int]]:
    return [image_size(s.path) for s in index.samples("train", name)]


def _check_images(index: object, names: list[str], samples: list, config: object) -> None:
    """Enough good images, some held out for the threshold, and sides the teacher can see."""
    held = held_out_samples(config, index)
    for name in names:
        good = index.samples("train", name)
        if len(good) < MIN_TRAIN_IMAGES:
            message = (
                f"--category {name}: {len(good)} good images under train/good, at least {MIN_TRAIN_IMAGES} needed "
                f"(some build its memory, {config.holdout_fraction:.0%} are held out to set its threshold)"
            )
            raise OnboardError(message)
        if not any(s.category == name for s in held):
            raise OnboardError(f"--category {name}: no good image is held out for its threshold; add more")
        small = [s.path for s in good if min(image_size(s.path)) < MIN_SIDE]
        if small:
            message = f"{small[0]}: {name}'s images must be at least {MIN_SIDE} px on their short side"
            raise OnboardError(message)
    if not any(s.category in names for s in samples):
        raise OnboardError(f"--category {', '.join(names)}: no training images left after the hold-out")


def add_onboard_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m training add-category``."""
    parser.add_argument("run", type=Path, help="trained run folder to add to (config.json, checkpoint.pt)")
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="MVTec-layout root holding the new categories"
    )
    parser.add_argument(
        "--category",
        action="append",
        required=True,
        help="a category to add, a folder under a --data root with train/good images (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="new run folder (export it as the next version)")


def run_onboarding(args: argparse.Namespace) -> Path:
    """CLI entry: one line naming the problem on failure."""
    try:
        add_categories(args.run, args.data, args.category, args.out)
    except (OnboardError, DataError, RunError) as exc:
        raise SystemExit(f"add-category failed: {exc}") from exc
    return args.out
