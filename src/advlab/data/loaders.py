"""Which loader a run trains with, and creating it: in memory when the decoded split fits, else streamed.

``data.loader``: ``memory`` (:class:`~advlab.data.DeviceLoader`: the whole split decoded once, held on the
training device, batched and augmented there), ``stream`` (:class:`~advlab.data.StreamLoader`: worker processes
decode each batch from disk), or ``auto``: memory when the decoded split (N x C x S x S bytes) fits the budget,
``data.memory_gib`` GiB or by default a quarter of the training device's memory (the GPU's, or the host's RAM
for a CPU run) and at most half of the host memory available now (the split is decoded there first); stream
otherwise, and always for the ``resized-crop`` augmentation (it crops the full-size files, which memory does
not hold).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import DataError
from .device_loader import DeviceLoader
from .images import LazyImages
from .plan import AUGMENTATIONS, Augmentation
from .stream_loader import StreamLoader, default_workers

LOADERS = ("auto", "memory", "stream")
"""``data.loader`` choices."""
GIB = 1 << 30


def _field(data: Any, key: str, default: Any = None) -> Any:
    value = data.get(key, default) if isinstance(data, dict) else getattr(data, key, default)
    return default if value is None else value


def host_memory() -> tuple[int, int]:
    """``(total, available)`` bytes of host memory (``/proc/meminfo``; ``os.sysconf`` where it is missing)."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        kib = {k: int(v.split()[0]) for k, v in fields.items() if k in ("MemTotal", "MemAvailable")}
        return kib["MemTotal"] << 10, kib.get("MemAvailable", kib["MemTotal"]) << 10
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total


def memory_budget(device: torch.device | str | None, gib: float | None = None) -> int:
    """Bytes a decoded split may take to be held in memory: ``gib`` GiB when given; else a quarter of the
    device's memory (CUDA: the GPU's total; otherwise the host's), at most half the host memory available now."""
    total, available = host_memory()
    if gib is not None:
        return int(gib * GIB)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        own = torch.cuda.get_device_properties(device.index or 0).total_memory
    else:
        own = total
    return min(own // 4, available // 2)


def choose_loader(setting: str, nbytes: int, augmentation: Augmentation, device: torch.device | str | None,
                  gib: float | None = None) -> str:
    """``memory`` or ``stream`` for a split of ``nbytes`` decoded bytes (see the module docstring). DataError for
    ``memory`` with the ``resized-crop`` augmentation, or an unknown setting."""
    if setting not in LOADERS:
        raise DataError(f"data.loader: unknown loader {setting!r}; allowed: {', '.join(LOADERS)}")
    if augmentation.kind == "resized-crop" and augmentation.active:
        if setting == "memory":
            raise DataError("data.loader: memory holds each image preprocessed (at its fixed size), but data.augment resized-crop "
                            "crops the full-size file: use data.loader stream (or auto), or data.augment crop")
        return "stream"
    if setting != "auto":
        return setting
    return "memory" if nbytes <= memory_budget(device, gib) else "stream"


def train_augmentation(data: Any, facts: Any) -> Augmentation:
    """The training augmentation of a run's data settings (``augment``, ``crop_padding``, ``flip``; None or
    ``auto`` takes the dataset's default, :class:`~advlab.data.loading.DatasetFacts`). DataError for an unknown
    kind."""
    kind = _field(data, "augment", "auto")
    kind = facts.augment if kind == "auto" else kind
    if kind not in AUGMENTATIONS:
        raise DataError(f"data.augment: unknown augmentation {kind!r}; allowed: auto, {', '.join(AUGMENTATIONS)}")
    flip = bool(_field(data, "flip", facts.flip))
    if kind == "resized-crop":
        return Augmentation(kind, 0, flip, facts.image_size)
    return Augmentation(kind, int(_field(data, "crop_padding", facts.crop_padding)), flip, facts.image_size)


def worker_count(setting: int | None) -> int:
    """``data.workers``, or :func:`advlab.data.stream_loader.default_workers` when None."""
    return default_workers() if setting is None else int(setting)


def create_loader(split: Any, data: Any, batch_size: int, device: torch.device | str, seed: int,
                  shuffle: bool = True) -> DeviceLoader | StreamLoader:
    """The loader of a :class:`~advlab.data.TrainingSplit` under a run's data settings: a DeviceLoader when its
    images are decoded (``run_training_split`` chose memory), a StreamLoader when they are lazy."""
    augmentation = train_augmentation(data, split.facts)
    if isinstance(split.images, LazyImages):
        return StreamLoader(split.images, split.labels, batch_size, device=device, shuffle=shuffle,
                            augmentation=augmentation, seed=seed, workers=worker_count(_field(data, "workers")))
    return DeviceLoader(split.images, split.labels, batch_size, device=device, shuffle=shuffle,
                        crop_padding=augmentation.padding, flip=augmentation.flip, seed=seed)
