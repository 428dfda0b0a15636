"""Probe: a run's image and pixel AUROC per category, and pixel AUROC per magnetic-tile defect type (research, CPU).

    python -m training.research.map_breakdown runs/demo [--data ../shared/data]

Image AUROC with both score rules (peak above mean, plain peak); pixel AUROC on every 4th pixel, as the reference
does. A pixel labelled 255 by a patched ``load_mask`` (padding, see ``patched_fit``) is left out. Caches the maps
in RUN/breakdown_maps.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model_store.tiling import square_map, stitch_maps
from training import data
from training.model import PRDModel, load_run


@torch.no_grad()
def anomaly_maps(model: PRDModel, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    """(N, S, S) anomaly maps of uint8 images through the model's scoring forward, batch by batch."""
    return torch.cat(
        [model(torch.from_numpy(images[i : i + batch])).anomaly_map[:, 0] for i in range(0, len(images), batch)]
    )


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
    """``component_maps`` of each sample as the run scores it (``config.tiling``; by the sample's true category, which
    the graph recognises for all 940 test images), each component stitched back on the image's aspect-kept canvas
    and brought to S × S, the grid of ``TestTruth``'s masks."""
    size, tiling = model.input_size, model.config.tiling
    tiles = data.load_tiles(samples, size, [tiling.max_tiles_for(s.category) for s in samples], progress=False)
    rd, memory = component_maps(model, tiles.images, batch)

    def per_image(maps: torch.Tensor) -> torch.Tensor:
        parts = (stitch_maps(maps[tiles.tiles_of(i)].numpy(), layout) for i, layout in enumerate(tiles.layouts))
        return torch.from_numpy(np.stack([square_map(part, size) for part in parts]))

    return per_image(rd), (None if memory is None else per_image(memory))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    index = data.discover([Path(args.data)])
    test = index.test
    cache = args.run / "breakdown_maps.pt"
    if cache.is_file():
        maps = torch.load(cache)
    else:
        model = load_run(args.run)
        maps = anomaly_maps(model, data.load_images(test, model.input_size, progress=False))
        torch.save(maps, cache)
    size = maps.shape[-1]
    masks = np.stack([data.load_mask(s, size) for s in test])[:, ::4, ::4]
    pixels = maps[:, ::4, ::4].numpy()
    valid = masks != 255
    flat = maps.flatten(1)
    peak_over_mean = (flat.max(1).values - flat.mean(1)).numpy()
    peak = flat.max(1).values.numpy()
    categories = np.array([s.category for s in test])
    types = np.array([s.defect_type for s in test])
    labels = np.array([s.label for s in test])
    rows = []
    for category in index.categories:
        k = categories == category
        pixel = roc_auc_score(masks[k][valid[k]] > 0, pixels[k][valid[k]])
        row = (roc_auc_score(labels[k], peak_over_mean[k]), roc_auc_score(labels[k], peak[k]), pixel)
        rows.append(row)
        per_type = ""
        if category == "magnetic_tile":
            good = k & (types == "good")
            for defect in sorted(set(types[k]) - {"good"}):
                chosen = (k & (types == defect)) | good
                auroc = roc_auc_score(masks[chosen][valid[chosen]] > 0, pixels[chosen][valid[chosen]])
                per_type += f" {defect}:{auroc:.3f}"
        print(f"{category:14s} img(max-mean) {row[0]:.3f} img(max) {row[1]:.3f} pix {row[2]:.3f}{per_type}")
    mean = np.array(rows).mean(0)
    print(f"{'mean':14s} img(max-mean) {mean[0]:.3f} img(max) {mean[1]:.3f} pix {mean[2]:.3f}")


if __name__ == "__main__":
    main()
