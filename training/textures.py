"""More generated looks and subtle defects, for the multi-class pressure set (``synthetic.py`` writes them out).

A style is a factory: ``STYLES[name](look)`` draws the category's palette and scale once from ``look`` (a
generator seeded by the category name) and returns ``draw(rng, size)``, which makes one RGB image of that
category, size×size, with per-image jitter from ``rng``. Two categories of one style therefore differ in colour
and scale, as two product lines of one material would.

The subtle defects stay inside the texture's range, so the student's map, not a brightness threshold, has to find
them: ``stain`` (a soft tint of 15–35 grey levels), ``warp`` (a local swirl of the texture), ``foreign`` (a disc of
another style's texture in a random palette) and ``borrowed`` (a disc of another category's own normal look: normal
elsewhere in the same model, which a student that reconstructs every category's normal look may copy). Each
returns the image and the mask of where it changed the texture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

Draw = Callable[[np.random.Generator, int], np.ndarray]


def _palette(look: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours 60–100 levels apart inside 50..200, so textures stay far from black and white."""
    low = look.uniform(50.0, 110.0, 3)
    return low, np.clip(low + look.uniform(60.0, 100.0, 3), 0, 200)


def _finish(low: np.ndarray, high: np.ndarray, wave: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    image = low + wave[..., None] * (high - low) + rng.normal(0.0, noise, (*wave.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _weave(look: np.random.Generator) -> Draw:
    """Over-under weave: two orthogonal sine bands multiplied."""
    low, high = _palette(look)
    cells = look.uniform(6.0, 12.0)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) + rng.uniform(0, size, 2)[:, None, None]
        period = size / cells
        wave = (0.5 + 0.5 * np.sin(2 * np.pi * x / period)) * (0.5 + 0.5 * np.cos(2 * np.pi * y / period))
        return _finish(low, high, wave, rng, 4.0)

    return draw


def _brushed(look: np.random.Generator) -> Draw:
    """Brushed metal: noise smeared along one direction."""
    low, high = _palette(look)
    angle = look.uniform(0.0, 180.0)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        noise = rng.normal(0.0, 1.0, (size * 2, size * 2)).astype(np.float32)
        streaks = cv2.blur(noise, (size // 2, 1))
        turn = cv2.getRotationMatrix2D((size, size), angle + rng.normal(0.0, 2.0), 1.0)
        crop = slice(size // 2, size // 2 + size)
        streaks = cv2.warpAffine(streaks, turn, (size * 2, size * 2))[crop, crop]
        wave = np.clip(0.5 + streaks / (4 * streaks.std() + 1e-6), 0, 1)
        return _finish(low, high, wave, rng, 2.0)

    return draw


def _dots(look: np.random.Generator) -> Draw:
    """A lattice of round dots."""
    low, high = _palette(look)
    cells, radius = look.uniform(5.0, 9.0), look.uniform(0.2, 0.35)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) + rng.uniform(0, size, 2)[:, None, None]
        period = size / cells
        fy, fx = (y / period) % 1.0 - 0.5, (x / period) % 1.0 - 0.5
        wave = 1.0 / (1.0 + np.exp((np.hypot(fx, fy) - radius) * 40.0))
        return _finish(low, high, wave, rng, 4.0)

    return draw


def _cells(look: np.random.Generator) -> Draw:
    """Cell walls (distance to the nearest of random seeds), like foam or leather grain."""
    low, high = _palette(look)
    density = look.uniform(40.0, 90.0)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        seeds = np.full((size, size), 255, np.uint8)
        points = rng.integers(0, size, (int(density * (size / 128) ** 2) + 4, 2))
        seeds[points[:, 0], points[:, 1]] = 0
        distance = cv2.distanceTransform(seeds, cv2.DIST_L2, 3)
        wave = np.clip(distance / (size / np.sqrt(density) / 1.5), 0, 1)
        return _finish(low, high, wave, rng, 3.0)

    return draw


def _rings(look: np.random.Generator) -> Draw:
    """Growth rings around a far centre, wobbling: wood-like."""
    low, high = _palette(look)
    rings = look.uniform(8.0, 16.0)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        cy, cx = rng.uniform(-2 * size, -size), rng.uniform(0, size)
        radius = np.hypot(y - cy, x - cx) + 3.0 * np.sin(x / size * 2 * np.pi * rng.uniform(1, 3))
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * radius / (size / rings))
        return _finish(low, high, wave, rng, 4.0)

    return draw


def _plaid(look: np.random.Generator) -> Draw:
    """Tartan: horizontal and vertical bands of two widths, added."""
    low, high = _palette(look)
    wide, narrow = look.uniform(3.0, 5.0), look.uniform(9.0, 14.0)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) + rng.uniform(0, size, 2)[:, None, None]
        bands = [np.sin(2 * np.pi * v * cells / size) > 0.3 for v in (x, y) for cells in (wide, narrow)]
        wave = sum(b.astype(np.float32) for b in bands) / 4.0
        return _finish(low, high, wave, rng, 4.0)

    return draw


STYLES: dict[str, Callable[[np.random.Generator], Draw]] = {
    "weave": _weave,
    "brushed": _brushed,
    "dots": _dots,
    "cells": _cells,
    "rings": _rings,
    "plaid": _plaid,
}


def style_for(name: str, look: np.random.Generator) -> Draw:
    if name not in STYLES:
        raise ValueError(f"unknown texture style {name!r}; known: {', '.join(STYLES)}")
    return STYLES[name](look)


def _disc(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, float, float, float]:
    """Distance of every pixel to a random centre (away from the border), and that centre and a radius."""
    height, width = shape
    side = min(height, width)
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.hypot(y - cy, x - cx), cy, cx, rng.uniform(0.08, 0.16) * side


def subtle_defect(
    rng: np.random.Generator, image: np.ndarray, kind: str, neighbours: Sequence[Draw] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """One low-contrast defect drawn into a copy of ``image`` (grey, RGB or RGBA); (image, 0/255 mask).

    ``borrowed`` pastes a disc of one of ``neighbours`` (the other categories' own looks, palette included): a patch
    that is exactly normal in another category of the same model, the sharpest test of a student that copies.
    """
    colour = image if image.ndim == 3 else image[..., None]
    channels = min(3, colour.shape[2])
    distance, cy, cx, radius = _disc(rng, image.shape[:2])
    out = colour.astype(np.float32).copy()
    if kind == "stain":
        weight = np.exp(-((distance / radius) ** 2))
        tint = rng.uniform(15.0, 35.0, channels) * rng.choice([-1.0, 1.0])
        out[..., :channels] += weight[..., None] * tint
        mask = weight > 0.5
    elif kind == "warp":
        twist = np.clip(1 - distance / radius, 0, 1) ** 2 * rng.uniform(1.5, 3.0) * rng.choice([-1.0, 1.0])
        y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
        cos, sin = np.cos(twist), np.sin(twist)
        map_x = (cx + (x - cx) * cos - (y - cy) * sin).astype(np.float32)
        map_y = (cy + (x - cx) * sin + (y - cy) * cos).astype(np.float32)
        out = cv2.remap(out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).reshape(out.shape)
        mask = distance < 0.7 * radius
    elif kind in ("foreign", "borrowed"):
        if kind == "borrowed" and not neighbours:
            raise ValueError("a borrowed defect needs the other categories' looks (styles= with several categories)")
        other = list(STYLES)[int(rng.integers(len(STYLES)))]
        draw = neighbours[int(rng.integers(len(neighbours)))] if kind == "borrowed" else style_for(other, rng)
        patch = draw(rng, max(image.shape[:2])).astype(np.float32)[: image.shape[0], : image.shape[1]]
        patch = patch.mean(axis=2, keepdims=True) if channels == 1 else patch
        mask = distance < radius
        out[..., :channels][mask] = patch[mask]
    else:
        raise ValueError(f"unknown subtle defect {kind!r}; expected stain, warp, foreign or borrowed")
    result = np.clip(out, 0, 255).astype(np.uint8)
    return (result if image.ndim == 3 else result[..., 0]), mask.astype(np.uint8) * 255
