"""Per-dataset file layout: which files make a part (train/test), how to find, read and download them.

A *part* is one set of published files: ``train`` (the training files, from which the ``train`` and
``val`` splits are carved) or ``test``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .archive import safe_extract
from .cifar import read_batches
from .download import REMOTES, fetch
from .idx import read_idx
from .svhn import read_mat

PARTS = ("train", "test")


@dataclass(frozen=True)
class IdxSource:
    """MNIST-style IDX files, gzipped (``.gz``) or not, all four in one folder."""

    name: str
    hint: str

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

    def download(self, folder: Path, part: str) -> None:
        for n in self._names(part):
            fetch(REMOTES[self.name][n + ".gz"], folder)


@dataclass(frozen=True)
class CifarSource:
    """CIFAR python batches in ``<extracted>/``, or the ``.tar.gz`` archive that contains that folder."""

    name: str
    archive: str
    extracted: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    hint: str

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

    def download(self, folder: Path, part: str) -> None:
        fetch(REMOTES[self.name][self.archive], folder)


@dataclass(frozen=True)
class MatSource:
    """SVHN's ``train_32x32.mat`` / ``test_32x32.mat``."""

    name: str
    hint: str

    def _file(self, part: str) -> str:
        return f"{part}_32x32.mat"

    def wanted(self, part: str) -> str:
        return self._file(part)

    def locate(self, folder: Path, part: str) -> list[Path] | None:
        path = folder / self._file(part)
        return [path] if path.is_file() else None

    def read(self, files: list[Path], part: str) -> tuple[np.ndarray, np.ndarray]:
        return read_mat(files[0])

    def download(self, folder: Path, part: str) -> None:
        fetch(REMOTES[self.name][self._file(part)], folder)


_DOWNLOAD = "call advlab.data.load(name, split, download=True) to download the files"
SOURCES = {
    "fashion-mnist": IdxSource("fashion-mnist", "install Debian's package (apt-get install dataset-fashion-mnist), "
                               f"{_DOWNLOAD}, or put the four IDX files (.gz or not) in one of the folders above"),
    "mnist": IdxSource("mnist", f"{_DOWNLOAD}, or put the four IDX files (.gz or not) in one of the folders above"),
    "cifar10": CifarSource(
        "cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels",
        f"{_DOWNLOAD}, or put cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/ folder) "
        "in one of the folders above"),
    "cifar100": CifarSource(
        "cifar100", "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), "fine_labels",
        f"{_DOWNLOAD}, or put cifar-100-python.tar.gz (or its extracted cifar-100-python/ folder) "
        "in one of the folders above"),
    "svhn": MatSource("svhn", f"{_DOWNLOAD}, or put train_32x32.mat and test_32x32.mat in one of the folders "
                              "above"),
}
