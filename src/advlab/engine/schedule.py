"""Learning-rate schedules as pure functions of training progress (fractional epochs).

A pure function needs no state in checkpoints: the rate at any point of a resumed run is the rate of
the uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Callable

from ..config import ScheduleConfig
from ..registry import lookup


def _piecewise(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    bounds = [m * epochs if m < 1 else m for m in c.milestones]
    return lambda t: lr * c.gamma ** sum(t >= b - 1e-9 for b in bounds)


def _cosine(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    return lambda t: 0.5 * lr * (1 + math.cos(math.pi * min(t / epochs, 1.0)))


def _one_cycle(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    peak = c.peak * epochs

    def rate(t: float) -> float:
        if t < peak:
            return lr * t / peak
        return lr * max(0.0, (epochs - t) / max(epochs - peak, 1e-12))

    return rate


def _constant(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    return lambda t: lr


SCHEDULES = {"piecewise": _piecewise, "cosine": _cosine, "one-cycle": _one_cycle, "constant": _constant}


def make_schedule(config: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    """``rate(t)`` for t in [0, epochs]: the learning rate after t epochs of training."""
    return lookup(SCHEDULES, config.name, "schedule")(config, lr, epochs)


def first_decay_epoch(config: ScheduleConfig, epochs: int) -> int | None:
    """The 0-indexed epoch at which a piecewise schedule first lowers the rate (None otherwise)."""
    if config.name != "piecewise" or not config.milestones:
        return None
    return int(round(min(m * epochs if m < 1 else m for m in config.milestones)))
