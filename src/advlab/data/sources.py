"""File layouts: which files make a part (train/test) of a dataset, how to find them in a folder and read them.

A *part* is one set of published files: ``train`` (the training files, from which the ``train`` and
``val`` splits are carved) or ``test``. A layout knows file names only; where the published files are
downloaded from, and their checksums, are in the dataset's record (:mod:`advlab.data.catalog`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .archive import safe_extract
from .cifar import read_batches
from .idx import read_idx
from .svhn import read_mat

PARTS = ("train", "test")


class Source(Protocol):
    """What :func:`advlab.data.load` needs from a file layout."""

    def wanted(self, part: str) -> str:
        """The files of ``part``, as told to a user who lacks them."""

    def locate(self, folder: Path, part: str) -> list[Path] | None:
        """The files of ``part`` in ``folder``, or None when the set is incomplete there."""

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``N x C x H x W`` uint8 and labels ``N`` from the files :meth:`locate` found."""

    def published(self, part: str) -> tuple[str, ...]:
        """The published file names to download for ``part``."""


@dataclass(frozen=True)
class IdxSource:
    """MNIST-style IDX files, gzipped (``.gz``) or not, all four in one folder."""

    def _names(self, part: str) -> tuple[str, str]:
        prefix = "train" if part == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def wanted(self, part: str) -> str:
        return " and ".join(f"{n}[.gz]" for n in self._names(part))

    def locate(self, folder: Path, part: str) -> list[Path] | None:
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
class CifarSource:
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

    def locate(self, folder: Path, part: str) -> list[Path] | None:
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
class MatSource:
    """SVHN's ``train_32x32.mat`` / ``test_32x32.mat``."""

    def _file(self, part: str) -> str:
        return f"{part}_32x32.mat"

    def wanted(self, part: str) -> str:
        return self._file(part)

    def locate(self, folder: Path, part: str) -> list[Path] | None:
        path = folder / self._file(part)
        return [path] if path.is_file() else None

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mat(files[0])

    def published(self, part: str) -> tuple[str, ...]:
        return (self._file(part),)
