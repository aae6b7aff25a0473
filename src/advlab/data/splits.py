"""Index selection: the deterministic validation split and class-balanced prefixes."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def position_keys(n: int, start: int = 0) -> np.ndarray:
    """``splitmix64(start + i)`` for ``i = 0..n-1``: a fixed pseudo-random key per file position.

    ``splitmix64(i)`` is the (i+1)-th output of the splitmix64 generator started at state 0. It is a
    bijection of 64-bit integers (no ties) defined by integer arithmetic only, so the validation split never
    depends on a library's random number generator or version. ``start`` selects another stream of keys (the
    carved test split of a folder uses one apart from the validation split's ``start = 0``).
    """
    z = (np.arange(start + 1, start + n + 1, dtype=np.uint64) * _GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def validation_indices(labels: np.ndarray, num_classes: int, per_class: int) -> np.ndarray:
    """Positions in the training files of the validation split.

    Rule: for each class c, the ``per_class`` images of class c with the smallest
    :func:`position_keys` key. Returned rank-major: the best-ranked image of class 0, 1, ..., C-1, then the
    second of each class, ..., so every prefix of length ``m * C`` is exactly class-balanced. A DataError
    when a class has fewer than ``per_class`` images.
    """
    if per_class < 0:
        raise DataError(f"val_per_class must be >= 0, got {per_class}")
    keys = position_keys(len(labels))
    chosen = np.empty((num_classes, per_class), dtype=np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} training images, fewer than the {per_class} "
                            "the validation split takes per class")
        chosen[c] = members[np.argsort(keys[members], kind="stable")[:per_class]]
    return chosen.T.reshape(-1)


def train_indices(n: int, val: np.ndarray) -> np.ndarray:
    """Positions ``0..n-1`` not in ``val``, in file order."""
    keep = np.ones(n, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep)


def class_balanced_subset(labels: torch.Tensor, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Indices (int64, ascending) of the first ``n`` samples taken class-balanced in file order.

    Each of the C classes (``num_classes``, default ``labels.max() + 1``) contributes its first ``n // C``
    samples; when C does not divide n, classes ``0 .. n % C - 1`` contribute one more. A DataError when
    a class has too few samples or ``n`` is out of range.
    """
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if not 0 <= n <= len(labels):
        raise DataError(f"class_balanced_subset: n must be in 0..{len(labels)}, got {n}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 1
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"class_balanced_subset: labels must be in 0..{num_classes - 1}")
    quota = torch.full((num_classes,), n // num_classes, dtype=torch.long)
    quota[: n % num_classes] += 1
    counts = torch.bincount(labels, minlength=num_classes)
    short = (counts < quota).nonzero().flatten().tolist()
    if short:
        detail = ", ".join(f"class {c}: {int(counts[c])} < {int(quota[c])}" for c in short)
        raise DataError(f"class_balanced_subset: {n} samples need {n // num_classes}(+1) per class; too few in "
                        f"{detail}")
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[sorted_labels]
    return order[rank < quota[sorted_labels]].sort().values
