"""Bytes → resized RGB uint8: the one image path shared by training, evaluation and the service.

Everything after this (uint8 → float, normalisation, the model, the anomaly-map maths) is inside the ONNX graph,
so a file scored by ``training evaluate`` and by ``POST /score`` goes through identical code.

Decoding uses OpenCV (PNG, JPEG, BMP, TIFF, WebP; 8/16-bit; gray, RGB, RGBA); Pillow only reads the header first
so a decompression bomb is refused before any pixel is decoded. The pixel limit is the caller's ``max_pixels``, per
call: nothing here reads or sets Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` or the warnings filters, which
belong to every other caller in the process. EXIF orientation is ignored: line cameras photograph parts in a fixed
pose, and honouring a stray tag would rotate some images and not others.
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

RESIZE_INTERPOLATION = cv2.INTER_AREA
"""The resize rule named ``cv2.INTER_AREA`` in manifests: area averaging when shrinking, bilinear-like when growing."""

DEFAULT_MAX_PIXELS = 2 * 89_478_485
"""The pixel limit when a caller passes ``max_pixels=None`` (training and export reading their own files): Pillow's
default refusal threshold, twice its default ``MAX_IMAGE_PIXELS`` (about 179 million pixels). A fixed number, so a
huge file is still a clear ``too_many_pixels`` error, whatever any caller set Pillow's global to."""

_BOMB_REFUSALS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
"""What Pillow raises from a reader or decoder that applies its global limit itself (the warning when filters make
warnings errors)."""


class ImageDecodeError(ValueError):
    """An upload or file that is not a usable image. ``kind`` is a short, bounded label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _open_lazily(data: bytes) -> ImageFile.ImageFile:
    """``Image.open`` without its size check: the format readers in Pillow's order, the header read, no pixels.

    ``Image.open`` compares every size with the process-wide ``Image.MAX_IMAGE_PIXELS`` (a warning past it, an error
    past twice it, the size lost with it); ``read_header`` compares with the caller's ``max_pixels`` instead. The few
    readers that check the global themselves (WebP, MPO, animated GIF frames) may still raise ``_BOMB_REFUSALS``.
    """
    Image.preinit()  # BMP, GIF, JPEG, PPM, PNG first, as Image.open tries them
    Image.init()
    prefix = data[:16]
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(prefix)
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "looks like it, but unsupported"
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):  # not this format: try the next, as Image.open
            continue
    message = "cannot identify image file"
    raise UnidentifiedImageError(message)


def read_header(data: bytes, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Return (width, height, format) from the header alone; refuse empty data, non-images and oversized images.

    ``max_pixels=None`` applies ``DEFAULT_MAX_PIXELS``, so a huge image is still an ``ImageDecodeError``.
    """
    if not data:
        raise ImageDecodeError("empty", "the file is empty (0 bytes)")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with _open_lazily(data) as im:
            width, height, fmt = im.width, im.height, (im.format or "unknown")
    except _BOMB_REFUSALS as exc:
        message = f"image is over Pillow's pixel limit, which its reader for this format applies itself ({exc})"
        raise ImageDecodeError("too_many_pixels", message) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError("not_an_image", f"not a readable image ({exc.__class__.__name__})") from exc
    if width < 1 or height < 1:
        raise ImageDecodeError("bad_size", f"image has no pixels ({width}x{height})")
    if width * height > limit:
        message = f"image is {width}x{height} = {width * height} pixels, over the limit of {limit}"
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

    Pillow decodes the whole file to tell them apart: if it can, the data is intact and the layout (e.g. a TIFF with
    5 samples per pixel) is what we do not support. The size was checked against the caller's limit by
    ``read_header`` first, and the file is opened the same way, so this decodes no more pixels than that limit
    allows; a decoder that refuses by Pillow's own global limit (TIFF) makes it a clear error, not a crash.
    """
    try:
        with _open_lazily(data) as im:
            im.load()
            mode = im.mode
    except _BOMB_REFUSALS:
        message = (
            f"{fmt} image ({width}x{height}) could not be decoded; Pillow's own pixel limit stops the closer check"
        )
        return ImageDecodeError("corrupt", message)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return ImageDecodeError("corrupt", f"{fmt} image ({width}x{height}) could not be decoded: truncated or corrupt")
    message = (
        f"{fmt} image ({width}x{height}, Pillow mode {mode}) has a pixel layout that cannot be decoded; "
        "send gray, RGB or RGBA with 8 or 16 bits per channel"
    )
    return ImageDecodeError("unsupported_mode", message)


DIRECT_RGB8_FORMATS = frozenset({"PNG"})
"""Formats OpenCV decodes straight to 8-bit RGB with exactly ``to_rgb8``'s result (16 bits → the high byte, alpha
dropped, gray repeated, palettes expanded; every PNG colour type and bit depth is checked by
``tests/model_store/test_preprocess.py``). Decoding them so never holds the 16-bit or 4-channel array: a 16-bit RGBA
PNG peaks at 3 bytes per pixel instead of about 19. Other formats (a float TIFF, say) keep the general path."""


def decode_rgb8(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes to RGB uint8 (H, W, 3) at full size, after a header check."""
    width, height, fmt = read_header(data, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    direct = fmt in DIRECT_RGB8_FORMATS
    mode = cv2.IMREAD_COLOR_RGB if direct else cv2.IMREAD_UNCHANGED
    pixels = cv2.imdecode(buffer, mode | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise _undecodable(data, width, height, fmt)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        message = f"decoded size {pixels.shape[1]}x{pixels.shape[0]} != header {width}x{height}"
        raise ImageDecodeError("corrupt", message)
    return np.ascontiguousarray(pixels) if direct else to_rgb8(pixels)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The bundle's resize rule: squash to size×size with INTER_AREA (aspect ratio is not kept, as in training)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=RESIZE_INTERPOLATION)


def load_model_input(data: bytes, size: int, max_pixels: int | None = None) -> tuple[np.ndarray, int, int]:
    """Bytes → (size×size×3 uint8 model input, original width, original height)."""
    rgb = decode_rgb8(data, max_pixels)
    return resize_square(rgb, size), rgb.shape[1], rgb.shape[0]
