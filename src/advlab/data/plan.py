"""An epoch's plan: the order of the training split and one augmentation number per position, from (seed, epoch).

Both loaders (:class:`~advlab.data.DeviceLoader` in memory, :class:`~advlab.data.StreamLoader` from disk) draw
the plan here, so the same data, seed and epoch give the same batches in the same order with the same
augmentation draws, whichever loader runs, on any number of processes, and after a restart
(:func:`advlab.seeds.epoch_seed`: stream 0 the order, stream 1 the augmentation).

Augmentations (:data:`AUGMENTATIONS`):

- ``crop``: zero padding ``padding`` then a random crop of the original size, and a horizontal flip with
  probability 1/2 when ``flip`` (the CIFAR recipe; the number is a row of
  :func:`advlab.data.augment.view_table`);
- ``resized-crop``: torchvision's ``RandomResizedCrop`` to the image size and a flip (the ImageNet recipe;
  the number seeds the box, its low bit is the flip). It needs the full-size file, so only the streaming
  loader applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import epoch_seed
from .augment import choices
from .transforms import crop_flip, resized_crop

AUGMENTATIONS = ("crop", "resized-crop")
"""The training augmentations, by name (``data.augment``; ``auto`` picks the dataset's)."""
ORDER_STREAM, AUGMENT_STREAM = 0, 1


@dataclass(frozen=True)
class Augmentation:
    """One training augmentation: ``kind`` of :data:`AUGMENTATIONS`; ``padding`` (crop), ``flip``; ``size`` the
    output side of ``resized-crop``."""

    kind: str = "crop"
    padding: int = 0
    flip: bool = False
    size: int = 0

    @property
    def active(self) -> bool:
        """Whether it changes any image (a crop without padding or flip does not)."""
        return self.kind == "resized-crop" or self.padding > 0 or self.flip

    def describe(self) -> str:
        """One line for the records: e.g. ``crop (padding 4, flip)``, ``resized-crop 224 (flip)``, ``none``."""
        if not self.active:
            return "none"
        flip = ", flip" if self.flip else ""
        if self.kind == "crop":
            return f"crop (padding {self.padding}{flip})"
        return f"resized-crop {self.size} (scale 0.08-1, ratio 3/4-4/3{flip})"

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """``n`` int64 augmentation numbers from ``generator``, or None when nothing is drawn."""
        if not self.active:
            return None
        if self.kind == "crop":
            return choices(n, self.padding, self.padding > 0, self.flip, generator)
        return torch.randint(0, 2 ** 62, (n,), generator=generator, dtype=torch.int64)

    def apply(self, image: np.ndarray, choice: int | None) -> np.ndarray:
        """One image (uint8 ``C x H x W``) augmented by its number ``choice`` (as it is when None)."""
        if choice is None:
            return image
        if self.kind == "crop":
            return crop_flip(image, int(choice), self.padding)
        return resized_crop(image, int(choice), self.size, self.flip)


def epoch_plan(n: int, seed: int, epoch: int, shuffle: bool,
               augmentation: Augmentation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(order, choice)`` of one epoch on the CPU: ``order`` a permutation of ``0..n-1`` (``arange`` without
    ``shuffle``), ``choice[p]`` the augmentation number of position p (None when the augmentation draws none).

    Order and augmentation come from separate generators seeded with ``epoch_seed(seed, epoch, 0)`` and
    ``epoch_seed(seed, epoch, 1)``, so the order does not depend on the augmentation settings.
    """
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, ORDER_STREAM))
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, AUGMENT_STREAM))
    return order, augmentation.draw(n, g)
