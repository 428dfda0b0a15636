"""Teacher-space normal prototypes: a fixed-size memory of normal teacher patches, and its distance map.

The student's map (1 − cos of teacher and student) is blind to what the student reproduces well, and a multi-class
student reproduces some anomalies well: smooth, low-contrast ones (magnetic tiles ground unevenly, tire tread
variations) change the teacher's features a little along directions a decoder trained on four textures copies.
A nearest-normal-patch distance in the teacher's own space does not depend on what a decoder learned to copy, so it
is the complementary signal: the ablation measures the two maps alone and fused (``docs/ablations.md``). This
module is PRD's "normal prototypes" taken literally in teacher space, beside the learned MNP bank on the embedding
(``prototypes.py``), and is a switch like every other part (``memory_entries=0``: off).

Choices, and why:

- **Descriptor**: the teacher's first two tapped maps, each 3×3 averaged (local context, as PatchCore), the coarse
  one bilinearly upsampled to the fine grid and concatenated — one vector per 1/8-scale position. The features are
  those the trainer already caches, so building the memory costs no extra teacher pass.
- **Fixed size, chosen by greedy coreset** (PatchCore's k-center selection): K entries whatever the amount of
  training data, so the graph's size and scoring time do not grow with the data. Greedy k-center keeps the rare
  normal patterns a random subsample of the same size drops. It runs on a random projection (``PROJECTION_DIM``)
  of at most ``CANDIDATES`` random training positions, which bounds its cost on a CPU.
- **One memory per category** (``memory_per_category``, default), each image measured against the memory of the
  category the graph recognises it as (``recognition.py``: all 940 test images of ``../shared/data`` named
  correctly). A defect of one product can look like a normal patch of another, and one shared memory then calls it
  normal. Per category, each memory answers only for the patches that can be normal for that part, so a quarter
  of the entries of one shared memory detect as well (the same graph size for four categories, a quarter of the
  distance computations per image; ``docs/ablations.md``, ``docs/changelog.md`` at ``prd/5``). A wrongly
  recognised image is measured against another product's normal patches, so it scores high: it fails towards an
  alarm rather than a pass (unless two categories look alike, when either memory serves). Scoring time stays flat
  as categories are added; the graph grows by one memory each.
- **Distance**: Euclidean to the nearest entry, computed as ‖q‖² − 2 q·b + ‖b‖² (MatMul + ReduceMin in ONNX, so
  it is exported inside the graph like the rest of the map), ``CHUNK_ENTRIES`` entries at a time with a running
  minimum: the full (positions × entries) product of a batch is an intermediate that grows with the batch (1 GB for
  16 images against 16 384 entries) and slows ONNX Runtime down as the batch grows, where chunks keep the rate flat
  (``docs/research/memory_chunk_bench.py``; ``docs/research/README.md``).
- **Fusion** (``AnomalyMap``): both maps are brought to one scale by their mean over the held-out normal images
  (set once after training by ``engine.calibrate_map_scales``), then ``rd / rd_scale + α · memory / memory_scale``
  is smoothed and scored like the plain map. With the scales fixed, the fused map is a fixed function of the image.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)
CHUNK_ENTRIES = 1024
PROJECTION_DIM = 64
CANDIDATES = 200_000


def patch_descriptors(features: list[torch.Tensor], pool: int = 3) -> torch.Tensor:
    """(N, D, h, w) descriptors from the first two teacher maps: ``pool`` × ``pool`` averaged (the model's: 3; odd),
    coarse upsampled, concatenated."""
    fine, coarse = (F.avg_pool2d(f, pool, 1, pool // 2) for f in features[:2])
    coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([fine, coarse], dim=1)


def as_rows(descriptors: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) → (N·h·w, D), image by image, row by row."""
    return descriptors.flatten(2).transpose(1, 2).flatten(0, 1)


class PatchMemory(nn.Module):
    """``forward(teacher maps, bank) → (N, 1, h, w)`` distance of each position to its nearest memory entry.

    ``banks`` memories of ``entries`` rows each, stored one after the other in one ``(banks·entries, D)`` buffer;
    with several, ``bank`` (N,) says which one each image is measured against (its recognised category).
    """

    def __init__(self, entries: int, dim: int, chunk_entries: int = CHUNK_ENTRIES, banks: int = 1) -> None:
        super().__init__()
        self.banks, self.bank_entries = banks, entries
        self.register_buffer("entries", torch.zeros(banks * entries, dim))
        self.register_buffer("entry_norms", torch.zeros(banks * entries))
        self.chunk_entries = chunk_entries

    @torch.no_grad()
    def set_entries(self, entries: torch.Tensor) -> None:
        """(banks·entries, D) rows, or (banks, entries, D) with one memory per bank."""
        if entries.dim() == 3 and entries.shape[0] == self.banks:
            entries = entries.flatten(0, 1)
        if entries.shape != self.entries.shape:
            expected = (self.banks, self.bank_entries, self.entries.shape[1]) if self.banks > 1 else self.entries.shape
            raise ValueError(f"memory entries must be {tuple(expected)}, got {tuple(entries.shape)}")
        self.entries.copy_(entries)
        self.entry_norms.copy_(entries.pow(2).sum(dim=1))

    def forward(self, features: list[torch.Tensor], bank: torch.Tensor | None = None) -> torch.Tensor:
        query = patch_descriptors(features)
        n, _, h, w = query.shape
        return self.nearest_distances(query.flatten(2).transpose(1, 2), bank).reshape(n, 1, h, w)

    def nearest_distances(self, rows: torch.Tensor, bank: torch.Tensor | None = None) -> torch.Tensor:
        """(N, P, D) descriptors → (N, P) Euclidean distance of each to its nearest entry (of its ``bank``)."""
        if self.banks == 1:  # one memory for every image: (N, P, D) @ (D, chunk)
            entries, norms = self.entries, self.entry_norms
        elif bank is None:
            raise ValueError(f"this memory has {self.banks} banks (one per category): say which each image uses")
        else:  # each image's own bank: (N, P, D) @ (N, D, chunk)
            entries = self.entries.reshape(self.banks, self.bank_entries, -1)[bank]
            norms = self.entry_norms.reshape(self.banks, self.bank_entries)[bank].unsqueeze(1)
        nearest: torch.Tensor | None = None
        for start in range(0, self.bank_entries, self.chunk_entries):  # ‖b‖² − 2 q·b, minimised chunk by chunk
            end = start + self.chunk_entries
            products = rows @ entries[..., start:end, :].transpose(-2, -1)  # (N, P, chunk) either way
            distances = (norms[..., start:end] - 2 * products).min(dim=2).values
            nearest = distances if nearest is None else torch.minimum(nearest, distances)
        assert nearest is not None  # a memory has at least one entry
        return (nearest + rows.pow(2).sum(dim=2)).clamp(min=0).sqrt()


@torch.no_grad()
def greedy_coreset(
    points: torch.Tensor, size: int, seed: int = 0, progress: bool = False, chunk: int = 65536
) -> torch.Tensor:
    """Indices of ``size`` rows chosen by greedy k-center on a random projection; all rows when there are fewer.

    ``points`` (M, D) may be float16; at most ``CANDIDATES`` random rows take part, which bounds the cost at
    ``size × CANDIDATES × PROJECTION_DIM`` multiply-adds.
    """
    generator = torch.Generator().manual_seed(seed)
    total = len(points)
    if size >= total:
        return torch.arange(total)
    candidates = torch.randperm(total, generator=generator)[: min(total, CANDIDATES)]
    projection = torch.randn(points.shape[1], PROJECTION_DIM, generator=generator) / PROJECTION_DIM**0.5
    projected = torch.cat(
        [points[candidates[i : i + chunk]].float() @ projection for i in range(0, len(candidates), chunk)]
    )
    if size >= len(candidates):
        return candidates[:size]
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(candidates), (1,), generator=generator))
    norms = projected.pow(2).sum(dim=1)
    nearest = torch.full((len(candidates),), float("inf"))
    for i in tqdm(range(size), desc="memory coreset", unit="entry", disable=not progress, mininterval=1.0):
        centre = projected[chosen[i]]
        squared = torch.addmv(norms + centre.pow(2).sum(), projected, centre, alpha=-2)  # ‖p − c‖²
        torch.minimum(nearest, squared, out=nearest)
        if i + 1 < size:
            chosen[i + 1] = int(nearest.argmax())
    return candidates[chosen]


