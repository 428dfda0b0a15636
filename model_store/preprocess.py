"""Bytes → resized RGB uint8: the one image path shared by training, evaluation and the service.

Everything after this (uint8 → float, normalisation, the model, the anomaly-map maths) is inside the ONNX graph,
so a file scored by ``training evaluate`` and by ``POST /score`` goes through identical code.

Decoding uses OpenCV (PNG, JPEG, BMP, TIFF, WebP; 8/16-bit; gray, RGB, RGBA); Pillow only reads the header first
so a decompression bomb is refused before any pixel is decoded. EXIF orientation is ignored: line cameras
photograph parts in a fixed pose, and honouring a stray tag would rotate some images and not others.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

RESIZE_INTERPOLATION = cv2.INTER_AREA
"""The resize rule named ``cv2.INTER_AREA`` in manifests: area averaging when shrinking, bilinear-like when growing."""

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit in ``read_header``, with a clear message


class ImageDecodeError(ValueError):
    """An upload or file that is not a usable image. ``kind`` is a short, bounded label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def read_header(data: bytes, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Return (width, height, format) from the header alone; refuse empty data, non-images and oversized images."""
    if not data:
        raise ImageDecodeError("empty", "the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height, fmt = im.width, im.height, (im.format or "unknown")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError("not_an_image", f"not a readable image ({exc.__class__.__name__})") from exc
    if width < 1 or height < 1:
        raise ImageDecodeError("bad_size", f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        message = f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        raise ImageDecodeError("too_many_pixels", message)
    return width, height, fmt


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV array (gray/BGR/BGRA, uint8/uint16/float) → contiguous RGB uint8 (H, W, 3)."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        scaled = np.clip(pixels.astype(np.float64), 0.0, 1.0 if pixels.dtype.kind == "f" else 255.0)
        pixels = (scaled * (255.0 if pixels.dtype.kind == "f" else 1.0)).round().astype(np.uint8)
    if pixels.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB))
    channels = pixels.shape[2]
    if channels == 1:
        return np.ascontiguousarray(cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2RGB))
    if channels == 3:
        return np.ascontiguousarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))
    if channels == 4:
        return np.ascontiguousarray(cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB))
    raise ImageDecodeError("unsupported_mode", f"unsupported number of channels: {channels}")


def _undecodable(data: bytes, width: int, height: int, fmt: str) -> ImageDecodeError:
    """Why OpenCV refused a file whose header is fine: a pixel layout it does not handle, or damaged data.

    Pillow decodes the whole file to tell them apart (size already checked against the pixel limit): if it can,
    the data is intact and the layout (e.g. a TIFF with 5 samples per pixel) is what we do not support.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
    except (OSError, SyntaxError, ValueError):
        return ImageDecodeError("corrupt", f"{fmt} image ({width}x{height}) could not be decoded: truncated or corrupt")
    message = (
        f"{fmt} image ({width}x{height}, Pillow mode {mode}) has a pixel layout that cannot be decoded; "
        "send gray, RGB or RGBA with 8 or 16 bits per channel"
    )
    return ImageDecodeError("unsupported_mode", message)


def decode_rgb8(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes to RGB uint8 (H, W, 3) at full size, after a header check."""
    width, height, fmt = read_header(data, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise _undecodable(data, width, height, fmt)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        message = f"decoded size {pixels.shape[1]}x{pixels.shape[0]} != header {width}x{height}"
        raise ImageDecodeError("corrupt", message)
    return to_rgb8(pixels)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The bundle's resize rule: squash to size×size with INTER_AREA (aspect ratio is not kept, as in training)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=RESIZE_INTERPOLATION)


def load_model_input(data: bytes, size: int, max_pixels: int | None = None) -> tuple[np.ndarray, int, int]:
    """Bytes → (size×size×3 uint8 model input, original width, original height)."""
    rgb = decode_rgb8(data, max_pixels)
    return resize_square(rgb, size), rgb.shape[1], rgb.shape[0]
