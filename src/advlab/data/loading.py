"""``load``: find a dataset's files, parse them once per process, and carve the requested split."""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .catalog import DatasetInfo, info
from .files import BadFile
from .paths import cache_dir, search_folders
from .download import fetch
from .splits import train_indices, validation_indices

SPLITS = ("train", "val", "test")
CACHE_SIZE = 4  # parsed parts kept in memory (CIFAR-100 train is 150 MB)

# (name, part, ((resolved path, mtime_ns, size), ...)) -> (images, labels); never handed out directly
_cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def clear_cache() -> None:
    """Forget every parsed dataset file held in memory."""
    _cache.clear()


def _message(meta: DatasetInfo, part: str, problem: str, folders: list[Path]) -> str:
    """One line: the problem, every folder searched in order, and how to get the files."""
    return (f"{meta.name} ({part} files): {problem}; folders searched, in order: "
            + ", ".join(map(str, folders)) + f"; to get the data: {meta.hint}")


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _check(meta: DatasetInfo, files: list[Path], x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1:] != meta.shape:
        raise BadFile(files[0], f"holds images of shape {'x'.join(map(str, x.shape[1:]))}, expected "
                                f"{'x'.join(map(str, meta.shape))}")
    if len(x) == 0:
        raise BadFile(files[0], "holds no images")
    if y.min() < 0 or y.max() >= meta.num_classes:
        raise BadFile(files[-1], f"holds labels {y.min()}..{y.max()}, expected 0..{meta.num_classes - 1}")


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _read_part(meta: DatasetInfo, part: str, root: str | os.PathLike | None,
               download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached ``(images, labels)`` of one part (train or test files); callers must not modify them."""
    source = meta.source
    folders = search_folders(meta.name, root)
    files = next((f for f in (source.locate(d, part) for d in folders) if f), None)
    if files is None and download:
        target = (Path(root).expanduser() if root is not None else cache_dir()) / meta.name
        try:
            for filename in source.published(part):
                fetch(meta.remote(filename), target)
        except DataError as e:
            raise DataError(f"{meta.name} ({part} files): {e}") from None
        files = source.locate(target, part)
    if files is None:
        raise DataError(_message(meta, part, f"{source.wanted(part)} not found", folders))
    try:
        key = (meta.name, part, tuple(_stamp(f) for f in files))
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        x, y = source.read(files, part)
        _check(meta, files, x, y)
    except BadFile as e:
        raise DataError(_message(meta, part, f"{e.path} {e.problem}", folders)) from None
    except DataError as e:
        raise DataError(_message(meta, part, str(e), folders)) from None
    except OSError as e:
        raise DataError(_message(meta, part, f"{e.filename or files[0]}: {e.strerror or e}", folders)) from None
    entry = (_as_tensor(x), _as_tensor(y.astype(np.int64, copy=False)))
    _cache[key] = entry
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return entry


def load(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False, *,
         val_per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of one split: uint8 ``N x C x H x W`` (contiguous) and int64 ``N``.

    ``split`` is ``train``, ``val`` (``val_per_class`` images of each class carved out of the training
    files, 1,000 in all by default; see :func:`advlab.data.splits.validation_indices` for the rule),
    or ``test`` (the test files, untouched). ``train`` is the training files minus ``val``, in file order.
    ``val_per_class`` overrides the dataset's default (meant for tiny files; it changes ``train`` too).
    With ``download=True``, files found nowhere are downloaded into ``<root or ~/.cache/advlab>/<name>/``.
    Every call returns new tensors; modifying them does not affect later calls. A DataError (one line) for an
    unknown name or split, a root that is not a path, a val_per_class that is not an integer >= 0, and for
    missing or unreadable files.
    """
    meta = info(name)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise DataError(f"root must be a folder path (str or Path), got {root!r}")
    if val_per_class is not None and (isinstance(val_per_class, bool) or not isinstance(val_per_class, int)):
        raise DataError(f"val_per_class must be an integer >= 0, got {val_per_class!r}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; allowed: {', '.join(SPLITS)}")
    images, labels = _read_part(meta, "test" if split == "test" else "train", root, download)
    if split == "test":
        return images.clone(), labels.clone()
    per_class = meta.val_per_class if val_per_class is None else int(val_per_class)
    try:
        val = validation_indices(labels.numpy(), meta.num_classes, per_class)
    except DataError as e:
        raise DataError(f"{name}: cannot carve the validation split: {e}; "
                        "pass a smaller val_per_class for small files") from None
    chosen = val if split == "val" else train_indices(len(labels), val)
    index = torch.from_numpy(chosen)
    return images[index].contiguous(), labels[index]
