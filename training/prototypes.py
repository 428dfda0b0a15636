"""MNP — the multi-class normal prototype bank — and SPR, its sparse prototype recall.

Choices the paper leaves open, and why (each is a ``TrainConfig`` switch, measured by ``training ablate``):

- **Where**: on the bottleneck embedding, one vector per position, just before the student. The student then only
  ever sees combinations of normal prototypes, so an anomalous patch reaches it already "repaired".
- **One class-agnostic bank** of K prototypes for all categories: no label is needed when serving.
- **Recall**: cosine similarity to every prototype, keep the top-k, softmax over those k with temperature τ, and
  rebuild the vector as the weighted sum of the k prototypes. No residual path: with one, a decoder learns the
  "soft identity" that copies anomalies (Pro-AD's observation); without one, the filter is tight by construction.
  The same top-k recall is used in training and serving, so the exported graph is exactly what was trained
  (TopK, Softmax, GatherElements and MatMul export to ONNX).
- **Sparsity (SPR)**: gradient flows only to the k recalled prototypes of each vector, so prototypes specialise
  instead of all drifting to the mean; k=0 means dense recall over all K (the ablation's "no SPR").
- **Coherence**: mean over positions of 1 − max cos(z, P); it pulls each recalled prototype towards the vectors it
  serves and the embedding towards the prototype manifold (INP-Former's coherence loss).
- **Dead prototypes**: a prototype recalled by nobody (in any of the k places) during an epoch is re-seeded on the
  embedding vectors that are currently served worst (lowest best similarity), so the bank's capacity goes where
  normal data needs it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Recall(NamedTuple):
    rebuilt: torch.Tensor
    """(N, D, H, W): the embedding rebuilt from its recalled prototypes."""
    best_similarity: torch.Tensor
    """(N, H, W): cosine similarity to the most similar prototype (for the coherence loss)."""
    indices: torch.Tensor
    """(N, H, W, k): which prototypes each position recalled."""


class PrototypeBank(nn.Module):
    def __init__(self, count: int, dim: int, topk: int, temperature: float) -> None:
        super().__init__()
        if count < 1:
            raise ValueError("a prototype bank needs at least one prototype")
        self.prototypes = nn.Parameter(F.normalize(torch.randn(count, dim), dim=1))
        self.topk = min(topk, count) if topk > 0 else count
        self.temperature = temperature
        self.register_buffer("usage", torch.zeros(count), persistent=False)
        self.initialised = False

    def forward(self, z: torch.Tensor) -> Recall:
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        similarity = F.normalize(flat, dim=1) @ F.normalize(self.prototypes, dim=1).t()
        top_sim, top_idx = similarity.topk(self.topk, dim=1)
        if self.topk == self.prototypes.shape[0]:  # dense recall: one matmul instead of gathering K copies
            rebuilt = torch.softmax(similarity / self.temperature, dim=1) @ self.prototypes
        else:
            weights = torch.softmax(top_sim / self.temperature, dim=1)
            rebuilt = (weights.unsqueeze(2) * self.prototypes[top_idx]).sum(dim=1)
        if self.training:
            self.usage += torch.bincount(top_idx.flatten(), minlength=self.prototypes.shape[0]).float()
        return Recall(
            rebuilt=rebuilt.reshape(n, h, w, d).permute(0, 3, 1, 2),
            best_similarity=top_sim[:, 0].reshape(n, h, w),
            indices=top_idx.reshape(n, h, w, self.topk),
        )

    @torch.no_grad()
    def seed_from(self, z: torch.Tensor) -> None:
        """Start the bank on real embedding vectors (random distinct positions) instead of random directions."""
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        pick = torch.randperm(flat.shape[0], device=flat.device)[: self.prototypes.shape[0]]
        self.prototypes[: len(pick)] = flat[pick]
        self.initialised = True

    @torch.no_grad()
    def reseed_dead(self, z: torch.Tensor) -> int:
        """Move prototypes unused since the last call onto the worst-served vectors of ``z``; returns how many."""
        dead = (self.usage == 0).nonzero().flatten()
        self.usage.zero_()
        if dead.numel() == 0:
            return 0
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        best = (F.normalize(flat, dim=1) @ F.normalize(self.prototypes, dim=1).t()).max(dim=1).values
        worst = best.argsort()[: dead.numel()]
        self.prototypes[dead[: len(worst)]] = flat[worst]
        return int(min(dead.numel(), len(worst)))
