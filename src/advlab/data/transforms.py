"""One image at a time: the preprocessing that brings every image of a split to one size, and the training augmentations of one image.

An image is uint8 ``C x H x W`` (numpy). The *preprocessing* makes every image of a split ``S x S`` (``S`` the
run's image size): an image already ``S x S`` is kept as it is; otherwise, where the dataset allows images of
several sizes (ImageNet, or any set given ``data.image_size``), its shorter side is resized to
``round(S * 256 / 224)`` and the centre ``S x S`` crop is kept: for S = 224 the usual resize-256-centre-crop-224
(torchvision ``Resize(256)`` + ``CenterCrop(224)`` on a Pillow image, bilinear; RobustBench's ``Res256Crop224``).

The augmentations of one image are drawn per sample by :mod:`advlab.data.plan` (a number per sample) and applied
here by the streaming loader's workers: :func:`crop_flip` is the in-memory loader's crop and flip
(:mod:`advlab.data.augment`) on one image, bit for bit; :func:`resized_crop` is torchvision's
``RandomResizedCrop`` (scale (0.08, 1), ratio (3/4, 4/3), 10 tries then a centre crop) with a horizontal flip.
"""
from __future__ import annotations

import math
import random

import numpy as np

from .decode import MODE_OF, pillow
from .files import BadFile

RESIZE_RATIO = 256 / 224  # the evaluation's resize before the centre crop (ImageNet's 256 -> 224)
SCALE = (0.08, 1.0)  # RandomResizedCrop's area range (torchvision default, the ImageNet recipes)
RATIO = (3 / 4, 4 / 3)  # and its aspect-ratio range


def preprocessing_name(size: int, resized: bool) -> str:
    """The preprocessing's name for the results: ``resize-256-center-crop-224``, or ``none`` (files used as they are)."""
    return f"resize-{round(size * RESIZE_RATIO)}-center-crop-{size}" if resized else "none"


def _to_pil(image: np.ndarray):
    Image = pillow()
    c = image.shape[0]
    return Image.fromarray(image[0] if c == 1 else image.transpose(1, 2, 0), MODE_OF[c])


def _from_pil(img, channels: int) -> np.ndarray:
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1)[:channels])


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The shorter side resized to ``round(size * 256 / 224)`` (bilinear, Pillow), then the centre ``size x size``.

    Sizes and offsets as torchvision's ``Resize(int)`` (the longer side ``int(short * long / shorter)``) and
    ``CenterCrop`` (offset ``int(round((side - size) / 2))``).
    """
    Image = pillow()
    c, h, w = image.shape
    short = round(size * RESIZE_RATIO)
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = _to_pil(image).resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return _from_pil(img.crop((left, top, left + size, top + size)), c)


def preprocess(image: np.ndarray, size: int | None, resize: bool, name: str) -> np.ndarray:
    """``image`` at ``size x size``: as it is when it already is (or ``size`` is None), else resized and centre-
    cropped when ``resize``; BadFile naming ``name`` when it is of another size and sizes must agree."""
    if size is None or image.shape[1:] == (size, size):
        return image
    if not resize:
        raise BadFile(name, f"holds an image of {image.shape[1]}x{image.shape[2]} pixels where this set's images are "
                            f"{size}x{size}; set data.image_size to resize every image to one size")
    return resize_center_crop(image, size)


def crop_flip(image: np.ndarray, choice: int, padding: int) -> np.ndarray:
    """The in-memory loader's augmentation of one image (:func:`advlab.data.augment.view_table`'s choice
    ``(dy * (2p+1) + dx) * 2 + flip``): zero-padded by ``padding``, cropped at (dy, dx), then mirrored."""
    k = 2 * padding + 1
    flip = choice % 2
    dy, dx = divmod(choice // 2, k)
    c, h, w = image.shape
    if padding:
        padded = np.zeros((c, h + 2 * padding, w + 2 * padding), dtype=image.dtype)
        padded[:, padding:padding + h, padding:padding + w] = image
        image = padded[:, dy:dy + h, dx:dx + w]
    if flip:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def crop_box(height: int, width: int, rng: random.Random) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random-resized crop of a ``height x width`` image, torchvision's rule
    (``RandomResizedCrop.get_params``): up to 10 draws of an area fraction in :data:`SCALE` and a log-uniform
    aspect ratio in :data:`RATIO` until the box fits, else the centre crop of the clamped ratio."""
    area = height * width
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image, choice: int, size: int, flip: bool) -> np.ndarray:
    """A random-resized crop of ``image`` (uint8 ``C x H x W``, or a Pillow image of mode L or RGB) to
    ``size x size`` (bilinear, Pillow), mirrored when ``flip`` and the low bit of ``choice`` is set; the box is
    drawn by :func:`crop_box` from ``random.Random(choice >> 1)``. Returns uint8 ``C x size x size``."""
    Image = pillow()
    img = _to_pil(image) if isinstance(image, np.ndarray) else image
    width, height = img.size
    top, left, h, w = crop_box(height, width, random.Random(choice >> 1))
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if flip and choice & 1:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return _from_pil(img, 1 if img.mode == "L" else 3)
