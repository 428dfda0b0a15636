"""The default recognition floor: below which best category similarity an image is an unknown part.

An export derives it from the held-out normal images' category similarities (the images calibration sets the
thresholds on) and from those of a fixed set of generated frames no camera on the line should send, and writes it
into the scoring rule (``scoring.routing.min_similarity``); ``model_store.planner`` routes by it. docs/review.md
has the reasoning and the measured rates.
"""

from __future__ import annotations

import numpy as np

FLOOR_SPREADS = 2.0
"""``recognition_floor``'s margin below the lowest held-out best similarity, in spreads of those similarities."""


def non_part_frames(size: int, seed: int = 0) -> np.ndarray:
    """Frames no camera on the line should send, as uint8 (16, size, size, 3): blank greys, flat colours, a covered
    lens (near black with sensor noise), uniform and Gaussian noise. Deterministic for a seed; their similarities
    to the categories bound the recognition floor from below (``recognition_floor``)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3)
    frames = [np.full(shape, value, np.uint8) for value in (0, 64, 128, 192, 255)]
    frames += [np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), shape).copy() for _ in range(3)]
    frames += [np.clip(rng.normal(10, 4, shape), 0, 255).astype(np.uint8) for _ in range(2)]
    frames += [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    frames += [np.clip(rng.normal(128, 50, shape), 0, 255).astype(np.uint8) for _ in range(3)]
    return np.stack(frames)


def recognition_floor(
    similarity: np.ndarray, non_part_similarity: np.ndarray | None = None, spreads: float = FLOOR_SPREADS
) -> dict[str, float | int | None]:
    """The default recognition floor, from held-out normal images' category similarities (N, C) and, when given,
    those of ``non_part_frames`` (M, C); with what it came from.

    ``min_similarity`` is the lower of two bounds: the lowest held-out best similarity less ``spreads`` standard
    deviations of them (ddof 1; at least 1e-3), and — when the non-part frames match every category less well than
    the least typical normal — halfway between the two. Both are below every held-out normal (so calibration,
    which scored them without a floor, is what is served with it), with a margin for defective parts, whose
    similarity is lower than their normals'. The lower bound keeps the category's own parts, defective or not,
    recognised; images unlike every category match no centroid as well. docs/review.md has the measured rates."""
    best = np.asarray(similarity, np.float64).max(axis=1)
    if best.size == 0 or not np.isfinite(best).all():
        raise ValueError(f"cannot derive a recognition floor from {best.size} similarities (empty or NaN)")
    spread = max(float(best.std(ddof=1)) if best.size > 1 else 0.0, 1e-3)
    floor = float(best.min()) - spreads * spread
    non_part = None
    if non_part_similarity is not None and np.size(non_part_similarity):
        non_part = float(np.asarray(non_part_similarity, np.float64).max(axis=1).max())
        if non_part < best.min():
            floor = min(floor, 0.5 * (non_part + float(best.min())))
    return {
        "min_similarity": float(np.clip(floor, -1.0, 1.0)),
        "spreads": spreads,
        "n_images": int(best.size),
        "held_out_best_min": float(best.min()),
        "held_out_best_median": float(np.median(best)),
        "held_out_best_std": spread,
        "non_part_best_max": non_part,
    }
