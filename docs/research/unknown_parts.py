"""Unknown parts on a bundle: a floor derived from its held-out normals, the rate at which foreign images fall
below it, and how many of its own categories' test images stay above it.

    python docs/research/unknown_parts.py --data ../shared/data --bundle model_store/repository/prd/6 [--spreads 3]

The floor is ``training.unknown_parts.recognition_floor`` on the category similarities of the bundle's held-out
normals (``training.calibrate.calibration_sets`` with the bundle's holdout fraction and seed: the images its
thresholds were set on) and of ``training.unknown_parts.non_part_frames``, as an export derives it. Recognition is
the squashed pass's (``model_store.planner``). Foreign images: the sample photos scikit-image ships in its wheel
(``skimage.data``, those that need no download), generated scenes (blank and coloured frames, a covered lens,
uniform and Gaussian noise, smooth random blobs, gradients, random shapes; another seed than the export's frames)
and, reported apart, corner crops of the bundle's own categories' test images (mostly background: whether they
should count as unknown is a matter of definition).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `training`

from model_store.bundle import read_manifest  # noqa: E402
from model_store.preprocess import decode_rgb8, resize_square  # noqa: E402
from model_store.session import GraphSession  # noqa: E402
from training.calibrate import calibration_sets  # noqa: E402
from training.data import discover  # noqa: E402
from training.unknown_parts import FLOOR_SPREADS, non_part_frames, recognition_floor  # noqa: E402

SKIMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
    "moon", "page", "retina", "rocket", "text",
)  # fmt: skip


def as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        image = np.clip(image / max(float(image.max()), 1e-12) * 255.0, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def skimage_photos() -> dict[str, np.ndarray]:
    import skimage.data

    photos = {}
    for name in SKIMAGE_SAMPLES:
        try:
            photos[name] = as_rgb(getattr(skimage.data, name)())
        except Exception as error:  # a sample that needs a download: skipped, named
            print(f"skipped skimage.data.{name}: {type(error).__name__}")
    return photos


def generated_scenes(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scenes: dict[str, np.ndarray] = {}
    for value in (0, 40, 128, 200, 255):
        scenes[f"blank_{value}"] = np.full((256, 256, 3), value, np.uint8)
    for i, colour in enumerate(rng.integers(0, 256, (5, 3))):
        scenes[f"colour_{i}"] = np.broadcast_to(colour.astype(np.uint8), (300, 400, 3)).copy()
    for i in range(5):
        scenes[f"covered_lens_{i}"] = np.clip(rng.normal(8 + 4 * i, 3, (256, 256, 3)), 0, 255).astype(np.uint8)
        scenes[f"uniform_noise_{i}"] = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        scenes[f"gauss_noise_{i}"] = np.clip(rng.normal(128, 20 + 15 * i, (256, 256, 3)), 0, 255).astype(np.uint8)
        blobs = cv2.GaussianBlur(rng.normal(0, 1, (256, 256, 3)), (0, 0), 4 + 4 * i)
        scenes[f"smooth_blobs_{i}"] = as_rgb(blobs - blobs.min())
        ramp = np.linspace(0, 255, 256)[None, :, None] * rng.uniform(0.2, 1.0, 3)
        scenes[f"gradient_{i}"] = np.broadcast_to(ramp, (256, 256, 3)).astype(np.uint8)
        canvas = np.full((256, 256, 3), rng.integers(0, 256, 3), np.uint8)
        for _ in range(12):
            x, r = tuple(int(v) for v in rng.integers(0, 256, 2)), int(rng.integers(8, 60))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                cv2.circle(canvas, x, r, colour, -1)
            else:
                cv2.rectangle(canvas, x, (x[0] + r, x[1] + r), colour, -1)
        scenes[f"shapes_{i}"] = canvas
    return scenes


def best_similarity(session: GraphSession, images: list[np.ndarray], size: int) -> np.ndarray:
    rows = []
    for start in range(0, len(images), 8):
        batch = np.stack([resize_square(image, size) for image in images[start : start + 8]])
        rows.append(session.run(batch).category_similarity)
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--spreads", type=float, nargs="+", default=[FLOOR_SPREADS])
    args = parser.parse_args()
    started = time.monotonic()
    manifest = read_manifest(args.bundle / "manifest.json")
    session, size, categories = GraphSession(args.bundle / "model.onnx"), manifest.input.height, manifest.categories
    holdout = dict(manifest.training_data.get("holdout") or {})
    fraction, seed = float(holdout.get("fraction", 0.1)), int(holdout.get("seed", 0))
    index = discover([args.data], categories)
    sets = calibration_sets(index, categories, fraction, seed)
    held = [s.path for c in categories for s in sets[c][1]]
    held_similarity = best_similarity(session, [decode_rgb8(p.read_bytes()) for p in held], size)
    test = [s for s in index.test if s.category in categories]
    test_rgb = [decode_rgb8(s.path.read_bytes()) for s in test]
    test_similarity = best_similarity(session, test_rgb, size)
    truth = np.array([categories.index(s.category) for s in test])
    crops = [rgb[: rgb.shape[0] // 4, : rgb.shape[1] // 4] for rgb in test_rgb[::4]]
    non_part = session.run(non_part_frames(size)).category_similarity  # what an export bounds the floor with
    foreign = {"skimage.data photos": skimage_photos(), "generated scenes": generated_scenes(seed=1)}
    foreign_similarity = {k: best_similarity(session, list(v.values()), size) for k, v in foreign.items()}
    crop_similarity = best_similarity(session, crops, size)

    print(f"bundle {args.bundle}: held-out normals {len(held)} (fraction {fraction:g}, seed {seed})")
    held_best = held_similarity.max(axis=1)
    print(f"held-out best similarity: min {held_best.min():.4f} median {np.median(held_best):.4f} "
          f"std {held_best.std(ddof=1):.4f}")  # fmt: skip
    for spreads in args.spreads:
        derived = recognition_floor(held_similarity, non_part, spreads)
        floor, normals_only = derived["min_similarity"], recognition_floor(held_similarity, None, spreads)
        print(f"\nfloor {floor:.4f} = lower of (min − {spreads:g} · std = {normals_only['min_similarity']:.4f}) "
              f"and halfway to the export's non-part frames (best {derived['non_part_best_max']:.4f})")  # fmt: skip
        test_best = test_similarity.max(axis=1)
        for c, name in enumerate(categories):
            mine = truth == c
            kept = (test_best[mine] >= floor).mean()
            right = ((test_best[mine] >= floor) & (test_similarity[mine].argmax(axis=1) == c)).mean()
            print(f"  {name:<14} test images {mine.sum():>4}: recognised (above floor) {kept:7.2%}, as their own "
                  f"category {right:7.2%}, lowest best similarity {test_best[mine].min():.4f}")  # fmt: skip
        print(f"  {'all':<14} test images {len(test):>4}: recognised {(test_best >= floor).mean():7.2%}")
        for group, similarity in foreign_similarity.items():
            best = similarity.max(axis=1)
            names = list(foreign[group])
            known = [f"{names[i]} ({best[i]:.3f} → {categories[int(similarity[i].argmax())]})"
                     for i in np.flatnonzero(best >= floor)]  # fmt: skip
            print(f"  {group:<22} {len(best):>3}: unknown {(best < floor).mean():7.2%}; max best similarity "
                  f"{best.max():.4f}; taken as known: {', '.join(known) or 'none'}")  # fmt: skip
        crop_best = crop_similarity.max(axis=1)
        print(f"  own test images' top-left quarter crops {len(crops)} (reported apart): unknown "
              f"{(crop_best < floor).mean():.2%}")  # fmt: skip
    print(f"\n{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
