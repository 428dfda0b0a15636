"""Training on several processes (``torchrun``): the process group, the collectives ``fit`` needs, and its DDP parts.

``torchrun --nproc-per-node N -m training fit ...`` starts N copies of the same command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in the environment; ``process_group`` joins them (gloo on the CPU,
NCCL on CUDA, one GPU per local rank). Outside torchrun (or with ``WORLD_SIZE=1``) nothing is initialised and
every helper here is the single-process identity, so ``fit`` has one code path.

What ``fit`` shares out (``training/engine.py``): decoding and teacher features of the training images (each rank a
contiguous slice, gathered so every rank holds all of them in the same order as one process), the patch memories
(one category per rank in turn), the map scales (each rank a slice of the held-out images) and each step's global
batch (rank r takes every N-th of its indices; DDP averages the gradients). Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from training.model import Distilled, PRDModel

TIMEOUT = datetime.timedelta(minutes=30)
"""Longest a rank waits for the others at a collective (the memory coreset of a large category runs alone)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, total: int) -> tuple[int, int]:
        """[lo, hi) of this rank's contiguous slice of ``total`` items (sizes differ by at most one)."""
        return total * self.rank // self.size, total * (self.rank + 1) // self.size


def world() -> World:
    """This process's place in the initialised process group; one process of one when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``WORLD_SIZE``) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(cuda: bool) -> Iterator[World]:
    """Join the launcher's process group for the block (nothing to join when not launched), then leave it."""
    if not launched() or dist.is_initialized():
        yield world()
        return
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def _on_wire(tensor: torch.Tensor) -> torch.Tensor:
    """NCCL only moves CUDA tensors; gloo moves CPU ones."""
    if dist.get_backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor.cpu()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (row counts may differ between ranks)."""
    if not world().distributed:
        return tensor
    local = _on_wire(tensor)
    counts = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([len(local)], device=local.device))
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts, strict=True)]).to(tensor.device)


def broadcast_(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``source``'s (same shape and dtype on every rank)."""
    if world().distributed:
        wire = _on_wire(tensor.detach())
        dist.broadcast(wire, source)
        tensor.data.copy_(wire.to(tensor.device))
    return tensor


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over the ranks (a new tensor on ``tensor``'s device)."""
    if not world().distributed:
        return tensor
    wire = _on_wire(tensor.detach().clone())
    dist.all_reduce(wire, op=dist.ReduceOp.SUM)
    return wire.to(tensor.device)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (so all ranks stop after the same epoch)."""
    return bool(all_sum(torch.tensor([int(flag)])).item() > 0)


def shared_out(jobs: Sequence[Callable[[], torch.Tensor]]) -> list[torch.Tensor]:
    """Run job i on rank i mod N only, then give every rank every result: 2-D, as float32 on the CPU."""
    here = world()
    if not here.distributed:
        return [job() for job in jobs]
    results = []
    for i, job in enumerate(jobs):
        owner = i % here.size
        result = job() if owner == here.rank else None
        shape = torch.tensor(list(result.shape) if result is not None else [0, 0], dtype=torch.long)
        broadcast_(shape, owner)
        if result is None:
            result = torch.empty(shape.tolist(), dtype=torch.float32)
        results.append(broadcast_(result.float().cpu(), owner))
    return results


def barrier() -> None:
    if world().distributed:
        dist.barrier()


class Distiller(nn.Module):
    """``PRDModel.distill`` as a module's forward: what DDP wraps, so the trainable parts' gradients are averaged."""

    def __init__(self, model: PRDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: list[torch.Tensor]) -> Distilled:
        return self.model.distill(features)


def distiller(model: PRDModel, device: torch.device) -> Callable:
    """``model.distill``, or across processes the same through DDP (buffers are equal on every rank already)."""
    if not world().distributed:
        return model.distill
    ids = [device.index] if device.type == "cuda" else None
    # No buffer syncing at each forward: the bank's usage counts are per rank until ``reseed_dead`` adds them up.
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # torch >= 2.12
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DistributedDataParallel(Distiller(model), device_ids=ids, **no_sync)


@torch.no_grad()
def average_norm_statistics(model: PRDModel) -> None:
    """Every rank's batch-norm running statistics replaced by their mean over the ranks (timm's ``distribute_bn``):
    each rank saw its own share of the batches, and the checkpoint and the map scales need one set."""
    size = world().size
    if size == 1:
        return
    for part in (model.bottleneck, model.decoder):
        for buffer in part.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_sum(buffer) / size)


def reseed_dead(model: PRDModel, out: Distilled) -> int:
    """``PrototypeBank.reseed_dead`` on every rank's usage summed; rank 0's vectors, sent to all."""
    bank = model.bank
    bank.usage.copy_(all_sum(bank.usage))
    reseeded = bank.reseed_dead(out.filtered)
    broadcast_(bank.prototypes)
    return reseeded