@torch.no_grad()
def training_patches(features: list[torch.Tensor], batch: int = 64, pool: int = 3) -> torch.Tensor:
    """(M, D) float16 descriptors (``patch_descriptors``) of every position of cached teacher features (any dtype),
    batch by batch."""
    return torch.cat(
        [
            as_rows(patch_descriptors([f[i : i + batch].float() for f in features], pool)).half()
            for i in range(0, len(features[0]), batch)
        ]
    )


@torch.no_grad()
def build_memory(features: list[torch.Tensor], entries: int, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """(entries, D) memory of normal patches from cached teacher features (any dtype; float32 result)."""
    descriptors = training_patches(features)
    if len(descriptors) < entries:  # every patch, repeated to fill the memory: repeats do not move a nearest distance
        log.warning(
            "memory: %d entries asked, the training data has %d patches; keeping all", entries, len(descriptors)
        )
        return descriptors[torch.arange(entries) % len(descriptors)].float()
    return descriptors[greedy_coreset(descriptors, entries, seed, progress)].float()


@torch.no_grad()
def build_category_memories(
    features: list[torch.Tensor],
    category_ids: torch.Tensor,
    categories: int,
    entries: int,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """(categories, entries, D): one memory per category, each from that category's training images alone."""
    return torch.stack([category_memory(features, category_ids, k, entries, seed, progress) for k in range(categories)])


@torch.no_grad()
def category_memory(
    features: list[torch.Tensor], category_ids: torch.Tensor, k: int, entries: int, seed: int, progress: bool
) -> torch.Tensor:
    """(entries, D) memory of category index ``k`` (one job of ``build_category_memories``; ranks share them out)."""
    rows = category_ids == k
    if not bool(rows.any()):
        raise ValueError(f"category index {k} has no training images to build its patch memory from")
    return build_memory([f[rows] for f in features], entries, seed, progress)
