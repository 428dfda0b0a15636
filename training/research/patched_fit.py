"""Experiments run as ``training fit`` with one part patched (research, CPU; neither was adopted).

    python -m training.research.patched_fit letterbox fit --data ../shared/data --out runs/x_lb --epochs 8
    python -m training.research.patched_fit denoise fit --data ../shared/data --out runs/x_dn --epochs 8
    python -m training.research.patched_fit letterbox breakdown runs/x_lb   # same patch when scoring

- ``letterbox``: keep the aspect ratio (longest side to the input size, reflect-padded) instead of squashing;
  masks get 255 on the padding, which ``map_breakdown`` leaves out.
- ``denoise`` (RD++-style): half of each batch feeds the student the teacher features of a copy with one synthetic
  defect (a thresholded low-frequency noise blob filled with another training image, a brightness/contrast change
  or a shifted copy), and the target stays the clean image's features.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import torch

import model_store.preprocess as preprocess
import training.data as data
import training.engine as engine
from training.loss import coherence_loss, distillation_loss


def _letterbox(image: np.ndarray, size: int, interpolation: int, border: int) -> tuple[np.ndarray, tuple]:
    height, width = image.shape[:2]
    aspect = width / height
    new_h, new_w = (max(1, round(size / aspect)), size) if aspect >= 1 else (size, max(1, round(size * aspect)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    padded = cv2.copyMakeBorder(resized, top, size - new_h - top, left, size - new_w - left, border, value=0)
    return padded, (top, left, new_h, new_w)


def patch_letterbox() -> None:
    def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
        return _letterbox(rgb, size, preprocess.RESIZE_INTERPOLATION, cv2.BORDER_REFLECT_101)[0]

    def load_mask(sample: data.Sample, size: int, image_wh: tuple[int, int] | None = None) -> np.ndarray:
        full = data.load_full_mask(sample, image_wh)
        mask, (top, left, h, w) = _letterbox(full, size, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)
        valid = np.zeros((size, size), bool)
        valid[top : top + h, left : left + w] = True
        return np.where(valid, mask, 255).astype(np.uint8)

    preprocess.resize_square = resize_square
    data.load_mask = load_mask


def synthetic_defects(images: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, size = len(images), images.shape[1]
    out = images.copy()
    for i in range(n):
        grid = int(rng.choice([4, 8, 16]))
        noise = cv2.resize(
            rng.standard_normal((grid, grid)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
        )
        blob = (noise > np.quantile(noise, rng.uniform(0.85, 0.995))).astype(np.float32)
        blob = cv2.GaussianBlur(blob, (0, 0), 1.0)[..., None]
        image = images[i].astype(np.float32)
        kind = rng.integers(3)
        if kind == 0:
            source = np.rot90(images[rng.integers(n)].astype(np.float32), int(rng.integers(4))).copy()
        elif kind == 1:
            gain, level = rng.uniform(0.5, 1.8), rng.uniform(0.6, 1.4)
            source = np.clip((image - image.mean()) * gain + image.mean() * level, 0, 255)
        else:
            shift = (int(rng.integers(size // 8, size // 2)), int(rng.integers(size // 8, size // 2)))
            source = np.roll(image, shift, axis=(0, 1))
        beta = rng.uniform(0.5, 1.0)
        out[i] = np.clip(image * (1 - beta * blob) + source * beta * blob, 0, 255).astype(np.uint8)
    return out


def patch_denoise(fraction: float = 0.5) -> None:
    original_prepare = engine.prepare
    generator = torch.Generator().manual_seed(1)

    def prepare(config, model, index, device, progress=True):  # noqa: ANN001, ANN202 - same as engine.prepare
        prepared = original_prepare(config, model, index, device, progress)
        images = data.load_images(prepared.samples, config.image_size, progress=False, workers=config.workers)
        noisy = engine.cache_teacher_features(model, synthetic_defects(images, config.seed), device, progress)
        prepared.features = [torch.cat([c, z], 1) for c, z in zip(prepared.features, noisy, strict=True)]
        return prepared

    def training_step(model, features, config):  # noqa: ANN001, ANN202 - same as engine.training_step
        clean = [f[:, : f.shape[1] // 2] for f in features]
        noisy = [f[:, f.shape[1] // 2 :] for f in features]
        pick = (torch.rand(len(clean[0]), generator=generator) < fraction).view(-1, 1, 1, 1)
        inputs = [torch.where(pick, z, c) for c, z in zip(clean, noisy, strict=True)]
        out = model.distill(inputs)
        if model.bank is not None and not model.bank.initialised:
            model.bank.seed_from(model.distill(clean).embedding)
            out = model.distill(inputs)
        weights = model.anomaly_map.per_scale_channel_weights()
        loss = distillation_loss(
            clean, out.student, config.loss, config.hard_mining_quantile, config.magnitude_weight, weights
        )
        if out.recall is not None and config.coherence_weight > 0:
            loss = loss + config.coherence_weight * coherence_loss(out.recall.best_similarity)
        return loss, out

    engine.prepare = prepare
    engine.training_step = training_step


def main() -> int:
    patch, *rest = sys.argv[1:]
    {"letterbox": patch_letterbox, "denoise": patch_denoise}[patch]()
    if rest[:1] == ["breakdown"]:
        from training.research import map_breakdown

        sys.argv = ["map_breakdown", *rest[1:]]
        map_breakdown.main()
        return 0
    from training.cli import main as cli_main

    return cli_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
