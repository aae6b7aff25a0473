"""A split's images without holding them: files decoded on demand, or rows of an array (possibly memory-mapped).

:class:`LazyImages` behaves as a uint8 ``N x C x S x S`` tensor where advlab reads one: ``len``, ``shape``,
indexing by an int, slice, list or index tensor (decoded now, in this process), :meth:`LazyImages.subset`
(positions, nothing decoded). :meth:`LazyImages.materialize` decodes every image into one tensor (with worker
processes when asked), counting the images whose colour mode was converted. Each image is decoded at its
native size and preprocessed (:func:`advlab.data.transforms.preprocess`).

A *backend* is where the images of one part of a dataset live: :class:`FileBackend` (paths decoded by
Pillow), :class:`ArrayBackend` (rows of a uint8 ``N x C x H x W`` array, numpy or memory-mapped; STL-10's
column-major rows transposed as they are read). :class:`ConcatBackend` joins two (the training images and an
unlabeled split).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from ..errors import DataError
from .decode import decode_image, decode_pil
from .files import BadFile
from .transforms import preprocess
from .workers import decode_all


class Backend(Protocol):
    """Where a part's images live. ``channels``: 1 or 3; ``size``: ``(H, W)`` when every image has it (arrays),
    None when only decoding tells (files)."""

    channels: int
    size: tuple[int, int] | None

    def __len__(self) -> int: ...

    def read(self, i: int) -> tuple[np.ndarray, bool]:
        """Image ``i`` at its native size, uint8 ``channels x H x W``, and whether its mode was converted;
        BadFile naming the file when it cannot be read."""

    def name(self, i: int) -> str:
        """What an error about image ``i`` names (its file)."""


class FileBackend:
    """Image files, decoded by Pillow to ``channels`` (:func:`advlab.data.decode.decode_image`).

    The paths are held as one numpy array of bytes, not a list of Python strings: worker processes forked from
    the training process then share its pages (a list's reference counts would copy them into every worker;
    ImageNet's 1.28 million paths are about 100 MB)."""

    def __init__(self, paths: Sequence[str], channels: int) -> None:
        self.paths = np.array([os.fsencode(p) for p in paths]) if len(paths) else np.zeros(0, dtype="S1")
        self.channels = channels
        self.size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> tuple[np.ndarray, bool]:
        return decode_image(self.name(i), self.channels)

    def read_pil(self, i: int):
        """Image ``i`` as a Pillow image (no array made: the random-resized crop works on it directly)."""
        return decode_pil(self.name(i), self.channels)

    def name(self, i: int) -> str:
        return os.fsdecode(self.paths[i])


class ArrayBackend:
    """Rows of a uint8 ``N x C x H x W`` array (``transpose``: each row stored ``C x W x H``, as STL-10's
    column-major files). A memory-mapped file is reopened (not copied) when the backend is pickled."""

    def __init__(self, array: np.ndarray, source: str, transpose: bool = False) -> None:
        self.array, self.source, self.transpose = array, source, transpose
        self.channels = int(array.shape[1])
        h, w = array.shape[2:]
        self.size = (int(w), int(h)) if transpose else (int(h), int(w))

    def __len__(self) -> int:
        return len(self.array)

    def read(self, i: int) -> tuple[np.ndarray, bool]:
        row = self.array[i]
        return np.ascontiguousarray(row.transpose(0, 2, 1) if self.transpose else row), False

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` as one contiguous ``n x C x H x W`` array."""
        rows = self.array[index]
        return np.ascontiguousarray(rows.transpose(0, 1, 3, 2) if self.transpose else rows)

    def name(self, i: int) -> str:
        return f"{self.source} (image {i})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.array, np.memmap) and self.array.filename:
            a = self.array
            state["array"] = ("memmap", a.filename, a.offset, a.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["array"], tuple):
            _, filename, offset, shape = state["array"]
            state["array"] = np.memmap(filename, np.uint8, "r", offset, shape)
        self.__dict__.update(state)


class ConcatBackend:
    """Two backends one after the other (rows of ``first``, then of ``second``)."""

    def __init__(self, first: Backend, second: Backend) -> None:
        if first.channels != second.channels:
            raise DataError(f"cannot join images of {first.channels} and {second.channels} channels")
        self.first, self.second = first, second
        self.channels = first.channels
        self.size = first.size if first.size == second.size else None

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def _at(self, i: int) -> tuple[Backend, int]:
        n = len(self.first)
        return (self.first, i) if i < n else (self.second, i - n)

    def read(self, i: int) -> tuple[np.ndarray, bool]:
        backend, j = self._at(i)
        return backend.read(j)

    def name(self, i: int) -> str:
        backend, j = self._at(i)
        return backend.name(j)


@dataclass(frozen=True, eq=False)
class LazyImages:
    """Images ``positions`` of ``backend``, each preprocessed to ``size x size`` (``resize``: images of another
    size are resized and centre-cropped; else they are an error naming the file)."""

    backend: Backend
    positions: np.ndarray
    size: int
    resize: bool = False

    dtype = torch.uint8
    ndim = 4

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.backend.channels, self.size, self.size))

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded split (uint8)."""
        n, c, h, w = self.shape
        return n * c * h * w

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> "LazyImages":
        """The images at ``index`` (positions in this set), nothing decoded."""
        index = np.asarray(torch.as_tensor(index).cpu().numpy() if isinstance(index, torch.Tensor) else index,
                           dtype=np.int64)
        return LazyImages(self.backend, self.positions[index], self.size, self.resize)

    def name(self, j: int) -> str:
        """The file of image ``j``."""
        return self.backend.name(int(self.positions[j]))

    def image(self, j: int) -> tuple[np.ndarray, bool]:
        """Image ``j`` preprocessed (uint8 ``C x S x S``) and whether its colour mode was converted; a
        DataError naming the file when it cannot be decoded or is of another size where sizes must agree."""
        return self.preprocess(*self.native(j), j)

    def native(self, j: int) -> tuple[np.ndarray, bool]:
        """Image ``j`` at its native size, and whether its mode was converted; DataError naming the file."""
        try:
            return self.backend.read(int(self.positions[j]))
        except BadFile as e:
            raise DataError(str(e)) from None

    def native_pil(self, j: int):
        """Image ``j`` at its native size as a Pillow image (or a uint8 array where the backend holds arrays), and
        whether its mode was converted; DataError naming the file."""
        read = getattr(self.backend, "read_pil", self.backend.read)
        try:
            return read(int(self.positions[j]))
        except BadFile as e:
            raise DataError(str(e)) from None

    def preprocess(self, image: np.ndarray, converted: bool, j: int) -> tuple[np.ndarray, bool]:
        """``image`` (image ``j`` at its native size) preprocessed; DataError naming the file."""
        try:
            return preprocess(image, self.size, self.resize, self.name(j)), converted
        except BadFile as e:
            raise DataError(str(e)) from None

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return torch.from_numpy(self.image(int(key))[0].copy())
        if isinstance(key, slice):
            index = np.arange(len(self))[key]
        else:
            index = np.asarray(torch.as_tensor(key).cpu().numpy(), dtype=np.int64).reshape(-1)
        return self.decode(index)[0]

    def decode(self, index: np.ndarray) -> tuple[torch.Tensor, int]:
        """Images ``index`` decoded in this process: uint8 ``n x C x S x S`` and the number converted."""
        out = torch.empty((len(index), self.backend.channels, self.size, self.size), dtype=torch.uint8)
        array, backend = out.numpy(), self.backend
        if isinstance(backend, ArrayBackend) and backend.size == (self.size, self.size):
            array[:] = backend.rows(self.positions[index])
            return out, 0
        converted = 0
        for k, j in enumerate(index):
            image, was = self.image(int(j))
            array[k] = image
            converted += was
        return out, converted

    def materialize(self, workers: int = 0) -> tuple[torch.Tensor, int]:
        """Every image decoded into one uint8 ``N x C x S x S`` tensor (in ``workers`` processes when > 0), and the
        number of images whose colour mode was converted. DataError naming the first bad file."""
        if workers <= 0 or len(self) < 2 * workers or isinstance(self.backend, ArrayBackend):
            return self.decode(np.arange(len(self)))
        return decode_all(self, workers)


def as_images(images: torch.Tensor | LazyImages, index: torch.Tensor | None = None) -> torch.Tensor | LazyImages:
    """``images[index]`` kept lazy for :class:`LazyImages` (a subset), a contiguous tensor otherwise."""
    if index is None:
        return images
    if isinstance(images, LazyImages):
        return images.subset(index)
    return images[index.to(images.device)].contiguous()
