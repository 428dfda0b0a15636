"""Uploaded bytes → model inputs (through ``model_store`` only) and anomaly maps → heatmap PNGs.

Decoding is the bundle contract's (``decode_rgb8``) and which inputs an image becomes is its scoring rule's
(``model_store.planner``), the same code training uses; this module reads headers before anything is decoded
(admission sizes a request from them), keeps the full-size photo when an overlay needs it, keeps a full-size copy
for a possible second pass only within ``KEEP_FULL_PIXELS`` per request (beyond it the file is decoded again,
from its bytes, when its tiles are wanted) and turns per-file failures into values, so one bad file never hides
the others. Heatmaps use
the category's calibrated colour range (``map_lo``..``map_hi``), so one colour means the same deviation on every
image of a category, are resized back to the image's own size, and carry that scale as a legend below the image,
with the threshold marked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from model_store.manifest import CategoryCalibration
from model_store.planner import Planner
from model_store.preprocess import ImageDecodeError, decode_rgb8, read_header
from model_store.tiling import TileLayout, cut_tiles

COLORMAP = cv2.COLORMAP_JET
OVERLAY_ALPHA = 0.45
"""Weight of the colour map over the photo (anomalib draws its overlays the same way, at 0.4)."""
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
LEGEND_GAP, LEGEND_BAR, LEGEND_TEXT = 2, 10, 16
"""Rows of the legend under every heatmap: a black gap, the colour bar, a line of labels."""
LEGEND_TEXT_MIN_WIDTH = 320
"""Images narrower than this get the bar and its threshold tick only (the labels would not fit)."""
KEEP_FULL_PIXELS = 8_000_000
"""Full-size pixels one request keeps between its passes (24 MB of RGB); images beyond are decoded again."""


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
class Header:
    """An upload's size, read from its header alone (nothing decoded)."""

    index: int
    filename: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class FileProblem:
    """Why one upload cannot be scored; ``kind`` is the ``prd_decode_errors_total`` label."""

    index: int
    filename: str
    kind: str
    detail: str


def read_headers(uploads: list[Upload], max_pixels: int) -> list[Header | FileProblem]:
    """Every upload's size from its header, or why it is not a usable image (empty, not an image, too large)."""
    headers: list[Header | FileProblem] = []
    for upload in uploads:
        try:
            width, height, _ = read_header(upload.data, max_pixels)
        except ImageDecodeError as exc:
            headers.append(FileProblem(upload.index, upload.filename, exc.kind, str(exc)))
        else:
            headers.append(Header(upload.index, upload.filename, width, height))
    return headers


def prepare(
    upload: Upload,
    planner: Planner,
    given: str | None,
    max_pixels: int,
    keep_photo: bool,
    keep_full: bool = False,
) -> PreparedImage | FileProblem:
    """Decode, check and cut one upload into its first-pass inputs (``Planner.first_pass``); every failure becomes
    a ``FileProblem`` (never an exception)."""
    try:
        rgb = decode_rgb8(upload.data, max_pixels)
        tiles, layout = planner.first_pass(rgb, given)
    except ImageDecodeError as exc:
        return FileProblem(upload.index, upload.filename, exc.kind, str(exc))
    except cv2.error as exc:  # OpenCV refusing something the header check let through
        return FileProblem(upload.index, upload.filename, "corrupt", f"could not be decoded: {exc.err or exc}")
    height, width = rgb.shape[:2]
    photo, full = rgb if keep_photo else None, rgb if keep_full else None
    return PreparedImage(upload.index, upload.filename, tiles, layout, width, height, photo, full)


def prepare_all(
    uploads: list[Upload],
    planner: Planner,
    given: str | None,
    max_pixels: int,
    keep_photo: bool,
    keep_full: bool = False,
) -> list[PreparedImage | FileProblem]:
    """``prepare`` for every upload, in order (runs in a decode thread, off the event loop); with ``keep_full``,
    full-size copies are kept up to ``KEEP_FULL_PIXELS`` in all."""
    prepared: list[PreparedImage | FileProblem] = []
    kept = 0
    for upload in uploads:
        item = prepare(upload, planner, given, max_pixels, keep_photo, keep_full)
        if isinstance(item, PreparedImage) and item.full is not None:
            if kept + item.full.shape[0] * item.full.shape[1] > KEEP_FULL_PIXELS:
                item = replace(item, full=None)
            else:
                kept += item.full.shape[0] * item.full.shape[1]
        prepared.append(item)
    return prepared


