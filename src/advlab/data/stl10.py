"""STL-10's published binary files (Coates, Lee and Ng, AISTATS 2011; https://cs.stanford.edu/~acoates/stl10/).

``stl10_binary/`` holds ``train_X.bin`` (5,000 images), ``test_X.bin`` (8,000) and ``unlabeled_X.bin``
(100,000): uint8, each image 3 x 96 x 96 stored channel by channel and column-major within a channel (read as
``N x 3 x 96 x 96``, then the last two axes swapped); labels ``train_y.bin`` / ``test_y.bin``, one uint8 per
image, 1..10 (label 1 is class 0); ``class_names.txt`` the names. The image files are memory-mapped, not read
whole (the unlabeled file is 2.8 GB), and each image is transposed as it is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .archive import safe_extract
from .files import BadFile
from .images import ArrayBackend
from .sources import OpenOptions, PartData

FOLDER = "stl10_binary"
ARCHIVE = "stl10_binary.tar.gz"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
         "unlabeled": ("unlabeled_X.bin",)}


def read_images(path: Path) -> np.ndarray:
    """The images of an STL-10 ``*_X.bin`` file, memory-mapped as stored (``N x 3 x W x H``); BadFile when its
    size is not a whole number of images."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise BadFile(path, f"holds {size} bytes, not a whole number of {IMAGE_BYTES}-byte STL-10 images "
                            "(truncated?)")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // IMAGE_BYTES, 3, SIDE, SIDE))


def read_labels(path: Path, count: int) -> np.ndarray:
    """The labels of an STL-10 ``*_y.bin`` file as 0..9 (the file holds 1..10); BadFile for a count other than
    ``count`` or a label outside 1..10 (naming its position)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) != count:
        raise BadFile(path, f"holds {len(raw)} labels for {count} images")
    bad = np.flatnonzero((raw < 1) | (raw > 10))
    if len(bad):
        raise BadFile(path, f"holds label {raw[bad[0]]} at position {bad[0]}; STL-10 labels are 1..10")
    return raw.astype(np.int64) - 1


@dataclass(frozen=True)
class Stl10Source:
    """The extracted ``stl10_binary/`` folder, or the published archive that contains it."""

    def wanted(self, part: str) -> str:
        return f"{FOLDER}/{{{','.join(FILES[part])}}} or {ARCHIVE}"

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        files = [folder / FOLDER / n for n in FILES[part]]
        if all(f.is_file() for f in files):
            return files
        return [folder / ARCHIVE] if (folder / ARCHIVE).is_file() else None

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        if files[0].name == ARCHIVE:
            files = [safe_extract(files[0], files[0].parent, FOLDER) / n for n in FILES[part]]
        images = read_images(files[0])
        labels = read_labels(files[1], len(images)) if len(files) > 1 else np.full(len(images), -1, np.int64)
        names = files[0].parent / "class_names.txt"
        classes = tuple(names.read_text().split()) if names.is_file() else None
        if classes is not None and len(classes) != 10:
            classes = None
        return PartData(ArrayBackend(images, str(files[0]), transpose=True), labels, classes, SIDE,
                        {"layout": "stl10", "files": [str(f) for f in files]})

    def published(self, part: str) -> tuple[str, ...]:
        return (ARCHIVE,)
