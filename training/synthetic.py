"""Small generated MVTec-layout datasets with known defects, for tests and demos that must not need real data.

Each category gets its own look so a multi-class model has something to tell apart: colour stripes (RGB, square),
smooth grey blobs (grayscale, tall) and a colour grid (RGBA, wide), cycling in that order. Defects are scratches
(thin lines) and spots (filled ellipses), near-black or near-white so they stand out from every texture, and each
defect's mask is drawn with the same primitive, so masks are exact. ``defect_area`` makes the defects small: each
covers a chosen fraction of the image (0.1–1 % at 1024² is MVTec screw's range), scratches a few pixels thin, so a
photo squashed to the graph's size loses them and one cut at its native resolution keeps them. Everything derives
from ``seed`` and the category name: same arguments, byte-identical files.

Multi-class pressure (``styles=``, ``python -m training synth --styles``): more looks (``training/textures.py``:
weave, brushed metal, dot lattice, cells, rings), each with its own palette and scale drawn from the category name,
and the subtle defects a multi-class student could learn to copy (``SUBTLE_DEFECTS``): a faint stain, a local warp
of the texture, and a patch of another category's normal texture (``foreign``) — normal elsewhere, so a student
that reconstructs every category's normal look reconstructs it too.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from training.textures import Draw, style_for, subtle_defect

DEFECT_TYPES = ("scratch", "spot")
SUBTLE_DEFECTS = ("stain", "warp", "foreign")
"""Low-contrast defects (``training/textures.py``) for the multi-class pressure set."""
BORROWED = "borrowed"
"""A disc of another generated category's normal look (``textures.subtle_defect``); needs ``styles=``."""
SIZE = 64
"""Default short side of the generated images, for ``make_synthetic_dataset`` and ``python -m training synth``."""


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Diagonal blue/yellow stripes with jittered phase and period: RGB, size×size."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = 0.6 + rng.normal(0.0, 0.04)
    period = size / 6.0 * (1.0 + rng.normal(0.0, 0.03))
    phase = rng.uniform(0.0, 2.0 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2.0 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    low, high = np.array([40.0, 90.0, 160.0]), np.array([200.0, 170.0, 60.0])
    image = low + wave[..., None] * (high - low) + rng.normal(0.0, 6.0, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth grey noise blobs: grayscale, (1.5·size)×size (tall, like a commutator photo)."""
    height, width = size * 3 // 2, size
    coarse = rng.normal(0.0, 1.0, (height // 8 + 2, width // 8 + 2)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = 120.0 + 22.0 * smooth + rng.normal(0.0, 4.0, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def _grid(rng: np.random.Generator, size: int) -> np.ndarray:
    """A green/grey checker grid with a small random offset: RGBA (opaque), size×(1.25·size)."""
    height, width = size, size * 5 // 4
    cell = max(4, size // 8)
    dy, dx = rng.integers(0, cell, 2)
    y, x = np.mgrid[0:height, 0:width]
    checker = (((y + dy) // cell + (x + dx) // cell) % 2).astype(np.float32)
    low, high = np.array([70.0, 140.0, 80.0]), np.array([150.0, 150.0, 150.0])
    rgb = low + checker[..., None] * (high - low) + rng.normal(0.0, 5.0, (height, width, 3))
    alpha = np.full((height, width, 1), 255.0)
    return np.clip(np.concatenate([rgb, alpha], axis=2), 0, 255).astype(np.uint8)


_STYLES: tuple[Callable[[np.random.Generator, int], np.ndarray], ...] = (_stripes, _blobs, _grid)


def _defect_colour(rng: np.random.Generator, channels: int) -> tuple[int, ...]:
    """Near-black or near-white, far from every texture's range (40..200) in every channel."""
    value = int(rng.integers(0, 26)) if rng.random() < 0.5 else int(rng.integers(235, 256))
    return (value,) if channels == 1 else (value,) * 3 + ((255,) if channels == 4 else ())


def _add_defect(
    rng: np.random.Generator,
    image: np.ndarray,
    defect_type: str,
    neighbours: Sequence[Draw] = (),
    area: tuple[float, float] | None = None,
    contrast: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect into a copy of ``image``; return (image, 0/255 mask of the same height and width).

    ``neighbours``: the other categories' looks (``borrowed``). ``area``: the defect covers a fraction of the image
    drawn from this range, at ``contrast`` (``_small_defect``); None: the default sizes, relative to the short side."""
    if area is not None:
        return _small_defect(rng, image, defect_type, area, contrast)
    image = np.ascontiguousarray(image.copy())
    mask = np.zeros(image.shape[:2], np.uint8)
    height, width = mask.shape
    side = min(height, width)
    colour = _defect_colour(rng, 1 if image.ndim == 2 else image.shape[2])
    centre = (int(rng.integers(width // 5, width - width // 5)), int(rng.integers(height // 5, height - height // 5)))
    if defect_type == "scratch":
        angle = rng.uniform(0.0, np.pi)
        half = rng.uniform(0.15, 0.3) * side
        offset = np.array([np.cos(angle), np.sin(angle)]) * half
        start = tuple(int(v) for v in np.round(np.array(centre) - offset))
        end = tuple(int(v) for v in np.round(np.array(centre) + offset))
        thickness = max(1, side // 32)
        cv2.line(image, start, end, colour, thickness)
        cv2.line(mask, start, end, 255, thickness)
    elif defect_type == "spot":
        axes = (int(rng.uniform(0.04, 0.09) * side) + 1, int(rng.uniform(0.04, 0.09) * side) + 1)
        angle = float(rng.uniform(0.0, 180.0))
        cv2.ellipse(image, centre, axes, angle, 0, 360, colour, -1)
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 255, -1)
    elif defect_type in (*SUBTLE_DEFECTS, BORROWED):
        return subtle_defect(rng, image, defect_type, neighbours)
    else:
        raise ValueError(f"unknown defect type {defect_type!r}; expected one of {list(DEFECT_TYPES + SUBTLE_DEFECTS)}")
    return image, mask


def _small_defect(
    rng: np.random.Generator, image: np.ndarray, defect_type: str, area: tuple[float, float], contrast: float
) -> tuple[np.ndarray, np.ndarray]:
    """A defect covering ``area`` (a fraction drawn from the range) of the image: a scratch ``side // 512`` pixels
    thin (at least 1) and as long as that area asks (at most half the short side), or a filled ellipse of that area;
    its pixels move ``contrast`` of the way from the texture to near-black or near-white (1: all the way).
    """
    original = image
    image = np.ascontiguousarray(image.copy())
    mask = np.zeros(image.shape[:2], np.uint8)
    height, width = mask.shape
    side = min(height, width)
    pixels = float(rng.uniform(*area)) * height * width
    colour = _defect_colour(rng, 1 if image.ndim == 2 else image.shape[2])
    centre = (int(rng.integers(width // 5, width - width // 5)), int(rng.integers(height // 5, height - height // 5)))
    if defect_type == "scratch":
        thickness = max(1, side // 512)
        half = min(pixels / thickness, side / 2) / 2
        angle = rng.uniform(0.0, np.pi)
        offset = np.array([np.cos(angle), np.sin(angle)]) * half
        start = tuple(int(v) for v in np.round(np.array(centre) - offset))
        end = tuple(int(v) for v in np.round(np.array(centre) + offset))
        for target, value in ((image, colour), (mask, 255)):
            cv2.line(target, start, end, value, thickness)
    elif defect_type == "spot":
        ratio = float(rng.uniform(0.5, 1.0))
        major = max(1.0, float(np.sqrt(pixels / (np.pi * ratio))))
        axes, angle = (int(round(major)), max(1, int(round(major * ratio)))), float(rng.uniform(0.0, 180.0))
        for target, value in ((image, colour), (mask, 255)):
            cv2.ellipse(target, centre, axes, angle, 0, 360, value, -1)
    else:
        raise ValueError(f"unknown defect type {defect_type!r}; expected one of {list(DEFECT_TYPES)}")
    blended = np.round(original * (1.0 - contrast) + image.astype(np.float64) * contrast).astype(np.uint8)
    return np.where((mask > 0).reshape(*mask.shape, *([1] * (image.ndim - 2))), blended, original), mask


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write RGB/RGBA/grey pixels as PNG (OpenCV wants BGR order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write PNG")


def make_synthetic_dataset(
    root: Path,
    categories: Sequence[str] = ("texture_a", "texture_b"),
    n_train: int = 12,
    n_test_good: int = 4,
    n_test_defect: int = 4,
    size: int = SIZE,
    seed: int = 0,
    n_validation: int = 0,
    defect_area: tuple[float, float] | None = None,
    defect_contrast: float = 1.0,
    styles: Sequence[str] | None = None,
    defect_types: Sequence[str] = DEFECT_TYPES,
) -> Path:
    """Write a small MVTec-layout dataset under ``root`` and return ``root``.

    Args:
        root: folder to write into (created; existing category folders are overwritten file by file).
        categories: category names; the i-th gets the i-th texture style, cycling (stripes, blobs, grid), unless
            ``styles`` names them.
        n_train: normal training images per category.
        n_test_good: normal test images per category.
        n_test_defect: defect test images per category, cycling through ``defect_types``.
        size: base side in pixels (blobs are 1.5× taller, grids 1.25× wider: the loader must squash them).
        seed: all randomness derives from it and the category name.
        n_validation: normal ``validation/good`` images per category (none by default).
        defect_area: each defect covers a fraction of its image drawn from this (low, high) range, e.g.
            (0.001, 0.01) at ``size`` 1024 (``_small_defect``); None: the default defects.
        defect_contrast: with ``defect_area``, how far (0..1] a defect's pixels move from the texture towards
            near-black or near-white; lower is fainter.
        styles: one ``textures.STYLES`` name per category: that look, with palette and scale drawn from the
            category name (the pressure set); None: the three classic looks, cycling.
        defect_types: the defects drawn, in turn (``DEFECT_TYPES``, ``SUBTLE_DEFECTS`` and, with ``styles``,
            ``BORROWED``).
    """
    if not 0 < defect_contrast <= 1:
        raise ValueError(f"defect_contrast must lie in (0, 1], got {defect_contrast}")
    if defect_area is not None and not 0 < defect_area[0] <= defect_area[1] < 1:
        raise ValueError(f"defect_area must be fractions 0 < low <= high < 1, got {defect_area}")
    root = Path(root)
    if styles is not None and len(styles) != len(categories):
        raise ValueError(f"styles: {len(styles)} styles for {len(categories)} categories; give one per category")
    known = (*DEFECT_TYPES, *SUBTLE_DEFECTS, BORROWED)
    unknown = sorted(set(defect_types) - set(known))
    if unknown or not defect_types:
        raise ValueError(f"defect_types: unknown {unknown}; expected some of {list(known)}")
    looks = [
        _STYLES[index % len(_STYLES)]
        if styles is None
        else style_for(styles[index], np.random.default_rng([seed, zlib.crc32(name.encode()), 1]))  # palette, scale
        for index, name in enumerate(categories)
    ]
    for index, name in enumerate(categories):
        style = looks[index]
        neighbours = looks[:index] + looks[index + 1 :] if styles is not None else ()  # what ``borrowed`` draws from
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        category = root / name
        for split, count in (("train", n_train), ("validation", n_validation), ("test", n_test_good)):
            for i in range(count):
                _write_png(category / split / "good" / f"{i:03d}.png", style(rng, size))
        for i in range(n_test_defect):
            defect_type = defect_types[i % len(defect_types)]
            image, mask = _add_defect(rng, style(rng, size), defect_type, neighbours, defect_area, defect_contrast)
            _write_png(category / "test" / defect_type / f"{i:03d}.png", image)
            _write_png(category / "ground_truth" / defect_type / f"{i:03d}_mask.png", mask)
    return root
