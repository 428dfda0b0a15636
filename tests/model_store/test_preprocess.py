"""model_store.preprocess keeps Pillow's process-wide state alone and applies the caller's pixel limit per decode."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from model_store.preprocess import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb8, read_header, to_rgb8
from tests.fixtures.images import five_sample_tiff, png, png_claiming, truncated_png, uniform

PILLOW_DEFAULT = 89_478_485
"""Pillow's default ``Image.MAX_IMAGE_PIXELS``: a warning past it, ``DecompressionBombError`` past twice it."""


def test_importing_preprocess_leaves_pillows_pixel_limit_at_its_default() -> None:
    code = "import model_store.preprocess, PIL.Image; print(PIL.Image.MAX_IMAGE_PIXELS)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == str(PILLOW_DEFAULT)


@pytest.mark.parametrize(
    ("width", "height"),
    [(10_000, 10_000), (20_000, 20_000)],
    ids=["past-pillows-warning", "past-pillows-error"],
)
def test_read_header_accepts_a_size_past_pillows_limit_within_ours(width: int, height: int) -> None:
    assert width * height > PILLOW_DEFAULT
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_header(png_claiming(width, height), max_pixels=width * height) == (width, height, "PNG")
    assert not caught, [str(w.message) for w in caught]
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT
    assert warnings.filters == filters


def test_read_header_refuses_a_size_over_our_limit_naming_size_and_limit() -> None:
    with pytest.raises(ImageDecodeError) as refused:
        read_header(png_claiming(20_000, 20_000), max_pixels=50_000_000)
    assert refused.value.kind == "too_many_pixels"
    assert "20000x20000" in str(refused.value) and "50000000" in str(refused.value)


def test_decode_refuses_a_bomb_header_before_decoding_any_pixel() -> None:
    with pytest.raises(ImageDecodeError) as refused:
        decode_rgb8(png_claiming(60_000, 60_000), max_pixels=50_000_000)
    assert refused.value.kind == "too_many_pixels"


def test_no_limit_given_still_refuses_a_huge_image_clearly() -> None:
    assert read_header(png_claiming(10_000, 10_000)) == (10_000, 10_000, "PNG")
    with pytest.raises(ImageDecodeError) as refused:
        read_header(png_claiming(20_000, 20_000))
    assert refused.value.kind == "too_many_pixels"
    assert str(DEFAULT_MAX_PIXELS) in str(refused.value)


def test_our_limit_decides_even_when_someone_lowered_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = png(uniform(40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_header(data, max_pixels=40 * 40) == (40, 40, "PNG")
        assert decode_rgb8(data, max_pixels=40 * 40).shape == (40, 40, 3)
        with pytest.raises(ImageDecodeError, match="over the limit of 1599"):
            read_header(data, max_pixels=40 * 40 - 1)


@pytest.mark.parametrize(("pillow_limit", "tiff_kind"), [(PILLOW_DEFAULT, "unsupported_mode"), (4, "corrupt")])
def test_undecodable_files_are_decode_errors_whatever_pillows_limit(
    monkeypatch: pytest.MonkeyPatch, pillow_limit: int, tiff_kind: str
) -> None:
    """The closer look at a file OpenCV refused opens it as read_header does; Pillow's own refusal is no crash."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    for data, kind in ((truncated_png(), "corrupt"), (five_sample_tiff(), tiff_kind)):
        with pytest.raises(ImageDecodeError) as refused:
            decode_rgb8(data, max_pixels=10_000)
        assert refused.value.kind == kind, str(refused.value)


def test_decode_of_an_ordinary_image_is_unchanged() -> None:
    rgb = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    assert np.array_equal(decode_rgb8(png(rgb), max_pixels=120), rgb)


def _png_of_every_kind() -> dict[str, bytes]:
    """One small PNG of each colour type and bit depth a camera or an editor writes (random pixels)."""
    rng = np.random.default_rng(0)
    kinds: dict[str, bytes] = {}
    for depth in (np.uint8, np.uint16):
        top = np.iinfo(depth).max + 1
        for name, shape in (("gray", (9, 7)), ("rgb", (9, 7, 3)), ("rgba", (9, 7, 4))):
            kinds[f"{name}{np.iinfo(depth).bits}"] = png(rng.integers(0, top, shape, dtype=depth))
    gray = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    for name, image, options in (
        ("gray+alpha", Image.fromarray(np.stack([gray, gray[::-1]], axis=2), "LA"), {}),
        ("palette+transparency", Image.fromarray(gray).convert("P"), {"transparency": 3}),
        ("1-bit", Image.fromarray(gray).convert("1"), {}),
        ("4-bit palette", Image.fromarray(gray).quantize(16), {"bits": 4}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, "PNG", **options)
        kinds[name] = buffer.getvalue()
    return kinds


@pytest.mark.parametrize("kind", sorted(_png_of_every_kind()))
def test_png_decodes_straight_to_rgb8_as_the_general_path_converts_it(kind: str) -> None:
    """PNGs skip the 16-bit/4-channel array (``DIRECT_RGB8_FORMATS``): the pixels must be the general path's."""
    data = _png_of_every_kind()[kind]
    general = to_rgb8(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    decoded = decode_rgb8(data)
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    assert np.array_equal(decoded, general)
