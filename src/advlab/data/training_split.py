"""The training split a run trains on: the training files, minus a clean meta split, subsampled and corrupted.

:func:`training_split` is the single place that turns a dataset's training files into what a run trains
on. The steps, in this order:

1. **load** ``advlab.data.load(name, "train")``: the training files minus the validation split (which
   ``load`` carves out first; ``val`` and ``test`` are never touched here). Positions below
   (``indices``, ``meta_indices``) are positions in this tensor.
2. **meta split**: ``meta_size`` images, ``meta_size // C`` of each class, clean labels, taken before
   anything else and excluded from training. The rule is the validation split's
   (:func:`advlab.data.splits.validation_indices`) applied to the ``train`` split: for each class the images
   with the smallest position keys, in rank-major order. It does not depend on any seed, so every run of a
   dataset (any seed, size, noise or imbalance) sees the same meta split.
3. **train_size**: the first ``train_size`` remaining images, class-balanced
   (:func:`advlab.data.class_balanced_subset`); all of them when None.
4. **imbalance**: the long-tailed profile of :func:`advlab.data.long_tail` (class of rank r keeps
   ``n_max * ratio ** (-r / (C - 1))`` images, rounded; ``class_order`` ``shuffled`` permutes which class
   gets which count, with the seed).
5. **label noise**: :func:`advlab.data.label_noise` on the training labels only (meta labels stay clean).

This is the order of the CAAT official code (``NLT_CIFAR.build_dataloader``: meta per class, then the
imbalanced counts, then the corruption matrix on the training targets); CAAT draws its meta split at random
with the seed and has no ``train_size`` step.

Options are plain dicts or any objects with the same attributes (a config's dataclasses):
``label_noise = {"kind": str, "rate": float, "seed": int}`` and
``imbalance = {"ratio": float, "class_order": "fixed" | "shuffled", "seed": int}``; ``kind`` defaults to
``symmetric``, ``class_order`` to ``fixed``, and a missing or None ``seed`` to :func:`training_split`'s
``seed``. :func:`check_scenarios` checks them without loading any data.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import DataError
from .catalog import info
from .images import ConcatBackend, LazyImages
from .loading import DatasetFacts, open_split
from .sources import OpenOptions
from .scenarios import check_imbalance, check_noise, label_noise as apply_label_noise, long_tail
from .splits import class_balanced_subset, train_indices, validation_indices

# option -> default (REQUIRED: must be given)
REQUIRED = object()
NOISE_OPTIONS: dict[str, Any] = {"kind": "symmetric", "rate": REQUIRED, "seed": None}
IMBALANCE_OPTIONS: dict[str, Any] = {"ratio": REQUIRED, "class_order": "fixed", "seed": None}


@dataclass(frozen=True, eq=False)
class TrainingSplit:
    """What a run trains on, and its meta split.

    ``images``: uint8 ``N x C x H x W``, a tensor, or :class:`~advlab.data.images.LazyImages` (decoded as
    read: the streaming loader's); ``labels``: int64 ``N``, the labels trained on (noisy under label noise;
    -1 for the unlabeled images, which come last); ``clean_labels``: int64 ``N``, the file labels;
    ``indices``: int64 ``N``, positions in ``load(name, "train")`` (-1 for an unlabeled image).
    ``meta_images``/``meta_labels``/``meta_indices``: the same for the clean, class-balanced meta split
    (``M = meta_size`` rows, decoded; empty tensors when ``meta_size`` is 0). ``record``: a JSON-serialisable
    dict of what was done (see :func:`training_split`); ``facts``: the dataset's
    :class:`~advlab.data.loading.DatasetFacts`.
    """

    images: torch.Tensor | LazyImages
    labels: torch.Tensor
    clean_labels: torch.Tensor
    indices: torch.Tensor
    meta_images: torch.Tensor
    meta_labels: torch.Tensor
    meta_indices: torch.Tensor
    record: dict[str, Any]
    facts: DatasetFacts | None = None

    @property
    def num_labelled(self) -> int:
        """Rows with a label (the first ones; the unlabeled images follow)."""
        return int((self.labels >= 0).sum())

    def labelled(self) -> tuple[torch.Tensor | LazyImages, torch.Tensor]:
        """``(images, labels)`` of the labelled rows: the kNN's bank, a linear probe's training images."""
        n = self.num_labelled
        if n == len(self.labels):
            return self.images, self.labels
        if isinstance(self.images, LazyImages):
            return self.images.subset(np.arange(n)), self.labels[:n]
        return self.images[:n], self.labels[:n]

    def decoded(self, workers: int = 0) -> "TrainingSplit":
        """This split with its images decoded into one tensor (itself when they are), ``converted`` recorded."""
        if not isinstance(self.images, LazyImages):
            return self
        images, converted = self.images.materialize(workers)
        record = {**self.record, "images": {**self.record["images"], "converted": converted}}
        return dataclasses.replace(self, images=images, record=record)


def _options(value: Any, spec: dict[str, Any], what: str, seed: int) -> dict[str, Any] | None:
    """``value`` (None, a mapping or an object with attributes) as a complete dict of ``spec``'s keys."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise DataError(f"{what}: unknown option {', '.join(map(repr, unknown))}; allowed: {', '.join(spec)}")
        get = value.get
    else:
        get = lambda key, default: getattr(value, key, default)  # noqa: E731
    out = {}
    for key, default in spec.items():
        out[key] = get(key, default)
        if out[key] is REQUIRED:
            raise DataError(f"{what}: option {key!r} is required (options: {', '.join(spec)})")
    if out["seed"] is None:
        out["seed"] = seed
    if isinstance(out["seed"], bool) or not isinstance(out["seed"], numbers.Integral):
        raise DataError(f"{what}.seed: must be an integer, got {out['seed']!r}")
    out["seed"] = int(out["seed"])
    return out


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise DataError(f"{what}: must be a whole number >= 0, got {value!r}")
    return value


