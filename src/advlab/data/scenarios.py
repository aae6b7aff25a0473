"""Data scenarios: label noise (per batch or per dataset) and long-tailed class profiles.

Every dataset-level transform is seeded and returns a record of what it changed; records are dataclasses
of plain Python values, so ``json.dumps(record.to_dict())`` always works.

Label-noise kinds (:data:`NOISE_KINDS` is the one list of names; :data:`NOISE_ALIASES` the accepted old
spellings). A *flipped* label y always becomes a different class:

* ``symmetric``: a class drawn uniformly among the C-1 others.
* ``pair-flip``: ``(y + 1) mod C``. Alias ``pair`` (the NoiLIn recipe's name).
* ``two-class``: one of two target classes fixed per class, each with probability 1/2. Class c's two
  targets are drawn once from the seed (:func:`two_class_targets`), distinct from c and from each other.

Relation to the CAAT official code (Zhou, Yang, Wu, "Combining Adversaries with Anti-adversaries in
Training", AAAI 2023; github xiaolingzhou98/CAAT, ``NLT_CIFAR.py``), whose kinds are corruption matrices
applied independently to each label with ``np.random.choice(C, p=row)``, every matrix drawn from numpy's
global state seeded once with the run's seed:

* CAAT ``uniform`` is ``(1 - r) I + r/C``: it may redraw the true class, so its realised flip rate is
  ``r (C-1)/C``. Our ``symmetric`` never flips to the true class: a rate r changes r of the labels.
* CAAT ``flip1`` moves rate r of class i to *one* class drawn at random per class (``np.random.choice``
  among the others; two classes may share a target). Our ``pair-flip`` uses the fixed ``(y + 1) mod C``.
* CAAT ``flip2`` moves r/2 of class i to each of two distinct classes drawn per class among the others;
  ``two-class`` is that matrix, with the targets drawn from our seed instead of numpy's global state.
  CAAT's README calls ``flip2`` "pair-flip noise": to reproduce its pair-flip results use ``two-class``.
* CAAT draws each label independently, so its realised rate is binomial around r (per class too);
  :func:`label_noise` flips exactly ``round(r N)`` labels at uniformly drawn positions, so the overall
  rate is exact and the per-class rates scatter around r (hypergeometric). :func:`flip_labels`, the
  per-batch form, draws each label independently like CAAT.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError


@dataclass(frozen=True)
class NoiseKind:
    """One label-noise kind: its name, what a flipped label becomes, and the fewest classes it needs."""

    name: str
    becomes: str
    min_classes: int = 2


NOISE_KINDS: dict[str, NoiseKind] = {k.name: k for k in (
    NoiseKind("symmetric", "a class drawn uniformly among the C-1 others"),
    NoiseKind("pair-flip", "(y + 1) mod C"),
    NoiseKind("two-class", "one of two classes fixed per class by the seed (never y), probability 1/2 each", 3),
)}
NOISE_ALIASES: dict[str, str] = {"pair": "pair-flip"}  # old name -> kind

CLASS_ORDERS = ("fixed", "shuffled")  # long_tail: which class gets the largest count


def noise_kind(kind: str, num_classes: int | None = None) -> str:
    """The canonical name of ``kind`` (aliases resolved); a DataError for an unknown kind or too few classes."""
    name = NOISE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if name not in NOISE_KINDS:
        aliases = ", ".join(f"{a} = {k}" for a, k in NOISE_ALIASES.items())
        raise DataError(f"unknown label noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)} (alias: {aliases})")
    if num_classes is not None and num_classes < NOISE_KINDS[name].min_classes:
        raise DataError(f"label noise {name!r} needs at least {NOISE_KINDS[name].min_classes} classes, "
                        f"got {num_classes}")
    return name


def check_noise(rate: float, num_classes: int, kind: str) -> str:
    """Check a label-noise setting; return the canonical kind. A DataError for a bad kind, rate or class count."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise DataError(f"label noise rate must be a number in [0, 1], got {rate!r}")
    if num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}")
    return noise_kind(kind, num_classes)


def _check_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"labels must be in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}")
    return labels


def _two_class_table(num_classes: int, g: torch.Generator) -> torch.Tensor:
    """``C x 2`` int64: for each class c, two distinct classes other than c, drawn from ``g``."""
    rows = []
    for c in range(num_classes):
        pick = torch.randperm(num_classes - 1, generator=g)[:2]
        rows.append(pick + (pick >= c).long())  # 0..C-2 onto the classes other than c
    return torch.stack(rows)


def two_class_targets(num_classes: int, seed: int) -> torch.Tensor:
    """The ``two-class`` targets: ``C x 2`` int64, row c the two classes a flipped label of class c goes to.

    Drawn from a private generator seeded with ``seed`` (the same table :func:`label_noise` uses for that
    seed): for each class in turn, the first two entries of a random permutation of the C-1 other classes.
    A DataError for fewer than 3 classes.
    """
    noise_kind("two-class", num_classes)
    return _two_class_table(num_classes, torch.Generator().manual_seed(seed))


