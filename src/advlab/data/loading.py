"""Opening a dataset: find its files, open a part once per process, carve the requested split, decode it.

:func:`open_part` gives a part (train, test or unlabeled files) as a :class:`~advlab.data.sources.PartData`
(nothing decoded); :func:`dataset_facts` what a run needs to know of a dataset before any image is decoded
(classes, channels, image size and its preprocessing, augmentation defaults, validation size); :func:`open_split`
a split as :class:`~advlab.data.images.LazyImages` and labels; :func:`load` a split decoded into tensors.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .catalog import LARGE, DatasetInfo, info
from .download import fetch
from .files import BadFile
from .images import LazyImages
from .paths import cache_dir, search_folders
from .sources import OpenOptions, PartData
from .splits import train_indices, validation_indices
from .transforms import preprocessing_name

SPLITS = ("train", "val", "test")
"""The splits of every dataset; a dataset with an ``unlabeled`` part also has the ``unlabeled`` split."""
CACHE_SIZE = 4  # opened parts kept in memory (CIFAR-100 train is 150 MB; a folder's part is its file list)
STAMP_DEPTH = 3  # folders below a located folder whose modification times key the cache (train/<class>/images)

# (name, part, options, stamps) -> PartData; its arrays are never handed out directly
_cache: OrderedDict[tuple, PartData] = OrderedDict()


def clear_cache() -> None:
    """Forget every opened dataset part held in memory."""
    _cache.clear()


def _message(meta: DatasetInfo, part: str, problem: str, folders: list[Path]) -> str:
    """One line: the problem, every folder searched in order, and how to get the files."""
    return (f"{meta.name} ({part} files): {problem}; folders searched, in order: "
            + ", ".join(map(str, folders)) + f"; to get the data: {meta.hint}")


def _stamp(path: Path) -> tuple:
    """What changes when the files change: a file's path, mtime and size; a folder's and its subfolders' mtimes
    (to :data:`STAMP_DEPTH` levels: adding or removing a file changes its folder's)."""
    st = path.stat()
    if not path.is_dir():
        return str(path.resolve()), st.st_mtime_ns, st.st_size
    stamps, level = [(str(path.resolve()), st.st_mtime_ns)], [path]
    for _ in range(STAMP_DEPTH):
        below = []
        for folder in level:
            with os.scandir(folder) as entries:
                below += [Path(e.path) for e in entries if e.is_dir()]
        stamps += [(str(p), p.stat().st_mtime_ns) for p in below]
        level = below
    return tuple(sorted(stamps))


def _check_arrays(meta: DatasetInfo, files: list[Path], data: PartData) -> None:
    """A published array part (IDX, CIFAR, SVHN): the record's image shape and labels in range."""
    backend = data.backend
    shape = (backend.channels, *backend.size) if backend.size else None
    if meta.shape is not None and shape is not None and shape != meta.shape:
        raise BadFile(files[0], f"holds images of shape {'x'.join(map(str, shape))}, expected "
                                f"{'x'.join(map(str, meta.shape))}")
    if len(data.labels) == 0:
        raise BadFile(files[0], "holds no images")
    y = data.labels
    if meta.num_classes is not None and (y.min() < -1 or y.max() >= meta.num_classes or
                                         (y.min() < 0 and (y >= 0).any())):
        raise BadFile(files[-1], f"holds labels {y.min()}..{y.max()}, expected 0..{meta.num_classes - 1}")


def _folders(meta: DatasetInfo, root: str | os.PathLike | None) -> list[Path]:
    if meta.search:
        return search_folders(meta.name, root)
    if root is None:
        raise DataError(f"{meta.name}: data.root is not set; {meta.hint}")
    return [Path(root).expanduser()]


def open_part(name: str, part: str, root: str | os.PathLike | None = None, download: bool = False,
              options: OpenOptions | None = None) -> PartData:
    """The opened ``part`` (``train``, ``test`` or ``unlabeled`` files) of dataset ``name``, cached per process
    (callers must not modify its arrays). DataError (one line: the problem, the folders searched, how to get
    the files) for a part the dataset lacks, missing files, or a bad file (named)."""
    meta = info(name)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise DataError(f"root must be a folder path (str or Path), got {root!r}")
    if part not in meta.parts:
        raise DataError(f"{name} has no {part} part (it has: {', '.join(meta.parts)})")
    options = options or OpenOptions()
    source = meta.source
    folders = _folders(meta, root)
    files = next((f for f in (source.locate(d, part, options) for d in folders) if f), None)
    if files is None and download and source.published(part):
        target = (Path(root).expanduser() if root is not None else cache_dir()) / meta.name
        try:
            for filename in source.published(part):
                fetch(meta.remote(filename), target)
        except DataError as e:
            raise DataError(f"{meta.name} ({part} files): {e}") from None
        files = source.locate(target, part, options)
    if files is None:
        raise DataError(_message(meta, part, f"{source.wanted(part)} not found", folders))
    try:
        key = (meta.name, part, options, tuple(_stamp(f) for f in files))
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        data = source.open(files, part, options)
        _check_arrays(meta, files, data)
    except BadFile as e:
        raise DataError(_message(meta, part, f"{e.path} {e.problem}", folders)) from None
    except DataError as e:
        raise DataError(_message(meta, part, str(e), folders)) from None
    except OSError as e:
        raise DataError(_message(meta, part, f"{e.filename or files[0]}: {e.strerror or e}", folders)) from None
    _cache[key] = data
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return data


@dataclass(frozen=True)
class DatasetFacts:
    """What a run needs of a dataset before decoding it: ``classes`` (names, label order), ``in_channels``,
    ``image_size`` (the side every image is held at) and ``resize`` (images of another size are resized and
    centre-cropped to it; else they are an error), ``preprocessing`` the preprocessing's name (``none`` or
    ``resize-256-center-crop-224``), ``val_per_class``, and the augmentation defaults ``augment`` (a kind of
    :data:`advlab.data.plan.AUGMENTATIONS`), ``crop_padding``, ``flip``; ``source`` what the layout found."""

    dataset: str
    classes: tuple[str, ...]
    in_channels: int
    image_size: int
    resize: bool
    preprocessing: str
    val_per_class: int
    augment: str
    crop_padding: int
    flip: bool
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


def dataset_facts(name: str, root: str | os.PathLike | None = None, options: OpenOptions | None = None, *,
                  val_per_class: int | None = None, download: bool = False) -> DatasetFacts:
    """The :class:`DatasetFacts` of ``name`` (its training part opened, not decoded). ``options.image_size``
    replaces the dataset's side (every image then resized and centre-cropped to it); ``val_per_class`` the
    record's. DataError as :func:`open_part`, or for an image size below 8 or a val_per_class below 0."""
    meta = info(name)
    options = options or OpenOptions()
    known = not meta.named_classes and None not in (meta.num_classes, meta.in_channels, meta.image_size) and \
        (val_per_class is not None or meta.val_per_class is not None)
    if known:  # a published set: its record says everything, no file is opened
        part = PartData(_Channels(meta.in_channels), np.zeros(0, np.int64), size=meta.image_size)
        labelled = part.labels
    else:
        part = open_part(name, "train", root, download, options)
        labelled = part.labels[part.labels >= 0]
    classes = part.classes or tuple(str(c) for c in range(meta.num_classes or int(labelled.max()) + 1))
    size = options.image_size or meta.image_size or part.size
    if size is None or size < 8:
        raise DataError(f"{name}: image size {size} (data.image_size) must be 8 or more")
    resize = meta.resize or options.image_size is not None
    if val_per_class is None:
        val_per_class = meta.val_per_class
    if val_per_class is None:
        smallest = int(np.bincount(labelled, minlength=len(classes)).min())
        val_per_class = max(1, min(1000 // len(classes), smallest // 10))
    if val_per_class < 0:
        raise DataError(f"val_per_class must be >= 0, got {val_per_class}")
    augment = meta.augment if meta.augment != "auto" else ("resized-crop" if size >= LARGE else "crop")
    padding = meta.crop_padding if meta.crop_padding is not None else round(size / 8)
    return DatasetFacts(dataset=name, classes=tuple(classes), in_channels=part.backend.channels, image_size=int(size),
                        resize=resize, preprocessing=preprocessing_name(int(size), resize), val_per_class=int(val_per_class),
                        augment=augment, crop_padding=int(padding), flip=meta.flip, source=part.record)


class _Channels:
    """Stands for a backend in the facts of a published set (only its channels are read)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels


def split_positions(labels: np.ndarray, split: str, facts: DatasetFacts) -> np.ndarray:
    """Positions in the training part of the ``val`` split (``val_per_class`` per class, rank-major, the rule of
    :func:`advlab.data.splits.validation_indices`) or of the ``train`` split (the rest, in file order)."""
    try:
        val = validation_indices(labels, facts.num_classes, facts.val_per_class)
    except DataError as e:
        raise DataError(f"{facts.dataset}: cannot carve the validation split: {e}; "
                        "pass a smaller val_per_class (data.val_per_class) for small files") from None
    return val if split == "val" else train_indices(len(labels), val)


def test_order(labels: np.ndarray) -> np.ndarray:
    """The order the test split is read in: the files' order, but for files stored class by class (class folders:
    labels never decreasing) rank-major, the first image of each class, then the second of each, ..., so the first
    n test images (``evaluation.n``) hold every class, as a published test file's do."""
    if len(labels) < 2 or not np.all(np.diff(labels) >= 0) or labels[0] == labels[-1]:
        return np.arange(len(labels))
    starts = np.searchsorted(labels, labels)  # the first position of each image's class
    rank = np.arange(len(labels)) - starts
    return np.lexsort((labels, rank))


def open_split(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False, *,
               options: OpenOptions | None = None, val_per_class: int | None = None,
               n: int | None = None) -> tuple[LazyImages, torch.Tensor, DatasetFacts]:
    """``(images, labels, facts)`` of one split, nothing decoded: :class:`LazyImages` preprocessed,
    int64 labels (-1 in the unlabeled split), the :class:`DatasetFacts`; the first ``n`` only when given.
    ``split`` as :func:`load`. DataError as :func:`load`."""
    if split not in SPLITS + ("unlabeled",):
        raise DataError(f"unknown split {split!r} for {name}; allowed: {', '.join(SPLITS)}, unlabeled")
    part = open_part(name, {"val": "train"}.get(split, split), root, download, options)
    facts = dataset_facts(name, root, options, val_per_class=val_per_class, download=download)
    if split in ("train", "val"):
        positions = split_positions(part.labels, split, facts)
    elif split == "test":
        positions = test_order(part.labels)
    else:
        positions = np.arange(len(part.labels))
    if n is not None:
        positions = positions[:n]
    images = LazyImages(part.backend, positions, facts.image_size, facts.resize)
    return images, torch.from_numpy(part.labels[positions].astype(np.int64)), facts


def load(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False, *,
         val_per_class: int | None = None, image_size: int | None = None, test_file: str | None = None,
         n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of one split: uint8 ``N x C x H x W`` (contiguous) and int64 ``N``.

    ``split`` is ``train``, ``val`` (``val_per_class`` images of each class carved out of the training
    files, 1,000 in all by default; see :func:`advlab.data.splits.validation_indices` for the rule),
    ``test`` (the test files, untouched), or ``unlabeled`` (a dataset's images without labels, label -1:
    STL-10's, a folder's ``unlabeled/``). ``train`` is the training files minus ``val``, in file order.
    ``val_per_class`` overrides the dataset's default (meant for tiny files; it changes ``train`` too);
    ``image_size`` brings every image to that side (resize, centre crop); ``test_file`` is the test file of
    the ``tensors`` source; ``n`` keeps the first n images (the rest is not decoded).
    With ``download=True``, files found nowhere are downloaded into ``<root or ~/.cache/advlab>/<name>/``.
    Every call returns new tensors; modifying them does not affect later calls. A DataError (one line) for an
    unknown name or split, a root that is not a path, a val_per_class that is not an integer >= 0, and for
    missing or unreadable files (naming the file).
    """
    if val_per_class is not None and (isinstance(val_per_class, bool) or not isinstance(val_per_class, int)):
        raise DataError(f"val_per_class must be an integer >= 0, got {val_per_class!r}")
    options = OpenOptions(image_size=image_size, test_file=test_file)
    images, labels, _ = open_split(name, split, root, download, options=options, val_per_class=val_per_class, n=n)
    return images.materialize()[0], labels