def retile(image: PreparedImage, layout: TileLayout, data: bytes, max_pixels: int) -> PreparedImage:
    """The image cut into tiles after all (``Planner.second_pass`` chose ``layout``), from the kept full-size RGB
    or, when none was kept, from its bytes decoded again (the same pixels: decoding is deterministic)."""
    full = image.full if image.full is not None else decode_rgb8(data, max_pixels)
    return replace(image, tiles=cut_tiles(full, layout), layout=layout, full=None)


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
    """PNG of the heatmap, or of the heatmap blended over ``photo`` (RGB, the image's own size) for an overlay, with
    the category's colour scale drawn below it (``legend_bgr``): the image occupies the top ``height`` rows."""
    image = heatmap_bgr(anomaly_map, calibration, width, height)
    if photo is not None:
        photo_bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
        image = cv2.addWeighted(photo_bgr, 1.0 - OVERLAY_ALPHA, image, OVERLAY_ALPHA, 0.0)
    image = np.vstack([image, legend_bgr(calibration, width)])
    ok, encoded = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {width}x{height} heatmap as PNG")
    return encoded.tobytes()


def threshold_level(calibration: CategoryCalibration) -> float:
    """Where the threshold sits on the colour scale (0..1, clipped): the map value at which an image's peak equals
    its threshold when the bundle's score is the map's peak (``prd.score`` ``max``, every bundle so far; then
    ``map_hi`` is set so a normal image's peak is at most mid-scale and this is about 0.5)."""
    span = calibration.map_hi - calibration.map_lo
    return float(np.clip((calibration.threshold - calibration.map_lo) / span, 0.0, 1.0))


def legend_height(width: int) -> int:
    """Rows ``legend_bgr`` adds below an image ``width`` pixels wide: a colour bar, and labels when there is room."""
    return LEGEND_GAP + LEGEND_BAR + (LEGEND_TEXT if width >= LEGEND_TEXT_MIN_WIDTH else 0)


def legend_bgr(calibration: CategoryCalibration, width: int) -> np.ndarray:
    """The colour scale as a bar as wide as the image (left: ``map_lo``, right: ``map_hi`` and beyond), a white
    tick at the threshold's level (``threshold_level``) and, when the image is wide enough, the scale's ends and
    the threshold written under it."""
    legend = np.zeros((legend_height(width), width, 3), np.uint8)
    levels = np.rint(np.linspace(0.0, 255.0, width)).astype(np.uint8)
    bar = cv2.applyColorMap(np.tile(levels, (LEGEND_BAR, 1)), COLORMAP)
    legend[LEGEND_GAP : LEGEND_GAP + LEGEND_BAR] = bar
    tick = min(width - 1, int(round(threshold_level(calibration) * (width - 1))))
    legend[LEGEND_GAP : LEGEND_GAP + LEGEND_BAR, max(0, tick - 1) : tick + 2] = 255
    if width >= LEGEND_TEXT_MIN_WIDTH:
        baseline = legend.shape[0] - 4
        font, scale, white = cv2.FONT_HERSHEY_PLAIN, 0.9, (255, 255, 255)
        cv2.putText(legend, f"{calibration.map_lo:.3g}", (2, baseline), font, scale, white, 1, cv2.LINE_AA)
        right = f"{calibration.map_hi:.3g}+"
        (text_width, _), _ = cv2.getTextSize(right, font, scale, 1)
        cv2.putText(legend, right, (width - text_width - 2, baseline), font, scale, white, 1, cv2.LINE_AA)
        mark = f"threshold {calibration.threshold:.3g}"
        (mark_width, _), _ = cv2.getTextSize(mark, font, scale, 1)
        left = int(np.clip(tick - mark_width // 2, 0, width - mark_width))
        cv2.putText(legend, mark, (left, baseline), font, scale, white, 1, cv2.LINE_AA)
    return legend
