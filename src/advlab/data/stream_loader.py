"""``StreamLoader``: batches decoded from disk by worker processes, for splits that do not fit in memory.

The epoch's plan (order and one augmentation number per position) is drawn in the main process by
:func:`advlab.data.plan.epoch_plan`, exactly as :class:`~advlab.data.DeviceLoader` draws it; each batch goes to a
worker process as a list of (image, number) pairs, and the worker decodes the images (Pillow), preprocesses
them and augments each by its number (:meth:`advlab.data.plan.Augmentation.apply`). So a worker
holds no random state: the batches do not depend on the number of workers or on which worker decodes what, and
the in-memory and the streaming loader give the same batches for the same data (``crop``; ``resized-crop`` is
streaming only). Batches come back in order (torch's ``DataLoader`` with a batch sampler), in pinned memory on a
CUDA run, and are moved to the device without blocking.

The position in an epoch is one number: :meth:`StreamLoader.start_at` makes the next iteration begin at that
batch, giving exactly the batches the uninterrupted epoch gives from there (a sampler whose position the
checkpoint holds, rather than torchdata's ``StatefulDataLoader``: nothing else is stateful here).
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from ..distributed import shard_bounds
from ..errors import DataError
from .device_loader import Batch
from .images import LazyImages
from .plan import Augmentation, epoch_plan
from .workers import PREFETCH, Failure, Samples, collate, one_thread


class _Batches:
    """The batch sampler of one epoch: for global batches ``start..``, this rank's shard as (image, choice) pairs."""

    def __init__(self, order: torch.Tensor, choice: torch.Tensor | None, batch_size: int, batches: range,
                 rank: int, world_size: int) -> None:
        self.order = order.tolist()
        self.choice = choice.tolist() if choice is not None else None
        self.batch_size, self.batches, self.rank, self.world_size = batch_size, batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        n = len(self.order)
        for b in self.batches:
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if self.world_size > 1:
                a, z = shard_bounds(hi - lo, self.rank, self.world_size)
                lo, hi = lo + a, lo + z
            yield [(self.order[p], self.choice[p] if self.choice is not None else -1) for p in range(lo, hi)]


class StreamLoader:
    """Batches of a split decoded from disk (or a memory-mapped array) by ``workers`` processes.

    ``images``: :class:`~advlab.data.images.LazyImages` of N images; ``labels`` int64 N; ``augmentation`` the
    training augmentation (:class:`advlab.data.plan.Augmentation`); ``seed``: the epoch plan's. The interface is
    :class:`~advlab.data.DeviceLoader`'s: :meth:`set_epoch`, :meth:`start_at`, :meth:`shard`, ``len()``
    (batches per epoch), ``num_items`` (images of the split, all ranks), iteration yielding
    :class:`~advlab.data.Batch` (``x`` float32 in [0, 1] on ``device``, ``y`` int64, ``index`` int64 positions in
    the split). With ``workers=0`` the images are decoded in this process. ``converted`` counts the images whose
    colour mode was converted in the last iteration (this process's).

    Raises DataError (one line naming the file) when an image cannot be decoded, or is of another size where
    sizes must agree.
    """

    def __init__(self, images: LazyImages, labels: torch.Tensor, batch_size: int,
                 device: str | torch.device = "cpu", shuffle: bool = True,
                 augmentation: Augmentation = Augmentation(), seed: int = 0, drop_last: bool = False,
                 workers: int = 0) -> None:
        if not isinstance(images, LazyImages):
            raise DataError(f"StreamLoader streams LazyImages, got {type(images).__name__}; use DeviceLoader for "
                            "a tensor")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"StreamLoader: {len(images)} images but labels of shape {tuple(labels.shape)}")
        if batch_size < 1 or workers < 0:
            raise DataError(f"StreamLoader: batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
        self.images, self.labels = images, labels.to("cpu", torch.int64)
        self.batch_size, self.device = int(batch_size), torch.device(device)
        self.shuffle, self.augmentation, self.seed, self.drop_last = shuffle, augmentation, int(seed), drop_last
        self.workers = int(workers)
        self.epoch, self.rank, self.world_size = 0, 0, 1
        self._start = 0
        self.converted = 0
        self._samples = Samples(images, self.labels.numpy(), augmentation)

    @property
    def num_items(self) -> int:
        """Images of the whole split (all processes together)."""
        return len(self.labels)

    def __len__(self) -> int:
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = int(epoch)

    def start_at(self, batch: int) -> None:
        """Make the next iteration of this epoch begin at global batch ``batch`` (0..len), yielding exactly the
        batches the uninterrupted epoch yields from there; later iterations begin at 0. DataError out of range."""
        if isinstance(batch, bool) or not 0 <= int(batch) <= len(self):
            raise DataError(f"start_at: batch must be in 0..{len(self)}, got {batch!r}")
        self._start = int(batch)

    def shard(self, rank: int, world_size: int) -> None:
        """Yield ``rank``'s contiguous piece of every global batch (:func:`advlab.distributed.shard_bounds`);
        DataError when a global batch would leave a process without samples."""
        n, b = len(self.labels), self.batch_size
        last = n % b if not self.drop_last else 0
        if world_size > 1 and (b < world_size or 0 < last < world_size):
            raise DataError(f"batch_size {b} over {n} training images gives a batch of "
                            f"{b if b < world_size else last} images, fewer than the {world_size} processes; "
                            f"choose batch_size >= {world_size} with {n} % batch_size 0 or >= {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def __iter__(self) -> Iterator[Batch]:
        order, choice = epoch_plan(len(self.labels), self.seed, self.epoch, self.shuffle, self.augmentation)
        sampler = _Batches(order, choice, self.batch_size, range(self._start, len(self)), self.rank, self.world_size)
        self._start, self.converted = 0, 0
        pin = self.device.type == "cuda"
        loader = DataLoader(self._samples, batch_sampler=sampler, num_workers=self.workers, collate_fn=collate,
                            pin_memory=pin, worker_init_fn=one_thread if self.workers else None,
                            prefetch_factor=PREFETCH if self.workers else None,
                            generator=torch.Generator())  # its base seed drawn from its own: the global RNG untouched
        for item in loader:
            if isinstance(item, Failure):
                raise DataError(item.message)
            x, y, index, converted = item
            self.converted += converted
            x = x.to(self.device, non_blocking=pin).float().div_(255)
            yield Batch(x, y.to(self.device, non_blocking=pin), index.to(self.device, non_blocking=pin))


def default_workers() -> int:
    """Worker processes when ``data.workers`` is not set: the CPUs this process may use, shared among the processes
    torchrun started on this machine (``LOCAL_WORLD_SIZE``), at most 8, at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, cpus // local))
