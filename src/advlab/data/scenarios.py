"""Data scenarios: label noise (per batch or per dataset) and long-tailed class profiles.

Every dataset-level transform is seeded and returns a record of what it changed; records are dataclasses
of plain Python values, so ``json.dumps(record.to_dict())`` always works.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError

NOISE_KINDS = ("symmetric", "pair")


def _check_noise(rate: float, num_classes: int, kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise DataError(f"unknown label noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)}")
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"label noise rate must be in [0, 1], got {rate}")
    if num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}")


def _check_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"labels must be in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}")
    return labels


def _new_labels(y: torch.Tensor, num_classes: int, kind: str, offsets: torch.Tensor | None) -> torch.Tensor:
    """y shifted by ``offsets`` (symmetric: 1..C-1, so never to itself) or by 1 (pair), modulo C."""
    return (y + (offsets if kind == "symmetric" else 1)) % num_classes


def flip_labels(labels: torch.Tensor, rate: float, num_classes: int, kind: str = "symmetric",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Each label independently replaced with probability ``rate``; a new tensor on ``labels``' device.

    ``symmetric`` replaces y by a class drawn uniformly among the C-1 others (never y itself); ``pair``
    by ``(y + 1) mod C``. Random numbers come only from ``generator`` (the global RNG when None), drawn on
    the generator's device and moved to ``labels``' device; a call consumes a fixed amount of randomness
    for a given batch size. Labels must be in ``0..C-1`` (not checked: this runs once per batch).
    """
    _check_noise(rate, num_classes, kind)
    n = labels.shape[0]
    where = generator.device if generator is not None else labels.device
    flip = torch.rand(n, generator=generator, device=where) < rate
    offsets = None
    if kind == "symmetric":
        offsets = torch.randint(1, num_classes, (n,), generator=generator, device=where).to(labels.device)
    flip = flip.to(labels.device)
    noisy = _new_labels(labels, num_classes, kind, offsets).to(labels.dtype)
    return torch.where(flip, noisy, labels)


@dataclass(frozen=True)
class LabelNoiseRecord:
    """What :func:`label_noise` did. ``transitions[i][j]``: samples with clean label i and noisy label j."""

    kind: str
    rate: float
    realised_rate: float
    seed: int
    num_flipped: int
    flipped_indices: list[int]
    transitions: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def label_noise(labels: torch.Tensor, rate: float, num_classes: int, kind: str = "symmetric",
                seed: int = 0) -> tuple[torch.Tensor, LabelNoiseRecord]:
    """Flip exactly ``round(rate * N)`` labels (Python's ``round``), at positions drawn uniformly.

    Each chosen label changes (symmetric: to a uniformly drawn other class; pair: to ``(y + 1) mod C``), so
    the realised rate is ``round(rate * N) / N``. Seeded by ``seed`` alone (a private generator); returns
    the noisy labels (same device and dtype) and a :class:`LabelNoiseRecord`.
    """
    _check_noise(rate, num_classes, kind)
    clean = _check_labels(labels, num_classes)
    y = clean.to("cpu", torch.int64)
    n = len(y)
    k = min(n, round(rate * n))
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=g)[:k].sort().values
    offsets = torch.randint(1, num_classes, (k,), generator=g) if kind == "symmetric" else None
    noisy = y.clone()
    noisy[chosen] = _new_labels(y[chosen], num_classes, kind, offsets)
    pairs = torch.bincount(y * num_classes + noisy, minlength=num_classes * num_classes)
    record = LabelNoiseRecord(
        kind=kind, rate=float(rate), realised_rate=k / n if n else 0.0, seed=int(seed), num_flipped=k,
        flipped_indices=chosen.tolist(), transitions=pairs.view(num_classes, num_classes).tolist())
    return noisy.to(clean.device, clean.dtype), record


@dataclass(frozen=True)
class LongTailRecord:
    """What :func:`long_tail` did: the imbalance ratio, seed, and per-class counts before and after."""

    ratio: float
    seed: int
    n_max: int
    counts_before: list[int]
    counts_after: list[int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def long_tail_counts(n_max: int, ratio: float, num_classes: int) -> list[int]:
    """The exponential profile ``round(n_max * ratio ** (-c / (C - 1)))`` for c = 0..C-1, at least 1."""
    if num_classes == 1:
        return [n_max]
    return [max(1, round(n_max * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def long_tail(images: torch.Tensor, labels: torch.Tensor, ratio: float, num_classes: int,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, LongTailRecord]:
    """Subsample to a long-tailed profile: class c keeps ``n_c = n_max * ratio ** (-c / (C - 1))`` images.

    ``ratio = n_max / n_min >= 1``; ``n_max`` is the size of the smallest class in the input (all classes
    are the same size in the usual balanced splits), and each n_c is rounded (at least 1). Class c keeps a
    uniformly drawn subset (seeded by ``seed``) of its images; the kept samples stay in their input order.
    """
    labels = _check_labels(labels, num_classes)
    if len(images) != len(labels):
        raise DataError(f"long_tail: {len(images)} images but {len(labels)} labels")
    if not (math.isfinite(ratio) and ratio >= 1):
        raise DataError(f"long_tail: ratio must be a finite number >= 1, got {ratio}")
    y = labels.to("cpu", torch.int64)
    before = torch.bincount(y, minlength=num_classes)
    n_max = int(before.min())
    if n_max == 0:
        raise DataError(f"long_tail: class {int(before.argmin())} has no samples")
    target = long_tail_counts(n_max, ratio, num_classes)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=g)[: target[c]]])
    index = torch.cat(keep).sort().values
    record = LongTailRecord(ratio=float(ratio), seed=int(seed), n_max=n_max, counts_before=before.tolist(),
                            counts_after=torch.bincount(y[index], minlength=num_classes).tolist())
    return images[index.to(images.device)], labels[index.to(labels.device)], record
