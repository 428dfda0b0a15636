"""``fit``: train one PRD model on the normal images of every category at once.

The teacher is frozen, so its features are computed once per training image and cached (float16, in memory):
an epoch then costs only the bottleneck, prototypes and student, which is what makes CPU training practical.
No augmentation: the cached features are the training set (augmenting would need the teacher in the loop).

A run folder holds ``config.json``, ``checkpoint.pt`` (written atomically after every epoch: model, optimiser,
sampler state, elapsed time), ``log.jsonl`` (one line per epoch) and ``training_data.json``. ``resume=True``
continues from the checkpoint with the same sampler state, so an interrupted run ends where an uninterrupted one
would. Same seed and data → same weights on CPU.

Under ``torchrun`` (``training/distributed.py``) the same ``fit`` trains one model across processes with DDP: the
teacher features, patch memories and map scales are computed in shares, every optimiser step sees the same global
batch of ``config.batch_size`` tiles as one process would (split between the ranks), and rank 0 alone writes the
run folder, so ``--resume`` and ``export`` read it as any other run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from tqdm import tqdm

from model_store.planner import DEFAULT_SLACK
from model_store.tiling import fixed_frame, native_scale
from training import distributed
from training.calibrate import holdout_split
from training.config import Device, TrainConfig
from training.data import DatasetIndex, discover, image_size, load_tiles
from training.loss import coherence_loss, distillation_loss
from training.memory import build_memory, category_memory
from training.model import CHECKPOINT_FILE, CONFIG_FILE, Distilled, PRDModel, save_checkpoint, with_resolved_taps
from training.recognition import fit_centroids, pooled_descriptor

log = logging.getLogger(__name__)
LOG_FILE = "log.jsonl"
FEATURE_BATCH = 32


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; the choices are ``config.Device``'s."""
    if name not in get_args(Device):
        raise ValueError(f"--device: unknown device {name!r} ({', '.join(get_args(Device))})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "cuda" and distributed.world().distributed:
        return torch.device("cuda", distributed.world().local_rank)  # one GPU per process on each host
    return torch.device(name)


def training_samples(config: TrainConfig, index: DatasetIndex) -> list:
    """train/good minus the calibration hold-out (categories with validation/good keep all their train images)."""
    train, _ = holdout_split(index.train, config.holdout_fraction, validation=index.validation)
    return train


@torch.no_grad()
def cache_teacher_features(
    model: PRDModel, images: np.ndarray, device: torch.device, progress: bool
) -> list[torch.Tensor]:
    """Teacher maps of every training image, float16, on ``device``."""
    chunks: list[list[torch.Tensor]] = []
    for start in tqdm(
        range(0, len(images), FEATURE_BATCH), desc="teacher features", unit="batch", disable=not progress
    ):
        batch = torch.from_numpy(images[start : start + FEATURE_BATCH]).to(device)
        chunks.append([f.half() for f in model.teacher_features(batch)])
    return [torch.cat([c[level] for c in chunks]) for level in range(len(chunks[0]))]


@torch.no_grad()
def set_category_centroids(model: PRDModel, features: list[torch.Tensor], category_ids: torch.Tensor) -> None:
    """k-means centroids of each category's pooled teacher descriptors: what the graph's recognition compares with."""
    descriptors = torch.cat(
        [pooled_descriptor([f[i : i + 256].float() for f in features]) for i in range(0, len(category_ids), 256)]
    )
    per_category = model.centroids_per_category
    model.centroids.copy_(fit_centroids(descriptors, category_ids, len(model.categories), per_category))


def with_resolved_tiling(config: TrainConfig, index: DatasetIndex) -> TrainConfig:
    """``config`` with ``tile_categories`` and ``grid_scales`` decided from the training images where they are not
    given, and named categories checked against the data.

    Tiled: each category whose photos share one frame (``tiling.fixed_frame``). Grid scales: with ``grid auto``,
    each tiled category's ``tiling.native_scale`` (kept when above 1), then ``grid_scales``' own entries on top.
    """
    tiled = config.tile_categories
    if tiled is None:
        tiled = [c for c in index.categories if fixed_frame(_train_sizes(index, c))]
    unknown = sorted(set(tiled) - set(index.categories))
    if unknown:
        raise ValueError(f"--tile-categories: {unknown} not among the data's categories {index.categories}")
    given = dict(config.grid_scales or {})
    untiled = sorted(set(given) - set(tiled))
    if untiled:
        raise ValueError(f"--grid-scales: {untiled} are not tiled categories (tiled: {sorted(tiled)})")
    scales: dict[str, float] = {}
    if config.grid == "auto":
        for name in tiled:
            size = config.image_size
            scales[name] = native_scale(_train_sizes(index, name), size, config.grid_max_tiles, DEFAULT_SLACK)
    scales.update(given)
    chosen = {name: float(k) for name, k in sorted(scales.items()) if k > 1}
    return dataclasses.replace(config, tile_categories=list(tiled), grid_scales=chosen)


def _train_sizes(index: DatasetIndex, category: str) -> list[tuple[int, int]]:
    """(width, height) of a category's training images, from their headers."""
    return [image_size(s.path) for s in index.samples("train", category)]


def held_out_samples(config: TrainConfig, index: DatasetIndex) -> list:
    """The normals calibration uses: the trainer's hold-out slice of train/good plus every validation/good image."""
    _, held_out = holdout_split(index.train, config.holdout_fraction, validation=index.validation)
    return list(held_out) + [s for s in index.validation if s.label == 0]


@torch.no_grad()
def calibrate_map_scales(model: PRDModel, images: np.ndarray, device: torch.device, progress: bool) -> dict[str, float]:
    """Mean student map and mean memory map over the held-out normal images: the fused map's units.

    The held-out normals are those calibration uses (``held_out_samples``), never test images.
    """
    sums = torch.zeros(2, dtype=torch.float64)
    model.eval()
    lo, hi = distributed.world().shard(len(images))  # each rank its slice; the sums are added up below
    for start in tqdm(range(lo, hi, FEATURE_BATCH), desc="map scales", unit="batch", disable=not progress):
        batch = torch.from_numpy(images[start : min(start + FEATURE_BATCH, hi)]).to(device)
        features = model.teacher_features(batch)
        rd, memory = model.component_maps(features)
        sums += torch.stack([rd.mean(dim=(1, 2, 3)).sum(), memory.mean(dim=(1, 2, 3)).sum()]).double().cpu()
    rd_scale, memory_scale = (distributed.all_sum(sums) / len(images)).tolist()
    model.anomaly_map.rd_scale.fill_(rd_scale)
    model.anomaly_map.memory_scale.fill_(memory_scale)
    return {"rd_scale": rd_scale, "memory_scale": memory_scale, "held_out_images": len(images)}


@torch.no_grad()
def set_channel_weights(model: PRDModel, features: list[torch.Tensor]) -> None:
    """1 / (var_c + 0.1·mean var) per teacher channel over the training features: the magnitude term's units."""
    if model.anomaly_map.channel_weights is None:
        return
    weights = []
    for f in features:
        flat = torch.cat([f[i : i + 256].float().transpose(0, 1).flatten(1) for i in range(0, len(f), 256)], dim=1)
        variance = flat.var(dim=1)
        weights.append(1 / (variance + 0.1 * variance.mean()))
    model.anomaly_map.channel_weights.copy_(torch.cat(weights))


def training_step(
    model: PRDModel, features: list[torch.Tensor], config: TrainConfig, distill: Callable | None = None
) -> tuple[torch.Tensor, Distilled]:
    """One step's loss; ``distill`` is ``model.distill`` or, across processes, its DDP wrapper (``Distiller``)."""
    distill = distill or model.distill
    if model.bank is not None and not model.bank.initialised:
        model.bank.seed_from(model.distill(features).filtered)
        distributed.broadcast_(model.bank.prototypes)  # seeded from rank 0's share of the first batch
    out = distill(features)
    loss = distillation_loss(
        features,
        out.student,
        mode=config.loss,
        quantile=config.hard_mining_quantile,
        magnitude_weight=config.magnitude_weight,
        channel_weights=model.anomaly_map.per_scale_channel_weights(),
        target=config.loss_target,
    )
    if out.recall is not None and config.coherence_weight > 0:
        loss = loss + config.coherence_weight * coherence_loss(out.recall.best_similarity)
    return loss, out


@dataclass
class Prepared:
    """Everything a run needs before its first step; shared by runs with the same data and teacher (ablation)."""

    index: DatasetIndex
    samples: list
    features: list[torch.Tensor]
    category_ids: torch.Tensor
    centroids: torch.Tensor
    held_out: np.ndarray
    """Tiles of the held-out normals (``held_out_samples``), decoded up front so a bad file stops the run before
    training."""
    memories: dict[tuple[int, bool], torch.Tensor] = field(default_factory=dict)
    """Patch memories already built from these features, by size and kind (variants of an ablation share them)."""

    def memory(self, entries: int, per_category: bool, seed: int, progress: bool) -> torch.Tensor:
        """(entries, D) shared memory, or (categories, entries, D) with one per category."""
        key = (entries, per_category)
        if key not in self.memories:  # across processes, each rank builds every N-th memory (one alone: rank 0)
            jobs = (
                [
                    partial(category_memory, self.features, self.category_ids, k, entries, seed, progress)
                    for k in range(len(self.index.categories))
                ]
                if per_category
                else [partial(build_memory, self.features, entries, seed, progress)]
            )
            built = distributed.shared_out(jobs)
            self.memories[key] = torch.stack(built) if per_category else built[0]
        return self.memories[key]


def prepare(
    config: TrainConfig, model: PRDModel, index: DatasetIndex, device: torch.device, progress: bool = True
) -> Prepared:
    """Hold out the calibration slice, cut the training images into tiles and cache the teacher's features.

    Every tile is a training input of its image's category (``config.scoring``: the tiled categories' images in
    aspect-kept tiles, the others squashed into one square each). Across processes each rank decodes and runs the
    teacher on its slice of the images; the slices are gathered in rank order, as one process would hold them.
    """
    rule, workers = config.scoring, config.workers
    held = held_out_samples(config, index)
    held_out = load_tiles(held, rule, progress=False, workers=workers).images
    samples = training_samples(config, index)
    lo, hi = distributed.world().shard(len(samples))
    if lo == hi:
        message = f"{len(samples)} training images cannot be shared out between {distributed.world().size} ranks"
        raise ValueError(message)
    tiles = load_tiles(samples[lo:hi], rule, progress=progress, workers=workers)
    features = [distributed.gather_rows(f) for f in cache_teacher_features(model, tiles.images, device, progress)]
    owners = distributed.gather_rows(torch.from_numpy(tiles.owners) + lo)
    sample_ids = torch.tensor([index.categories.index(s.category) for s in samples], dtype=torch.long)
    category_ids = sample_ids[owners].to(device)
    del tiles
    set_category_centroids(model, features, category_ids)
    set_channel_weights(model, features)
    return Prepared(index, samples, features, category_ids, model.centroids.detach().clone(), held_out)


def fit(
    config: TrainConfig, out_dir: Path, resume: bool = False, progress: bool = True, prepared: Prepared | None = None
) -> PRDModel:
    """Train, checkpointing every epoch; stops at ``config.epochs`` or ``config.max_minutes``, whichever first.

    ``prepared`` reuses another run's decoded data and cached teacher features (same data, teacher and image
    size); the ablation trains every variant from one cache this way. Across processes (``distributed``) every rank
    calls ``fit`` alike; only rank 0 writes files or shows progress.
    """
    started = time.monotonic()
    here = distributed.world()
    progress = progress and here.main
    index = prepared.index if prepared else discover([Path(p) for p in config.data], config.categories)
    config = with_resolved_tiling(with_resolved_taps(config), index)  # taps and tiled categories written out
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _load_resume_state(out_dir, config) if resume else None
    distributed.barrier()  # every rank has read the checkpoint before rank 0 writes anything
    if checkpoint is None and here.main:
        (out_dir / LOG_FILE).unlink(missing_ok=True)  # a fresh run's log holds only its own epochs
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = resolve_device(config.device)
    if here.main:
        config.save(out_dir / CONFIG_FILE)

    if config.memory_entries > 0 and not held_out_samples(config, index):
        raise ValueError(
            "--memory-entries: the patch memory is scaled on held-out normal images and there are none "
            "(raise --holdout-fraction, add validation/good folders, or set --memory-entries 0)"
        )
    model = PRDModel(config, index.categories).to(device)
    if prepared is None:
        prepared = prepare(config, model, index, device, progress)
    else:
        model.centroids.copy_(prepared.centroids)
        set_channel_weights(model, prepared.features)
    if model.anomaly_map.memory is not None and checkpoint is None:  # a resumed run's memory is in its checkpoint
        memory = prepared.memory(config.memory_entries, config.memory_per_category, config.seed, progress)
        model.anomaly_map.memory.set_entries(memory.to(device))
    features, category_ids = prepared.features, prepared.category_ids
    summary = {**prepared.index.summary(), "trained_on": len(prepared.samples), "training_tiles": len(category_ids)}
    if here.main:
        summary["processes"] = here.size
        (out_dir / "training_data.json").write_text(json.dumps(summary, indent=2))

    optimizer = torch.optim.Adam(
        model.trainable_parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    sampler = torch.Generator().manual_seed(config.seed)
    first_epoch, elapsed_before = 0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"], strict=False)
        if model.bank is not None:
            model.bank.initialised = True
        optimizer.load_state_dict(checkpoint["optimizer"])
        sampler.set_state(checkpoint["sampler"])
        first_epoch, elapsed_before = checkpoint["epoch"] + 1, checkpoint.get("elapsed_s", 0.0)
        log.info("resuming %s at epoch %d", out_dir, first_epoch)
    deadline = None if config.max_minutes is None else config.max_minutes * 60 - elapsed_before

    n, batch = len(category_ids), min(config.batch_size, len(category_ids))
    if batch < here.size:
        message = f"--batch-size: a global batch of {batch} tiles cannot be split between {here.size} ranks"
        raise ValueError(message)
    steps_per_epoch = max(1, n // batch)
    distill = distributed.distiller(model, device)
    model.train()
    resume_state: dict | None = None
    with tqdm(total=config.epochs, initial=first_epoch, desc="training", unit="epoch", disable=not progress) as bar:
        for epoch in range(first_epoch, config.epochs):
            epoch_start, losses = time.monotonic(), []
            order = torch.randperm(n, generator=sampler)
            for step in range(steps_per_epoch):
                idx = order[step * batch : (step + 1) * batch][here.rank :: here.size].to(device)  # this rank's share
                loss, out = training_step(model, [f[idx].float() for f in features], config, distill)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            reseeded = distributed.reseed_dead(model, out) if model.bank is not None and config.reseed_dead else 0
            distributed.average_norm_statistics(model)
            seconds = time.monotonic() - epoch_start
            mean_loss = distributed.all_sum(torch.tensor([np.mean(losses)], dtype=torch.float64)).item() / here.size
            record = {
                "epoch": epoch,
                "loss": float(mean_loss),
                "images_per_s": steps_per_epoch * batch / seconds,
                "reseeded_prototypes": reseeded,
                "elapsed_s": elapsed_before + time.monotonic() - started,
            }
            if here.main:
                with open(out_dir / LOG_FILE, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            out_of_time = distributed.any_rank(deadline is not None and time.monotonic() - started >= deadline)
            resume_state = {
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.get_state(),
                "epoch": epoch,
                "elapsed_s": record["elapsed_s"],
                "stopped_early": out_of_time,
            }
            if here.main:
                save_checkpoint(model, out_dir, **resume_state)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            bar.update(1)
            if out_of_time:
                log.info("stopping after epoch %d: --max-minutes %.1f reached", epoch, config.max_minutes)
                break
    if model.anomaly_map.memory is not None:
        scales = calibrate_map_scales(model, prepared.held_out, device, progress)
        if here.main:
            (out_dir / "map_scales.json").write_text(json.dumps(scales, indent=2))
        if resume_state is not None and here.main:  # the last epoch's checkpoint again, now with its scales
            save_checkpoint(model, out_dir, **resume_state)
    distributed.barrier()  # the run folder is complete before any rank returns
    return model.eval()


def _load_resume_state(out_dir: Path, config: TrainConfig) -> dict | None:
    path = out_dir / CHECKPOINT_FILE
    if not path.is_file():
        log.info("--resume: no checkpoint in %s yet; starting fresh", out_dir)
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = with_resolved_taps(TrainConfig.from_dict(state["config"])).to_dict()
    changed = [k for k, v in config.to_dict().items() if k not in ("epochs", "max_minutes", "device") and saved[k] != v]
    if changed:
        raise ValueError(f"--resume: {path} was trained with other settings ({', '.join(changed)}); use a new --out")
    return state