def check_scenarios(num_classes: int | None, meta_size: int = 0, label_noise: Any = None, imbalance: Any = None, *,
                    train_size: int | None = None, seed: int = 0) -> None:
    """Check :func:`training_split`'s options without loading data; a DataError naming the first bad one.

    Checks: ``meta_size`` (and ``train_size`` when given) a whole number >= 0, ``meta_size`` a multiple of
    ``num_classes`` (None: not known yet, the checks that need it wait for the files); label noise: known keys, a kind of :data:`advlab.data.scenarios.NOISE_KINDS` (or an
    alias) with enough classes, a rate in [0, 1], an integer seed; imbalance: known keys, a finite ratio
    >= 1, a class order of :data:`advlab.data.scenarios.CLASS_ORDERS`, an integer seed. Whether the data
    hold enough images is only known once loaded (:func:`training_split` says so then).
    """
    _check(num_classes, meta_size, label_noise, imbalance, train_size, seed)


def _check(num_classes: int, meta_size: int, label_noise: Any, imbalance: Any, train_size: int | None,
           seed: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """:func:`check_scenarios`, returning the completed label-noise and imbalance options."""
    known = num_classes is not None  # a user's set: the classes are known once its files are opened
    if known and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2):
        raise DataError(f"a training split needs at least 2 classes, got {num_classes!r}")
    _count(meta_size, "meta_size")
    if known and meta_size % num_classes:
        raise DataError(f"meta_size: {meta_size} is not a multiple of the {num_classes} classes (the meta split "
                        "takes meta_size / classes images of each class)")
    if train_size is not None:
        _count(train_size, "train_size")
    noise = _options(label_noise, NOISE_OPTIONS, "label_noise", seed)
    if noise is not None:
        try:
            noise["kind"] = check_noise(noise["rate"], num_classes if known else 3, noise["kind"])
        except DataError as e:
            raise DataError(f"label_noise: {e}") from None
    tail = _options(imbalance, IMBALANCE_OPTIONS, "imbalance", seed)
    if tail is not None:
        try:
            check_imbalance(tail["ratio"], tail["class_order"])
        except DataError as e:
            raise DataError(f"imbalance: {str(e).removeprefix('long_tail: ')}") from None
    return noise, tail


def _meta_indices(labels: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < per_class]
    if short:
        detail = ", ".join(f"class {c} has {int(counts[c])}" for c in short)
        raise DataError(f"meta_size: {per_class} images per class wanted for the meta split, but {detail}")
    return torch.from_numpy(validation_indices(labels.numpy(), num_classes, per_class))