def _draw(kind: str, n: int, num_classes: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor | None:
    """The per-label randomness of ``kind``: offsets 1..C-1 (symmetric), a column 0/1 (two-class), or None."""
    if kind == "symmetric":
        return torch.randint(1, num_classes, (n,), generator=g, device=device)
    if kind == "two-class":
        return torch.randint(0, 2, (n,), generator=g, device=device)
    return None


def _flipped(y: torch.Tensor, num_classes: int, kind: str, draw: torch.Tensor | None,
             targets: torch.Tensor | None) -> torch.Tensor:
    """The label each y becomes when flipped (never y itself)."""
    if kind == "symmetric":
        return (y + draw) % num_classes
    if kind == "pair-flip":
        return (y + 1) % num_classes
    if kind == "two-class":
        return targets[y, draw]
    raise AssertionError(f"noise kind {kind!r} has no rule")  # NOISE_KINDS and this function disagree


def _check_targets(targets: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    if targets is None:
        raise DataError("flip_labels: kind 'two-class' needs targets (the C x 2 table of "
                        "advlab.data.two_class_targets(num_classes, seed))")
    targets = torch.as_tensor(targets)
    if targets.shape != (num_classes, 2) or targets.dtype.is_floating_point:
        raise DataError(f"flip_labels: targets must be an integer {num_classes} x 2 table, got {targets.dtype} "
                        f"{tuple(targets.shape)}")
    own = torch.arange(num_classes, device=targets.device)[:, None]
    if (targets == own).any() or (targets[:, 0] == targets[:, 1]).any() or targets.min() < 0 \
            or targets.max() >= num_classes:
        raise DataError("flip_labels: each row c of targets must hold two distinct classes other than c")
    return targets.long()


def flip_labels(labels: torch.Tensor, rate: float, num_classes: int, kind: str = "symmetric",
                generator: torch.Generator | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Each label independently replaced with probability ``rate``; a new tensor on ``labels``' device.

    ``kind`` is one of :data:`NOISE_KINDS` (or an alias, e.g. ``pair``); a replaced label is never the old
    one. ``two-class`` needs ``targets``, the ``C x 2`` table of :func:`two_class_targets` (fixed for a run,
    so it is passed in rather than drawn per batch). Random numbers come only from ``generator`` (the global
    RNG when None), drawn on the generator's device and moved to ``labels``' device; a call consumes a fixed
    amount of randomness for a given kind and batch size. Labels must be in ``0..C-1`` (not checked: this
    runs once per batch). A DataError for a bad kind, rate or targets table.
    """
    kind = check_noise(rate, num_classes, kind)
    table = _check_targets(targets, num_classes).to(labels.device) if kind == "two-class" else None
    n = labels.shape[0]
    where = generator.device if generator is not None else labels.device
    flip = torch.rand(n, generator=generator, device=where) < rate
    draw = _draw(kind, n, num_classes, generator, where)
    flip = flip.to(labels.device)
    draw = draw.to(labels.device) if draw is not None else None
    noisy = _flipped(labels.long(), num_classes, kind, draw, table).to(labels.dtype)
    return torch.where(flip, noisy, labels)


@dataclass(frozen=True)
class LabelNoiseRecord:
    """What :func:`label_noise` did.

    ``kind`` is the canonical name (``pair`` is recorded as ``pair-flip``). ``realised_rate`` is the
    fraction of all labels changed; ``realised_rate_per_class[c]`` the fraction of clean class c whose label
    changed (None for a class with no sample). ``counts_before``/``counts_after``: samples per class under
    the clean and the noisy labels. ``transitions[i][j]``: samples with clean label i and noisy label j.
    ``targets``: the two-class table (row c: the two classes of c), None for the other kinds.
    """

    kind: str
    rate: float
    seed: int
    num_flipped: int
    realised_rate: float
    realised_rate_per_class: list[float | None]
    counts_before: list[int]
    counts_after: list[int]
    transitions: list[list[int]]
    targets: list[list[int]] | None
    flipped_indices: list[int]

    def to_dict(self, indices: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict; without ``flipped_indices`` when ``indices`` is False."""
        d = dataclasses.asdict(self)
        if not indices:
            del d["flipped_indices"]
        return d


def label_noise(labels: torch.Tensor, rate: float, num_classes: int, kind: str = "symmetric",
                seed: int = 0) -> tuple[torch.Tensor, LabelNoiseRecord]:
    """Flip exactly ``round(rate * N)`` labels (Python's ``round``), at positions drawn uniformly.

    ``labels``: int ``N`` in ``0..C-1``. Each chosen label changes to another class according to ``kind``
    (:data:`NOISE_KINDS`; see the module docstring, including how this differs from CAAT's code), so the
    realised rate is ``round(rate * N) / N``. Seeded by ``seed`` alone (a private generator, which for
    ``two-class`` first draws the :func:`two_class_targets` table). Returns the noisy labels (same device and
    dtype) and a :class:`LabelNoiseRecord`. A DataError for a bad kind, rate, class count or labels.
    """
    kind = check_noise(rate, num_classes, kind)
    clean = _check_labels(labels, num_classes)
    y = clean.to("cpu", torch.int64)
    n = len(y)
    k = min(n, round(rate * n))
    g = torch.Generator().manual_seed(seed)
    table = _two_class_table(num_classes, g) if kind == "two-class" else None
    chosen = torch.randperm(n, generator=g)[:k].sort().values
    noisy = y.clone()
    noisy[chosen] = _flipped(y[chosen], num_classes, kind, _draw(kind, k, num_classes, g, y.device), table)
    pairs = torch.bincount(y * num_classes + noisy, minlength=num_classes * num_classes).view(num_classes, -1)
    before = pairs.sum(1)
    changed = before - pairs.diag()
    record = LabelNoiseRecord(
        kind=kind, rate=float(rate), seed=int(seed), num_flipped=k, realised_rate=k / n if n else 0.0,
        realised_rate_per_class=[int(f) / int(b) if b else None for f, b in zip(changed, before)],
        counts_before=before.tolist(), counts_after=pairs.sum(0).tolist(), transitions=pairs.tolist(),
        targets=table.tolist() if table is not None else None, flipped_indices=chosen.tolist())
    return noisy.to(clean.device, clean.dtype), record


@dataclass(frozen=True)
class LongTailRecord:
    """What :func:`long_tail` did.

    ``profile``: the counts of :func:`long_tail_counts`, largest first; ``ranks[c]``: the position in
    ``profile`` of class c's count (``0..C-1`` in order for ``class_order`` ``fixed``), so
    ``counts_after[c] == profile[ranks[c]]``. ``counts_before``/``counts_after``: samples per class.
    """

    ratio: float
    class_order: str
    seed: int
    n_max: int
    profile: list[int]
    ranks: list[int]
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


def check_imbalance(ratio: float, class_order: str) -> None:
    """A DataError unless ``ratio`` is a finite number >= 1 and ``class_order`` one of :data:`CLASS_ORDERS`."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not (math.isfinite(ratio) and ratio >= 1):
        raise DataError(f"long_tail: ratio must be a finite number >= 1 (n_max / n_min), got {ratio!r}")
    if class_order not in CLASS_ORDERS:
        raise DataError(f"long_tail: unknown class_order {class_order!r}; allowed: {', '.join(CLASS_ORDERS)}")


def long_tail(images: torch.Tensor, labels: torch.Tensor, ratio: float, num_classes: int,
              seed: int = 0, class_order: str = "fixed") -> tuple[torch.Tensor, torch.Tensor, LongTailRecord]:
    """Subsample to a long-tailed profile: the class of rank r keeps ``n_max * ratio ** (-r / (C - 1))`` images.

    ``ratio = n_max / n_min >= 1``; ``n_max`` is the size of the smallest class in the input (all classes
    are the same size in the usual balanced splits), and each count is rounded (at least 1). With
    ``class_order`` ``fixed`` class c has rank c (class 0 the largest); with ``shuffled`` the ranks are a
    random permutation drawn from the seed, as CAAT's ``np.random.shuffle`` of its count list. Class c keeps
    a uniformly drawn subset (seeded by ``seed``) of its images; the kept samples stay in their input order.

    CAAT's code differs in two details: its ``n_max`` is ``(N - meta) / C`` and it truncates (``int``)
    where we round. A DataError for mismatched inputs, a bad ratio or class order, or an empty class.
    """
    labels = _check_labels(labels, num_classes)
    if len(images) != len(labels):
        raise DataError(f"long_tail: {len(images)} images but {len(labels)} labels")
    check_imbalance(ratio, class_order)
    y = labels.to("cpu", torch.int64)
    before = torch.bincount(y, minlength=num_classes)
    n_max = int(before.min())
    if n_max == 0:
        raise DataError(f"long_tail: class {int(before.argmin())} has no samples")
    profile = long_tail_counts(n_max, ratio, num_classes)
    g = torch.Generator().manual_seed(seed)
    ranks = torch.randperm(num_classes, generator=g) if class_order == "shuffled" else torch.arange(num_classes)
    keep = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=g)[: profile[int(ranks[c])]]])
    index = torch.cat(keep).sort().values
    record = LongTailRecord(ratio=float(ratio), class_order=class_order, seed=int(seed), n_max=n_max,
                            profile=profile, ranks=ranks.tolist(), counts_before=before.tolist(),
                            counts_after=torch.bincount(y[index], minlength=num_classes).tolist())
    return images[index.to(images.device)], labels[index.to(labels.device)], record
