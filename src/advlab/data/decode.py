"""Decoding image files with Pillow: one image file to uint8 ``C x H x W``, bad files named in one line.

Pillow is an optional dependency (``pip install advlab[images]``); it is imported on first use, so the
built-in array datasets work without it. A colour set (3 channels) converts every image that is not RGB
(grayscale, palette, RGBA, CMYK) to RGB; a grayscale set (1 channel) converts to ``L``. Each conversion is
reported to the caller (:func:`decode_image` returns a flag), who counts them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import BadFile

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File name endings read as images (case-insensitive), torchvision ImageFolder's list."""
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
"""Pillow modes of single-channel images: a folder whose first images are all of these is a grayscale set."""
MODE_OF = {1: "L", 3: "RGB"}


def pillow():
    """The ``PIL.Image`` module; a DataError saying how to install Pillow when it is missing."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install 'advlab[images]' (or pip install pillow)") \
            from None
    return Image


def is_image_file(name: str) -> bool:
    """Whether ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def image_header(path: Path | str) -> tuple[str, tuple[int, int]]:
    """``(mode, (width, height))`` of ``path`` from its header only (nothing decoded); BadFile when it is not an
    image Pillow can open."""
    Image = pillow()
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadFile(path, f"is not a readable image ({type(e).__name__}: {e})") from None


def decode_pil(path: Path | str, channels: int):
    """``(image, converted)``: the decoded file as a Pillow image of mode ``L`` (``channels`` 1) or ``RGB`` (3),
    and whether its mode was converted. Raises BadFile naming ``path`` for a missing, truncated or undecodable
    file (Pillow's own message in brackets)."""
    Image = pillow()
    want = MODE_OF[channels]
    try:
        img = Image.open(path)
        img.load()  # decodes now: a truncated file fails here, not later
        converted = img.mode != want
        if converted:
            with warnings.catch_warnings():  # palette images with transparency: converted the same way
                warnings.simplefilter("ignore")
                img = img.convert("RGBA").convert(want) if img.mode in ("P", "PA") and want == "RGB" \
                    else img.convert(want)
        return img, converted
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadFile(path, f"cannot be decoded as an image ({type(e).__name__}: {e})") from None


def as_array(img) -> np.ndarray:
    """A Pillow image of mode L or RGB as uint8 ``C x H x W``."""
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_image(path: Path | str, channels: int) -> tuple[np.ndarray, bool]:
    """``(image, converted)``: the decoded file as uint8 ``channels x H x W``, and whether its mode was converted
    (:func:`decode_pil`). Raises BadFile naming ``path`` as it does."""
    img, converted = decode_pil(path, channels)
    return as_array(img), converted
