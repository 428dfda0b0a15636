"""Uploaded bytes → model inputs (through ``model_store`` only) and anomaly maps → heatmap PNGs.

Decoding, resizing and cutting into tiles are the bundle contract's (``decode_rgb8`` + ``tiling.cut_tiles``, the
same code training uses); this module only keeps the full-size photo when an overlay needs it and turns per-file
failures into values, so one bad file never hides the others. Heatmaps use the category's calibrated colour range
(``map_lo``..``map_hi``), so one colour means the same deviation on every image of a category, and are resized
back to the image's own size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from model_store.manifest import CategoryCalibration
from model_store.preprocess import ImageDecodeError, decode_rgb8
from model_store.tiling import TileLayout, cut_tiles

COLORMAP = cv2.COLORMAP_JET
OVERLAY_ALPHA = 0.45
"""Weight of the colour map over the photo (anomalib draws its overlays the same way, at 0.4)."""
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


@dataclass(frozen=True)
class Upload:
    index: int
    filename: str
    data: bytes


@dataclass(frozen=True)
class PreparedImage:
    """A decoded upload: its model inputs (tiles) and their layout, the original size and, for overlays, the
    full-size RGB photo."""

    index: int
    filename: str
    tiles: np.ndarray
    """(n, S, S, 3) uint8: the squashed image, or its tiles when its category is known to be tiled."""
    layout: TileLayout
    width: int
    height: int
    photo: np.ndarray | None
    full: np.ndarray | None = None
    """The full-size RGB image, kept when it may still be cut into tiles once its category is recognised."""


@dataclass(frozen=True)
class FileProblem:
    """Why one upload cannot be scored; ``kind`` is the ``prd_decode_errors_total`` label."""

    index: int
    filename: str
    kind: str
    detail: str


def prepare(
    upload: Upload, size: int, max_tiles: int, max_pixels: int, keep_photo: bool, keep_full: bool = False
) -> PreparedImage | FileProblem:
    """Decode, check, resize and cut one upload (``max_tiles`` 1: squash); every failure becomes a ``FileProblem``
    (never an exception)."""
    try:
        rgb = decode_rgb8(upload.data, max_pixels)
        tiles, layout = cut_tiles(rgb, size, max_tiles)
    except ImageDecodeError as exc:
        return FileProblem(upload.index, upload.filename, exc.kind, str(exc))
    except cv2.error as exc:  # OpenCV refusing something the header check let through
        return FileProblem(upload.index, upload.filename, "corrupt", f"could not be decoded: {exc.err or exc}")
    height, width = rgb.shape[:2]
    photo, full = rgb if keep_photo else None, rgb if keep_full else None
    return PreparedImage(upload.index, upload.filename, tiles, layout, width, height, photo, full)


def prepare_all(
    uploads: list[Upload], size: int, max_tiles: int, max_pixels: int, keep_photo: bool, keep_full: bool = False
) -> list[PreparedImage | FileProblem]:
    """``prepare`` for every upload, in order (runs in a decode thread, off the event loop)."""
    return [prepare(upload, size, max_tiles, max_pixels, keep_photo, keep_full) for upload in uploads]


def retile(image: PreparedImage, size: int, max_tiles: int) -> PreparedImage:
    """The image cut into tiles after all (its recognised category is tiled), from the kept full-size RGB."""
    assert image.full is not None  # kept by prepare(keep_full=True) for exactly this
    tiles, layout = cut_tiles(image.full, size, max_tiles)
    return replace(image, tiles=tiles, layout=layout, full=None)


def normalized_map(anomaly_map: np.ndarray, calibration: CategoryCalibration) -> np.ndarray:
    """The map on the category's colour scale: 0 at ``map_lo``, 1 at ``map_hi`` and beyond."""
    span = calibration.map_hi - calibration.map_lo
    return np.clip((anomaly_map.astype(np.float32) - calibration.map_lo) / span, 0.0, 1.0)


def heatmap_bgr(anomaly_map: np.ndarray, calibration: CategoryCalibration, width: int, height: int) -> np.ndarray:
    """Colour-mapped heatmap (BGR uint8) at the image's own size."""
    unit = normalized_map(anomaly_map, calibration)
    if unit.shape != (height, width):
        unit = cv2.resize(unit, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(levels, COLORMAP)


def heatmap_png(
    anomaly_map: np.ndarray, calibration: CategoryCalibration, width: int, height: int, photo: np.ndarray | None = None
) -> bytes:
    """PNG of the heatmap, or of the heatmap blended over ``photo`` (RGB, the image's own size) for an overlay."""
    image = heatmap_bgr(anomaly_map, calibration, width, height)
    if photo is not None:
        photo_bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
        image = cv2.addWeighted(photo_bgr, 1.0 - OVERLAY_ALPHA, image, OVERLAY_ALPHA, 0.0)
    ok, encoded = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {width}x{height} heatmap as PNG")
    return encoded.tobytes()
