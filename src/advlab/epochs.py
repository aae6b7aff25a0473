"""One rule for every point of a run given in config: a fraction of the run if below 1, else an epoch.

Learning-rate milestones, GAIRAT's burn-in and lambda pieces, FAT's tau schedule, NoiLIn's half cap and the
start of label refinement all read a point of the run this way.
"""
from __future__ import annotations

import math

from .errors import ConfigError


def epoch_of(value: float, epochs: int) -> float:
    """The (0-indexed, possibly fractional) epoch a config point names.

    ``value < 1`` is a fraction of the run (``value * epochs``); ``value >= 1`` is an epoch number, unchanged.
    """
    return value * epochs if value < 1 else float(value)


def whole_epoch_of(value: float, epochs: int, key: str) -> int:
    """:func:`epoch_of` as a whole epoch: a fraction is rounded (0.75 of 120 is 90); an epoch number must
    be whole. ConfigError naming ``key`` for a negative, non-finite or fractional epoch number."""
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key}: must be a fraction in [0, 1) or an epoch >= 1, got {value!r}")
    if value < 1:
        return int(round(value * epochs))
    if value != int(value):
        raise ConfigError(f"{key}: an epoch number must be whole, got {value!r}")
    return int(value)
