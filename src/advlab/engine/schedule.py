"""Learning-rate schedules as pure functions of training progress (fractional epochs).

A pure function needs no state in checkpoints: the rate at any point of a resumed run is the rate of
the uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Callable

from ..config import ScheduleConfig
from ..epochs import epoch_of
from ..registry import Registry

Schedule = Callable[[ScheduleConfig, float, int], Callable[[float], float]]
SCHEDULES: Registry[Schedule] = Registry("schedule")


@SCHEDULES.register("piecewise")
def _piecewise(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    bounds = [epoch_of(m, epochs) for m in c.milestones]
    return lambda t: lr * c.gamma ** sum(t >= b - 1e-9 for b in bounds)


@SCHEDULES.register("cosine")
def _cosine(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    return lambda t: 0.5 * lr * (1 + math.cos(math.pi * min(t / epochs, 1.0)))


@SCHEDULES.register("one-cycle")
def _one_cycle(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    peak = c.peak * epochs

    def rate(t: float) -> float:
        if t < peak:
            return lr * t / peak
        return lr * max(0.0, (epochs - t) / max(epochs - peak, 1e-12))

    return rate


@SCHEDULES.register("constant")
def _constant(c: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    return lambda t: lr


def create_schedule(config: ScheduleConfig, lr: float, epochs: int) -> Callable[[float], float]:
    """``rate(t)`` for t in [0, epochs]: the learning rate after t epochs of training."""
    return SCHEDULES.get(config.name)(config, lr, epochs)


def first_decay_epoch(config: ScheduleConfig, epochs: int) -> int | None:
    """The 0-indexed epoch at which a piecewise schedule first lowers the rate (None otherwise)."""
    if config.name != "piecewise" or not config.milestones:
        return None
    return int(round(min(epoch_of(m, epochs) for m in config.milestones)))
