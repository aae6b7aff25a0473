"""Datasets as uint8 tensors, the splits advlab trains and evaluates on, scenarios, and the two loaders.

``load(name, split)`` returns ``(images, labels)``: uint8 ``N x C x H x W`` and int64 ``N``; ``open_split``
the same without decoding (:class:`LazyImages`).

Datasets (:data:`DATASETS`, :func:`info`): ``fashion-mnist``, ``mnist`` (IDX files, ``.gz`` or not),
``cifar10``, ``cifar100`` (python batches, extracted or as the published ``.tar.gz``), ``svhn``
(``train_32x32.mat`` / ``test_32x32.mat``; digit 0 is label 0), ``stl10`` (the binary files, with the
100,000 unlabeled images), ``tiny-imagenet``, ``imagenet`` (JPEG folders), and your own: ``folder``
(:mod:`advlab.data.folder`, the ImageFolder layout) and ``tensors`` (:mod:`advlab.data.tensor_file`). docs/DATA.md
describes each layout, the loaders and the config keys.

Loaders (:mod:`advlab.data.loaders`): :class:`DeviceLoader` holds the decoded split on the training device,
:class:`StreamLoader` decodes each batch in worker processes; both draw an epoch's order and augmentation from
(seed, epoch) alone (:mod:`advlab.data.plan`), so they give the same batches.

Splits: ``val`` is carved out of the training files, class-balanced and deterministic (100 images per class,
10 for CIFAR-100: 1,000 in all; the rule is in :func:`advlab.data.splits.validation_indices`), ``train`` is
the rest of the training files in file order, ``test`` is the test files untouched. Nothing is ever selected
on the test files.

Where files are looked for, in order (first folder holding a complete set wins):

1. ``root`` (the argument), then ``$ADVLAB_DATA``, then ``~/.cache/advlab``; in each of these, first the
   subfolder named after the dataset (``<base>/fashion-mnist/``), then the base folder itself;
2. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).

In a folder, MNIST-style sets are the four IDX files; CIFAR is the extracted folder
(``cifar-10-batches-py/``, ``cifar-100-python/``) or else the archive (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``), extracted next to itself on first use (members that would escape the folder
are refused); SVHN is the two ``.mat`` files. So ``$ADVLAB_DATA/cifar10/cifar-10-batches-py/`` and
``$ADVLAB_DATA/cifar-10-batches-py/`` both work.

Scenarios (:mod:`advlab.data.scenarios`): label noise (``symmetric``, ``pair-flip``, ``two-class``; per
dataset with :func:`label_noise`, per batch with :func:`flip_labels`) and long-tailed profiles
(:func:`long_tail`). :func:`training_split` builds what a run trains on from the ``train`` split, in a fixed
order: a clean class-balanced meta split, ``train_size``, imbalance, then label noise (training labels only);
:func:`check_scenarios` checks its options without loading data.

Each dataset is one record (:class:`DatasetInfo`: classes, shape, augmentation defaults, channel stats,
file layout, published files with URLs and md5s). ``download=True`` downloads only what is found nowhere,
into ``<root or ~/.cache/advlab>/<name>/``, checking each file's md5 before it is renamed into place. Parsed
files are cached in memory per process (keyed by resolved path, modification time and size; the last 4
kept); every ``load`` returns fresh tensors.
"""
from __future__ import annotations

from .catalog import DATASETS, DatasetInfo, info
from .device_loader import Batch, DeviceLoader
from .images import LazyImages
from .loaders import LOADERS, choose_loader, create_loader, memory_budget, train_augmentation
from .loading import SPLITS, DatasetFacts, clear_cache, dataset_facts, load, open_split
from .plan import AUGMENTATIONS, Augmentation, epoch_plan
from .sources import OpenOptions
from .stream_loader import StreamLoader
from .scenarios import (CLASS_ORDERS, NOISE_KINDS, LabelNoiseRecord, LongTailRecord, flip_labels, label_noise,
                        long_tail, two_class_targets)
from .splits import class_balanced_subset
from .training_split import (LoadedSplit, TrainingSplit, check_scenarios, open_options, run_split,
                             run_training_split, training_split)

__all__ = [
    "DATASETS", "DatasetInfo", "info", "load", "SPLITS", "clear_cache", "class_balanced_subset",
    "Batch", "DeviceLoader", "StreamLoader", "LazyImages", "LOADERS", "choose_loader", "create_loader",
    "memory_budget", "train_augmentation", "DatasetFacts", "dataset_facts", "open_split", "AUGMENTATIONS",
    "Augmentation", "epoch_plan", "OpenOptions", "open_options", "run_split", "LoadedSplit", "flip_labels", "label_noise", "long_tail", "LabelNoiseRecord", "LongTailRecord",
    "NOISE_KINDS", "CLASS_ORDERS", "two_class_targets", "TrainingSplit", "training_split", "run_training_split", "check_scenarios",
]
