"""Decoding in worker processes: the samples a worker makes and how a batch of them comes back.

A sample is ``(j, choice)``: image j of a :class:`~advlab.data.images.LazyImages` decoded and preprocessed (or its
random-resized crop) and augmented by its number (:meth:`advlab.data.plan.Augmentation.apply`; -1: none). A bad
file comes back as a :class:`Failure` value rather than an exception, so the main process raises it as one line
(torch's ``DataLoader`` would wrap a worker's exception in a traceback).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .plan import Augmentation

PREFETCH = 4  # batches each worker decodes ahead


class Failure:
    """A worker's DataError, carried back as a value so the main process raises it as one line."""

    def __init__(self, message: str) -> None:
        self.message = message


class Samples(Dataset):
    """Sample ``(j, choice)``: image j of ``images`` preprocessed (or its resized crop), augmented by choice
    (-1: none), with its label; a :class:`Failure` naming the file when it cannot be read."""

    def __init__(self, images, labels: np.ndarray, augmentation: Augmentation) -> None:
        self.images, self.labels, self.augmentation = images, labels, augmentation

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        j, choice = key
        try:
            if choice >= 0 and self.augmentation.kind == "resized-crop":
                image, converted = self.images.native_pil(j)
                return self.augmentation.apply(image, choice), self.labels[j], j, converted
            image, converted = self.images.native(j)
            image, converted = self.images.preprocess(image, converted, j)
            return self.augmentation.apply(image, choice if choice >= 0 else None), self.labels[j], j, converted
        except DataError as e:
            return Failure(str(e))


def collate(items: list) -> tuple | Failure:
    """Samples stacked: uint8 x (B, C, S, S), int64 y and index, the number converted; or the first Failure."""
    failed = next((it for it in items if isinstance(it, Failure)), None)
    if failed is not None:
        return failed
    x = torch.from_numpy(np.stack([it[0] for it in items]))  # stack copies: writable
    y = torch.tensor([int(it[1]) for it in items], dtype=torch.int64)
    index = torch.tensor([it[2] for it in items], dtype=torch.int64)
    return x, y, index, sum(int(it[3]) for it in items)


def one_thread(_: int) -> None:
    """Worker start: one intra-op thread (each worker is one of several processes)."""
    torch.set_num_threads(1)


def decode_all(images, workers: int, batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Every image of ``images`` preprocessed, decoded by ``workers`` processes in order: uint8
    ``N x C x S x S`` and the number whose colour mode was converted. DataError naming the first bad file."""
    out = torch.empty(tuple(images.shape), dtype=torch.uint8)
    n = len(images)
    batches = [[(j, -1) for j in range(lo, min(lo + batch_size, n))] for lo in range(0, n, batch_size)]
    samples = Samples(images, np.zeros(n, dtype=np.int64), Augmentation())
    loader = DataLoader(samples, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                        worker_init_fn=one_thread, prefetch_factor=PREFETCH, generator=torch.Generator())
    converted, at = 0, 0
    for item in loader:
        if isinstance(item, Failure):
            raise DataError(item.message)
        x, _, _, count = item
        out[at:at + len(x)] = x
        at += len(x)
        converted += count
    return out, converted
