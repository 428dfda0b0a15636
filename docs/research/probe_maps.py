"""The probes' shared pieces: a run's two map components as the run scores each test image, and what they are
scored against (research, CPU; imported by ``fusion_probe`` and ``defect_types``, not run itself).

The maps come from the trained PyTorch run, not the exported graph, so a probe can take the student map and the
patch memory's map apart; ``side_by_side`` measures the exported graph itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`, `model_store`

from model_store.tiling import square_map, stitch_maps  # noqa: E402
from training import data  # noqa: E402
from training.model import PRDModel  # noqa: E402

SCORE_RULES = {
    "max": lambda flat: flat.max(1).values,
    "max-mean": lambda flat: flat.max(1).values - flat.mean(1),
    "top1%": lambda flat: flat.topk(max(1, flat.shape[1] // 100), dim=1).values.mean(1),
}


@dataclass
class TestTruth:
    """What the probes score test maps against: each test image's label and category, masks at every 4th pixel."""

    categories: list[str]
    image_categories: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    @classmethod
    def of(cls, index: data.DatasetIndex, size: int) -> TestTruth:
        masks = np.stack([data.load_mask(s, size) for s in index.test])[:, ::4, ::4]
        labels = np.array([s.label for s in index.test])
        return cls(index.categories, np.array([s.category for s in index.test]), labels, masks)

    def line(self, name: str, anomaly_map: torch.Tensor, rule: str) -> str:
        """Mean and per-category image / pixel AUROC of (N, S, S) test maps, the image score by ``rule``."""
        score = SCORE_RULES[rule](anomaly_map.flatten(1)).numpy()
        pixels = anomaly_map[:, ::4, ::4].numpy()
        rows = [
            (roc_auc_score(self.labels[k], score[k]), roc_auc_score(self.masks[k].ravel() > 0, pixels[k].ravel()))
            for k in (self.image_categories == c for c in self.categories)
        ]
        body = " ".join(f"{c[:4]}:{i:.3f}/{p:.3f}" for c, (i, p) in zip(self.categories, rows, strict=True))
        mean = np.array(rows).mean(0)
        return f"{name:30s} {rule:8s} mean {mean[0]:.3f}/{mean[1]:.3f} | {body}"


@torch.no_grad()
def component_maps(
    model: PRDModel, images: np.ndarray, batch: int = 16, with_memory: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Smoothed (N, S, S) student map and memory map, each over its held-out scale; without a memory (or with
    ``with_memory`` False, which skips the memory's cost), the student map unscaled and None."""
    rd, memory = [], []
    fusion = model.anomaly_map
    for i in range(0, len(images), batch):
        features = model.teacher_features(torch.from_numpy(images[i : i + batch]))
        student_map, memory_map = model.component_maps(features, with_memory)
        if memory_map is None:
            rd.append(fusion.blur(student_map)[:, 0])
            continue
        rd.append(fusion.blur(student_map / fusion.rd_scale)[:, 0])
        memory.append(fusion.blur(memory_map / fusion.memory_scale)[:, 0])
    return torch.cat(rd), (torch.cat(memory) if memory else None)


def tiled_component_maps(
    model: PRDModel, samples: list[data.Sample], batch: int = 16
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``component_maps`` of each sample as the run scores it (``config.scoring``; by the sample's true category, which
    the graph recognises for all 940 test images), each component stitched back on the image's aspect-kept canvas
    and brought to S × S, the grid of ``TestTruth``'s masks."""
    size = model.input_size
    tiles = data.load_tiles(samples, model.config.scoring, progress=False)
    rd, memory = component_maps(model, tiles.images, batch)

    def per_image(maps: torch.Tensor) -> torch.Tensor:
        parts = (stitch_maps(maps[tiles.tiles_of(i)].numpy(), layout) for i, layout in enumerate(tiles.layouts))
        return torch.from_numpy(np.stack([square_map(part, size) for part in parts]))

    return per_image(rd), (None if memory is None else per_image(memory))
