"""Your own images in folders (``data.dataset: folder``): torchvision's ImageFolder layout.

``data.root`` is a folder holding one of:

- ``train/<class>/...`` and ``test/<class>/...`` (or ``val/<class>/...``): the training and the test files;
- ``<class>/...`` only: advlab carves the test split, ``test_fraction`` of each class (at least one image when
  the class has two), by a fixed rule (the images of each class with the smallest
  :func:`advlab.data.splits.position_keys` of stream :data:`TEST_STREAM`), and records it in ``data.json``;
- beside either, ``unlabeled/...``: images without class folders, the unlabeled split (``data.unlabeled``).

Classes are the subfolders sorted by name (label 0 is the first), as torchvision's ``ImageFolder``; the images
of a class are every file under its folder whose name ends in an image extension
(:data:`advlab.data.decode.IMAGE_EXTENSIONS`, any case), sorted by path. Names starting with ``.`` are skipped
(``.ipynb_checkpoints`` is not a class). A test class must be a training class. A class folder without images is
an error naming it; so is a folder of images without class folders where labels are needed.

The set is colour (3 channels) unless the first image of every training class is grayscale (1 channel); other
images are converted to the set's mode when decoded, and counted. The image size is ``data.image_size`` or, when
None, that of the first training image (which must be square); images of another size are then an error naming
the file, while with ``data.image_size`` every image is brought to that size (resize and centre crop).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .decode import GRAY_MODES, image_header, is_image_file
from .files import BadFile
from .images import FileBackend
from .sources import OpenOptions, PartData
from .splits import position_keys

TEST_STREAM = 1 << 40  # position keys of the carved test split: splitmix64 of (this + i), apart from validation's
TEST_NAMES = ("test", "val")
UNLABELED = "unlabeled"


def subfolders(folder: Path) -> list[str]:
    """Names of ``folder``'s subfolders, sorted, hidden ones (``.name``) skipped."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[str]:
    """Every image file under ``folder`` (any depth, hidden names skipped), sorted by path."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(top, f) for f in sorted(files) if not f.startswith(".") and is_image_file(f)]
    return sorted(found)


def class_files(folder: Path, classes: list[str] | None = None,
                exclude: tuple[str, ...] = ()) -> tuple[list[str], list[str], np.ndarray]:
    """``(classes, paths, labels)`` of an ImageFolder ``folder``: ``classes`` its sorted subfolders but ``exclude``
    (or the given list, whose folders may be missing), every image of class c labelled c. DataError for a folder
    without class folders, a class folder without images (naming it), or a subfolder not one of ``classes``."""
    present = [c for c in subfolders(folder) if c not in exclude]
    if not present:
        loose = image_files(folder)
        raise DataError(f"{folder} holds {'images' if loose else 'nothing'} but no class folders: labelled images go "
                        f"in {folder}/<class>/ (a folder without class subfolders is an unlabeled split: "
                        f"put it under {UNLABELED}/)")
    if classes is None:
        classes = present
    else:
        unknown = [c for c in present if c not in classes]
        if unknown:
            raise DataError(f"{folder / unknown[0]}: class {unknown[0]!r} is not a training class "
                            f"(training classes: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    paths: list[str] = []
    labels: list[np.ndarray] = []
    for label, name in enumerate(classes):
        if name not in present:
            continue
        files = image_files(folder / name)
        if not files:
            raise DataError(f"{folder / name}: class folder without images (extensions: .jpg .jpeg .png .ppm .bmp "
                            ".pgm .tif .tiff .webp)")
        paths += files
        labels.append(np.full(len(files), label, dtype=np.int64))
    return classes, paths, np.concatenate(labels)


def carve(labels: np.ndarray, num_classes: int, fraction: float) -> np.ndarray:
    """Positions (ascending) of the test split carved from one labelled folder: per class c of n_c images, the
    ``max(1, round(fraction * n_c))`` (at most n_c - 1) images with the smallest position keys of stream
    :data:`TEST_STREAM`; none from a class of one image."""
    keys = position_keys(len(labels), start=TEST_STREAM)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.append(members[np.argsort(keys[members], kind="stable")[:k]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def set_facts(first_images: list[str], image_size: int | None) -> tuple[int, int | None]:
    """``(channels, size)`` of a set from the first image of each class: 1 channel when all are grayscale, else 3;
    the size of the first image (BadFile when it is not square, unless ``image_size`` is given: then None)."""
    headers = [image_header(p) for p in first_images]
    channels = 1 if all(mode in GRAY_MODES for mode, _ in headers) else 3
    w, h = headers[0][1]
    if image_size is not None:
        return channels, w if w == h else None
    if w != h:
        raise BadFile(first_images[0], f"is {w}x{h} pixels, not square: set data.image_size to resize every image "
                                       "to a square of that side (resize and centre crop)")
    return channels, int(w)


def digest(paths: list[str], root: Path) -> str:
    """sha256 of the sorted relative paths: names a carved split in the records without listing it."""
    h = hashlib.sha256()
    for p in sorted(os.path.relpath(p, root) for p in paths):
        h.update(p.encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class FolderSource:
    """The ImageFolder layouts of the module docstring; ``data.root`` is the folder (nothing else is searched)."""

    def wanted(self, part: str) -> str:
        if part == UNLABELED:
            return f"{UNLABELED}/ (images without class folders)"
        return "train/<class>/ and test/<class>/ (or val/), or <class>/ folders of images"

    def _train_folder(self, root: Path) -> Path | None:
        if (root / "train").is_dir():
            return root / "train"
        return root if any(c not in TEST_NAMES + (UNLABELED,) for c in subfolders(root)) else None

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if not folder.is_dir():
            return None
        if part == UNLABELED:
            return [folder] if (folder / UNLABELED).is_dir() else None
        return [folder] if self._train_folder(folder) is not None else None

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        options = options or OpenOptions()
        root = files[0]
        train = self._train_folder(root)
        classes, paths, labels = class_files(train, exclude=(UNLABELED,) if train == root else ())
        firsts = [paths[int(np.flatnonzero(labels == c)[0])] for c in range(len(classes))]
        channels, size = set_facts(firsts, options.image_size)
        record = {"layout": "folder", "root": str(root)}
        if part == UNLABELED:
            found = image_files(root / UNLABELED)
            if not found:
                raise DataError(f"{root / UNLABELED}: the unlabeled folder holds no images")
            return PartData(FileBackend(tuple(found), channels), np.full(len(found), -1, dtype=np.int64),
                            tuple(classes), size, {**record, "unlabeled": str(root / UNLABELED)})
        test_folder = next((root / n for n in TEST_NAMES if train != root and (root / n).is_dir()), None)
        if test_folder is not None:
            if part == "test":
                _, paths, labels = class_files(test_folder, classes)
            record["test"] = str(test_folder)
        else:
            test = carve(labels, len(classes), options.test_fraction)
            record["test"] = {"carved_from": str(train), "fraction": options.test_fraction, "size": len(test),
                              "rule": f"per class the images with the smallest position keys of stream {TEST_STREAM}",
                              "sha256": digest([paths[i] for i in test], root)}
            keep = test if part == "test" else np.setdiff1d(np.arange(len(labels)), test)
            paths, labels = [paths[i] for i in keep], labels[keep]
            if not len(labels):
                raise DataError(f"{train}: too few images to carve a test split (one class needs two images)")
        return PartData(FileBackend(tuple(paths), channels), labels, tuple(classes), size, record)

    def published(self, part: str) -> tuple[str, ...]:
        return ()
