"""File layouts: which files make a part (train/test/unlabeled) of a dataset, how to find them and open them.

A *part* is one set of published files: ``train`` (the training files, from which the ``train`` and
``val`` splits are carved), ``test``, or ``unlabeled`` (images without labels, for self-supervised training).
A layout knows file names only; where the published files are downloaded from, and their checksums, are in the
dataset's record (:mod:`advlab.data.catalog`). Opening a part gives a :class:`PartData`: where its images live
(a backend of :mod:`advlab.data.images`: an array in memory, a memory-mapped file, or image files decoded on
demand), its labels and its class names. The layouts of the array formats (IDX, CIFAR, SVHN) are here; the
others have a module each (``folder``, ``tensor_file``, ``stl10``, ``tiny_imagenet``, ``imagenet``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .archive import safe_extract
from .cifar import read_batches
from .idx import read_idx
from .images import ArrayBackend, Backend
from .svhn import read_mat

PARTS = ("train", "test", "unlabeled")


@dataclass(frozen=True)
class OpenOptions:
    """What a user's layout needs besides its folder: ``image_size`` (resize every image to this side; None: the
    files' own), ``test_file`` (the tensors source's test file), ``test_fraction`` (the share of each class carved
    as the test split when the files have no test part)."""

    image_size: int | None = None
    test_file: str | None = None
    test_fraction: float = 0.1


@dataclass(frozen=True, eq=False)
class PartData:
    """One opened part: ``backend`` its images; ``labels`` int64 (-1 for an unlabeled image); ``classes`` the class
    names in label order (None: the record's classes, 0..C-1); ``size`` the side of its images when the layout
    fixes it (None: every image its own size, or known only from the files); ``record``: what the layout found,
    JSON-serialisable (kept in ``data.json``)."""

    backend: Backend
    labels: np.ndarray
    classes: tuple[str, ...] | None = None
    size: int | None = None
    record: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """What :func:`advlab.data.load` needs from a file layout."""

    def wanted(self, part: str) -> str:
        """The files of ``part``, as told to a user who lacks them."""

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        """The files of ``part`` in ``folder``, or None when the set is incomplete there."""

    def open(self, files: list[Path], part: str, options: OpenOptions) -> PartData:
        """The part from the files :meth:`locate` found; BadFile or DataError naming a bad file."""

    def published(self, part: str) -> tuple[str, ...]:
        """The published file names to download for ``part``."""


class ArraySource:
    """A layout whose :meth:`read` gives the whole part as arrays (images ``N x C x H x W`` uint8, labels ``N``)."""

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        images, labels = self.read(files, part)
        return PartData(ArrayBackend(np.ascontiguousarray(images), str(files[0])), labels.astype(np.int64),
                        size=int(images.shape[-1]) if images.ndim == 4 and images.shape[-1] == images.shape[-2]
                        else None)


@dataclass(frozen=True)
class IdxSource(ArraySource):
    """MNIST-style IDX files, gzipped (``.gz``) or not, all four in one folder."""

    def _names(self, part: str) -> tuple[str, str]:
        prefix = "train" if part == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def wanted(self, part: str) -> str:
        return " and ".join(f"{n}[.gz]" for n in self._names(part))

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part not in ("train", "test"):
            return None
        found = []
        for n in self._names(part):
            for candidate in (folder / n, folder / f"{n}.gz"):
                if candidate.is_file():
                    found.append(candidate)
                    break
            else:
                return None
        return found

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        return read_idx(files[0], files[1])

    def published(self, part: str) -> tuple[str, ...]:
        return tuple(n + ".gz" for n in self._names(part))


@dataclass(frozen=True)
class CifarSource(ArraySource):
    """CIFAR python batches in ``<extracted>/``, or the ``.tar.gz`` archive that contains that folder."""

    archive: str
    extracted: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str

    def _names(self, part: str) -> tuple[str, ...]:
        return self.train_files if part == "train" else self.test_files

    def wanted(self, part: str) -> str:
        return f"{self.extracted}/{{{','.join(self._names(part))}}} or {self.archive}"

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part not in ("train", "test"):
            return None
        files = [folder / self.extracted / n for n in self._names(part)]
        if all(f.is_file() for f in files):
            return files
        if (folder / self.archive).is_file():
            return [folder / self.archive]
        return None

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        if files[0].name == self.archive:
            target = safe_extract(files[0], files[0].parent, self.extracted)
            files = [target / n for n in self._names(part)]
        return read_batches(files, self.label_key)

    def published(self, part: str) -> tuple[str, ...]:
        return (self.archive,)


@dataclass(frozen=True)
class MatSource(ArraySource):
    """SVHN's ``train_32x32.mat`` / ``test_32x32.mat``."""

    def _file(self, part: str) -> str:
        return f"{part}_32x32.mat"

    def wanted(self, part: str) -> str:
        return self._file(part)

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part not in ("train", "test"):
            return None
        path = folder / self._file(part)
        return [path] if path.is_file() else None

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mat(files[0])

    def published(self, part: str) -> tuple[str, ...]:
        return (self._file(part),)