def training_split(name: str, *, root: str | os.PathLike | None = None, train_size: int | None = None,
                   meta_size: int = 0, label_noise: Any = None, imbalance: Any = None,
                   seed: int = 0, unlabeled: bool = False, options: OpenOptions | None = None,
                   val_per_class: int | None = None, lazy: bool = False, workers: int = 0) -> TrainingSplit:
    """The :class:`TrainingSplit` of dataset ``name`` (steps and their order in the module docstring).

    ``root`` as in :func:`advlab.data.load`; ``train_size`` the class-balanced number of training images
    kept before imbalance (None: all left after the meta split); ``meta_size`` the clean, class-balanced
    meta split (0: none); ``label_noise``/``imbalance`` the scenario options (None: off); ``seed`` the seed of
    a scenario whose own ``seed`` is missing or None. ``unlabeled``: the dataset's unlabeled part is appended
    after the labelled images (label -1, ``indices`` -1), for self-supervised training; the scenarios apply to
    the labelled images only. ``options`` and ``val_per_class`` as :func:`advlab.data.open_split`. ``lazy``:
    ``images`` stay a :class:`~advlab.data.images.LazyImages` (decoded by the streaming loader); else they are
    decoded now (in ``workers`` processes when > 0).

    ``record`` keys: ``dataset``, ``num_classes``, ``seed``; ``source_size`` (images in the ``train`` split),
    ``meta_size``, ``meta_counts`` (meta images per class), ``train_size`` (as asked, or None), ``size``
    (training images, unlabeled included), ``class_counts`` (training images per clean class), ``label_counts``
    (per label trained on); ``imbalance``: None or :class:`~advlab.data.scenarios.LongTailRecord` as a dict
    (``ratio``, ``class_order``, ``seed``, ``n_max``, ``profile``, ``ranks``, ``counts_before``,
    ``counts_after``); ``label_noise``: None or :class:`~advlab.data.scenarios.LabelNoiseRecord` as a dict
    without the flipped positions (``kind``, ``rate``, ``seed``, ``num_flipped``, ``realised_rate``,
    ``realised_rate_per_class``, ``counts_before``, ``counts_after``, ``transitions``, ``targets``);
    ``unlabeled``: the number of unlabeled images appended (0 without); ``images``: the image side, channels,
    preprocessing, val_per_class, classes and what the layout found (``source``), and ``converted``, the images
    whose colour mode was converted (None until decoded: a lazy split's are counted by its loader).

    A DataError for bad options (as :func:`check_scenarios`), missing files, or too few images for the
    meta split or ``train_size``.
    """
    options = options or OpenOptions()
    _check(info(name).num_classes, meta_size, label_noise, imbalance, train_size, seed)  # before any file is read
    lazy_images, labels, facts = open_split(name, "train", root, options=options, val_per_class=val_per_class)
    C = facts.num_classes
    noise, tail = _check(C, meta_size, label_noise, imbalance, train_size, seed)
    source_size = len(labels)

    meta_index = _meta_indices(labels, C, int(meta_size) // C)
    index = torch.from_numpy(train_indices(source_size, meta_index.numpy()))
    if train_size is not None:
        if train_size > len(index):
            raise DataError(f"train_size: {train_size} wanted, but {name} has {len(index)} training images "
                            f"after the {meta_size}-image meta split")
        try:
            index = index[class_balanced_subset(labels[index], train_size, C)]
        except DataError as e:
            raise DataError(f"train_size: {e}") from None

    tail_record = None
    if tail is not None:
        # long_tail subsamples any per-sample tensor: handing it the positions subsamples those
        index, _, rec = long_tail(index, labels[index], tail["ratio"], C, seed=tail["seed"],
                                  class_order=tail["class_order"])
        tail_record = rec.to_dict()

    clean = labels[index]
    trained_on, noise_record = clean.clone(), None
    if noise is not None:
        trained_on, rec = apply_label_noise(clean, noise["rate"], C, kind=noise["kind"], seed=noise["seed"])
        noise_record = rec.to_dict(indices=False)

    images = lazy_images.subset(index)
    extra = 0
    if unlabeled:
        more, _, _ = open_split(name, "unlabeled", root, options=options, val_per_class=val_per_class)
        images, extra = join(images, more), len(more)
        none = torch.full((extra,), -1, dtype=torch.int64)
        trained_on, clean, index = torch.cat([trained_on, none]), torch.cat([clean, none]), torch.cat([index, none])
    meta_labels = labels[meta_index]
    meta_images, _ = lazy_images.subset(meta_index).materialize()
    record = {
        "dataset": name, "num_classes": C, "seed": int(seed), "source_size": source_size,
        "meta_size": len(meta_index), "meta_counts": torch.bincount(meta_labels, minlength=C).tolist(),
        "train_size": None if train_size is None else int(train_size), "size": len(index),
        "class_counts": torch.bincount(clean[clean >= 0], minlength=C).tolist(),
        "label_counts": torch.bincount(trained_on[trained_on >= 0], minlength=C).tolist(),
        "imbalance": tail_record, "label_noise": noise_record, "unlabeled": extra,
        "images": {"size": facts.image_size, "channels": facts.in_channels, "preprocessing": facts.preprocessing,
                   "val_per_class": facts.val_per_class, "classes": list(facts.classes), "source": facts.source,
                   "converted": None},
    }
    split = TrainingSplit(images=images, labels=trained_on, clean_labels=clean, indices=index,
                          meta_images=meta_images, meta_labels=meta_labels, meta_indices=meta_index, record=record,
                          facts=facts)
    return split if lazy else split.decoded(workers)


def join(first: LazyImages, second: LazyImages) -> LazyImages:
    """The images of ``first`` then of ``second`` (same preprocessing), as one :class:`LazyImages`; nothing decoded."""
    backend = ConcatBackend(first.backend, second.backend)
    positions = np.concatenate([first.positions, len(first.backend) + second.positions])
    return LazyImages(backend, positions, first.size, first.resize)


def _field(value: Any, key: str, default: Any = None) -> Any:
    """``value[key]`` of a mapping, or ``value.key`` of an object (a config's dataclass); ``default`` if absent."""
    if isinstance(value, Mapping):
        return value.get(key, default)
    return getattr(value, key, default)


def open_options(data: Any) -> OpenOptions:
    """The :class:`~advlab.data.sources.OpenOptions` of a run's data settings (``image_size``, ``test_file``,
    ``test_fraction``; missing keys take their defaults)."""
    return OpenOptions(image_size=_field(data, "image_size"), test_file=_field(data, "test_file"),
                       test_fraction=_field(data, "test_fraction", 0.1) or 0.1)


def run_training_split(data: Any, seed: int, device: torch.device | str | None = None) -> TrainingSplit:
    """The training split of a run: :func:`training_split` of its data settings ``data`` (a ``DataConfig``, or
    the ``data`` mapping of a run's stored config: ``dataset``, ``root``, ``train_size``, ``meta_size``,
    ``label_noise`` {kind, rate, seed}, ``imbalance`` {ratio, class_order, seed}, ``unlabeled``, ``image_size``,
    ``val_per_class``, ``test_file``, ``test_fraction``, ``loader``, ``workers``, ``memory_gib``; a missing key
    takes DataConfig's default) and its ``seed``. Label noise of rate 0 and imbalance of ratio 1 are off.

    The images are decoded into memory when the loader is ``memory`` (``loader: auto`` decides by the memory
    budget of ``device``: :func:`advlab.data.loaders.choose_loader`) and stay lazy for the streaming loader;
    ``record["loader"]`` says which.

    The trainer builds what it trains on with this, and ``advlab eval --classifier knn`` the kNN's bank from a
    checkpoint's stored config, so the two are the same split. Raises DataError as :func:`training_split`.
    """
    from .loaders import choose_loader, train_augmentation, worker_count

    noise, tail = _field(data, "label_noise"), _field(data, "imbalance")
    noise = noise if noise is not None and (_field(noise, "rate", 0) or 0) > 0 else None
    tail = tail if tail is not None and (_field(tail, "ratio", 1) or 1) > 1 else None
    split = training_split(_field(data, "dataset"), root=_field(data, "root"), train_size=_field(data, "train_size"),
                           meta_size=_field(data, "meta_size", 0) or 0, label_noise=noise, imbalance=tail, seed=seed,
                           unlabeled=bool(_field(data, "unlabeled", False)), options=open_options(data),
                           val_per_class=_field(data, "val_per_class"), lazy=True)
    kind = choose_loader(_field(data, "loader", "auto") or "auto", split.images.nbytes,
                         train_augmentation(data, split.facts), device, _field(data, "memory_gib"))
    split.record["loader"] = kind
    return split.decoded(worker_count(_field(data, "workers"))) if kind == "memory" else split


class LoadedSplit(NamedTuple):
    """A split decoded: ``images`` uint8 N x C x S x S, ``labels`` int64, ``converted`` the images whose colour
    mode was converted, ``preprocessing`` the preprocessing's name (``none``, ``resize-256-center-crop-224``)."""

    images: torch.Tensor
    labels: torch.Tensor
    converted: int
    preprocessing: str


def run_split(data: Any, split: str, n: int | None = None) -> LoadedSplit:
    """The ``val`` or ``test`` split of a run's data settings (as :func:`run_training_split` reads them), its
    first ``n`` decoded and preprocessed (in ``data.workers`` processes). DataError as :func:`advlab.data.load`."""
    from .loaders import worker_count

    images, labels, facts = open_split(_field(data, "dataset"), split, _field(data, "root"),
                                       options=open_options(data), val_per_class=_field(data, "val_per_class"), n=n)
    decoded, converted = images.materialize(worker_count(_field(data, "workers")))
    return LoadedSplit(decoded, labels, converted, facts.preprocessing)


__all__ = ["TrainingSplit", "training_split", "run_training_split", "run_split", "check_scenarios", "open_options"]
