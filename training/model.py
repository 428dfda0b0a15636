"""``PRDModel``: teacher → one-class bottleneck → MNP prototype filter (SPR recall) → student → anomaly map, the
map fused with the teacher-space patch memory's (``training/memory.py``) when ``memory_entries`` > 0; with one
memory per category, each image is measured against the memory of the category the model recognises it as.

In eval mode ``forward(uint8 NHWC)`` is the whole scoring pipeline and returns ``ScoreOutput``; its field names
become the ONNX output names. Training goes through ``distill(teacher_features)`` so cached teacher features can
be fed directly (the teacher is frozen, so its features never change).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from training.anomaly_map import AnomalyMap
from training.backbones import Teacher, build_teacher, default_taps
from training.bottleneck import OneClassBottleneck
from training.config import ConfigError, TrainConfig
from training.decoder import StudentDecoder
from training.placement import TeacherFusion
from training.prototypes import PrototypeBank, Recall
from training.recognition import category_similarity, pooled_descriptor

CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.json"


class ScoreOutput(NamedTuple):
    score: torch.Tensor
    anomaly_map: torch.Tensor
    category_similarity: torch.Tensor


class Distilled(NamedTuple):
    student: list[torch.Tensor]
    embedding: torch.Tensor
    recall: Recall | None
    filtered: torch.Tensor
    """What the prototype bank filters, before any training noise (the embedding, or the fused teacher taps): what
    seeds and re-seeds its prototypes."""


class PRDModel(nn.Module):
    def __init__(self, config: TrainConfig, categories: list[str], teacher: Teacher | None = None) -> None:
        super().__init__()
        self.config = config
        self.categories = list(categories)
        self.input_size = config.image_size
        self.teacher_name = config.teacher
        self.teacher = teacher or build_teacher(
            config.teacher, config.teacher_weights, tuple(config.teacher_taps or ()) or None, config.teacher_smoothing
        )
        channels, strides = self.teacher.channels, self.teacher.strides
        embed_stride = config.embed_stride or max(strides)
        self.bottleneck = OneClassBottleneck(channels, strides, config.embed_dim, embed_stride)
        self.fusion = TeacherFusion(channels, strides, embed_stride) if config.filter_at == "teacher" else None
        bank_dim = self.fusion.dim if self.fusion is not None else config.embed_dim
        self.bank = (
            PrototypeBank(config.prototypes, bank_dim, config.recall_topk, config.recall_temperature)
            if config.prototypes > 0
            else None
        )
        self.noise = nn.Dropout(config.bottleneck_dropout) if config.bottleneck_dropout > 0 else nn.Identity()
        self.decoder = StudentDecoder(config.embed_dim, embed_stride, channels, strides, config.decoder_width)
        banks = max(1, len(self.categories)) if config.memory_per_category else 1
        self.anomaly_map = AnomalyMap.from_config(config, channels, banks)
        self.centroids_per_category = config.category_centroids
        rows = max(1, len(self.categories)) * self.centroids_per_category
        self.register_buffer("centroids", torch.zeros(rows, sum(channels)))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser sees: bottleneck, prototypes and student — never the teacher."""
        parts = [self.bottleneck, self.decoder] + ([self.bank] if self.bank is not None else [])
        return [p for part in parts for p in part.parameters()]

    def teacher_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return self.teacher.features(images)

    def distill(self, features: list[torch.Tensor]) -> Distilled:
        """Bottleneck, filter and student. ``noise`` (dropout, training only) acts on the embedding, before the bank
        when the bank filters the embedding; with ``filter_at="teacher"`` the bank filters the teacher's taps first."""
        if self.bank is not None and self.fusion is not None:
            fused = self.fusion.fuse(features)
            recall = self.bank(fused)
            embedding = self.bottleneck(self.fusion.split(recall.rebuilt, features))
            return Distilled(self.decoder(self.noise(embedding)), embedding, recall, fused)
        embedding = self.bottleneck(features)
        noisy = self.noise(embedding)
        recall = self.bank(noisy) if self.bank is not None else None
        student = self.decoder(recall.rebuilt if recall is not None else noisy)
        return Distilled(student=student, embedding=embedding, recall=recall, filtered=embedding)

    def recognise(self, features: list[torch.Tensor]) -> torch.Tensor:
        """(N, C) similarity of each image to each known category; its argmax picks a per-category memory."""
        return category_similarity(pooled_descriptor(features), self.centroids, self.centroids_per_category)

    def component_maps(
        self, features: list[torch.Tensor], with_memory: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``AnomalyMap.component_maps`` of teacher features, the memory picked as the scoring forward picks it."""
        bank = self.recognise(features).argmax(dim=1) if with_memory else None
        return self.anomaly_map.component_maps(features, self.distill(features).student, with_memory, bank)

    def forward(self, images: torch.Tensor) -> ScoreOutput:
        features = self.teacher_features(images)
        student = self.distill(features).student
        similarity = self.recognise(features)
        score, anomaly_map = self.anomaly_map(features, student, similarity.argmax(dim=1))
        return ScoreOutput(score=score, anomaly_map=anomaly_map, category_similarity=similarity)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """State without the teacher (it is rebuilt from its registry name and weights file)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}


def with_resolved_taps(config: TrainConfig) -> TrainConfig:
    """The config with the teacher's default taps written out: a run folder keeps its taps when the defaults move."""
    taps = default_taps(config.teacher)
    return replace(config, teacher_taps=list(taps)) if config.teacher_taps is None and taps else config


def save_checkpoint(model: PRDModel, run_dir: Path, **extra: object) -> None:
    run_dir = Path(run_dir)
    payload = {
        "config": with_resolved_taps(model.config).to_dict(),
        "categories": model.categories,
        "model": model.trained_state(),
    }
    payload.update(extra)
    tmp = run_dir / (CHECKPOINT_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(run_dir / CHECKPOINT_FILE)


class RunError(ValueError):
    """A run folder that cannot be loaded; names the file."""


def load_run(run_dir: Path, device: str = "cpu") -> PRDModel:
    """The trained model of a run folder, in eval mode."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint (train with `python -m training fit --out {run_dir}`)")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise RunError(f"{path}: unreadable checkpoint ({exc})") from exc
    try:
        config = TrainConfig.from_dict(payload["config"])
    except ConfigError as exc:
        raise RunError(f"{path}: its config is not valid: {exc}") from exc
    model = PRDModel(config, payload["categories"])
    result = model.load_state_dict(payload["model"], strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("teacher.")]
    if missing or result.unexpected_keys:
        unexpected = result.unexpected_keys[:5]
        message = f"{path}: checkpoint does not fit its config: missing {missing[:5]}, unexpected {unexpected}"
        raise RunError(message)
    return model.to(device).eval()
