"""``DeviceLoader``: a whole split held on the training device, batched, shuffled and augmented there."""
from __future__ import annotations

from typing import Iterator, NamedTuple

import torch

from ..distributed import shard_bounds
from ..errors import DataError
from .augment import augmented_batch, pad_images, view_table
from .plan import Augmentation, epoch_plan


class Batch(NamedTuple):
    """One batch: ``x`` float32 in [0, 1], ``y`` int64, ``index`` int64 positions in the loader's images."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class DeviceLoader:
    """Batches of a split held as one uint8 tensor on ``device``.

    Each epoch's order and augmentation come from generators seeded with ``(seed, epoch)`` only, so epoch e
    is the same whether or not the process restarted; call :meth:`set_epoch` before iterating (the epoch
    does not advance by itself), and :meth:`start_at` to continue an epoch from one of its batches (a run
    resumed mid-epoch). Batches are converted to float on the device one at a time; augmentation
    (random crop with zero padding ``crop_padding``, then random horizontal flip) is per sample, on the
    device, one gather per batch (see :mod:`advlab.data.augment`; with cropping on, a zero-padded copy of
    the images is kept on the device). With both off, ``x`` equals ``images[index].float() / 255``.

    Several processes (:meth:`shard`): every process plans the same epoch (order and augmentation of the
    whole split) and yields its contiguous piece of each global batch of ``batch_size``
    (:func:`advlab.distributed.shard_bounds`: sizes differ by at most one), so the processes together see
    exactly the batches, samples and augmentations of one process; ``len()`` is the number of global batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 device: str | torch.device = "cpu", shuffle: bool = True, crop_padding: int = 0,
                 flip: bool = False, seed: int = 0, drop_last: bool = False) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"DeviceLoader needs uint8 N x C x H x W images, got {images.dtype} "
                            f"of shape {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"DeviceLoader: {len(images)} images but labels of shape {tuple(labels.shape)}")
        if batch_size < 1 or crop_padding < 0:
            raise DataError(f"DeviceLoader: batch_size must be >= 1 and crop_padding >= 0, "
                            f"got {batch_size} and {crop_padding}")
        self.device = torch.device(device)
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle, self.crop_padding, self.flip = shuffle, int(crop_padding), flip
        self.seed, self.drop_last = int(seed), drop_last
        self.epoch = 0
        self._start = 0  # the batch the next iteration starts at (start_at); 0 after it began
        self.rank, self.world_size = 0, 1
        self._augment = bool(self.crop_padding) or bool(flip)
        if self._augment:
            self._padded = pad_images(self.images, self.crop_padding)
            self._table = view_table(images.shape[2], images.shape[3], self.crop_padding, self.device)

    def shard(self, rank: int, world_size: int) -> None:
        """Yield ``rank``'s piece of every global batch of ``world_size`` processes from now on.

        DataError when a global batch (``batch_size``, or the last, shorter one) would leave a process
        without samples.
        """
        n, b = len(self.labels), self.batch_size
        last = n % b if not self.drop_last else 0
        if world_size > 1 and (b < world_size or 0 < last < world_size):
            raise DataError(f"batch_size {b} over {n} training images gives a batch of "
                            f"{b if b < world_size else last} images, fewer than the {world_size} processes; "
                            f"choose batch_size >= {world_size} with {n} % batch_size 0 or >= {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = int(epoch)

    def start_at(self, batch: int) -> None:
        """Make the next iteration start at ``batch`` (0-indexed, ``0 <= batch <= len(self)``) of the epoch:
        it yields exactly the batches (samples, order, augmentation) an uninterrupted iteration of this epoch
        yields from there. The epoch's plan is drawn whole, as always, and the earlier batches skipped; the
        iteration after it starts at 0 again. DataError for a batch outside the epoch."""
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch <= len(self):
            raise DataError(f"DeviceLoader.start_at: batch must be an integer in [0, {len(self)}], got {batch!r}")
        self._start = batch

    @property
    def num_items(self) -> int:
        """The number of samples of the whole split (over all processes: each holds the whole split)."""
        return len(self.labels)

    def __len__(self) -> int:
        """The number of (global) batches of an epoch."""
        n, b = len(self.labels), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's order and per-position augmentation choices, on the device.

        :func:`advlab.data.plan.epoch_plan`: separate generators seeded from ``(seed, epoch)``, so the order does
        not depend on the augmentation settings, and the streaming loader draws the same plan.
        """
        augmentation = Augmentation("crop", self.crop_padding, self.flip)
        order, choice = epoch_plan(len(self.labels), self.seed, self.epoch, self.shuffle, augmentation)
        return order.to(self.device), None if choice is None else choice.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        order, choice = self._plan()
        h, w = self.images.shape[2], self.images.shape[3]
        first, self._start = self._start, 0
        for i in range(first, len(self)):
            start = i * self.batch_size
            stop = min(start + self.batch_size, len(order))
            if self.world_size > 1:
                lo, hi = shard_bounds(stop - start, self.rank, self.world_size)
                start, stop = start + lo, start + hi
            part = slice(start, stop)
            index = order[part]
            if choice is None:
                x = self.images.index_select(0, index)
            else:
                x = augmented_batch(self._padded, index, self._table, choice[part], h, w)
            yield Batch(x.float().div_(255), self.labels.index_select(0, index), index)
