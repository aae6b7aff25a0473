"""Early-stopped PGD (FAT, Zhang et al., ICML 2020): stop each example tau steps after PGD first fools the model.

Each example keeps a counter c = tau; at every iteration on the still-active examples, a misclassified
example with c == 0 is frozen (its current iterate is the output), otherwise c -= 1. tau >= K gives
plain PGD. The attack engine (``advlab.attacks.pgd(early_stop=tau)``) does the stopping and returns
kappa (for GAIR-FAT) in the original batch order; this part chooses tau per epoch and logs the mean
number of gradient steps per example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...epochs import epoch_of
from ...errors import ConfigError
from ...options import option
from ..base import RecipeEnv, Step, View, register
from .pgd import PGDOptions, PGDPerturbation

# The official dynamic tau schedules as [start, tau] with start a fraction of the run; a 1-indexed epoch t
# of the official scripts counts from 0-indexed epoch t, so "tau=0 for t <= 50 of 120" becomes [50/120, 1].
OFFICIAL_TAU = {
    "fat": [[0.0, 0], [50 / 120, 1], [90 / 120, 2]],                 # FAT.py, 120 epochs
    "fat-trades": [[0.0, 0], [30 / 85, 1], [50 / 85, 2], [70 / 85, 3]],  # FAT_for_TRADES.py, 85 epochs
    "fat-mart": [[0.0, 0], [20 / 90, 1], [40 / 90, 2], [60 / 90, 3], [80 / 90, 4]],  # FAT_for_MART.py, 90
    "gair-fat": [[0.0, 0], [40 / 120, 3], [70 / 120, 6]],            # GAIR_FAT.py, 120 epochs
}


@dataclass
class FATOptions(PGDOptions):
    tau: int = option(0, low=0)  # tau of the whole run without a schedule, and before a schedule's first start
    tau_schedule: list[list[float]] | None = None  # [[start, tau], ...]; start: fraction of the run if < 1, else epoch
    dynamic_tau: Literal["none", "fat", "fat-trades", "fat-mart", "gair-fat"] = "none"  # an official schedule


@register("perturbation", "fat")
class FATPerturbation(PGDPerturbation):
    """PGD that stops each example tau steps after its first misclassified iterate (FAT, GAIR-FAT)."""

    Options = FATOptions

    def __init__(self, options: FATOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        o = options
        if o.tau_schedule is not None and o.dynamic_tau != "none":
            raise ConfigError("perturbation: give tau_schedule or dynamic_tau, not both")
        pairs = o.tau_schedule if o.tau_schedule is not None else OFFICIAL_TAU.get(o.dynamic_tau, [])
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or pair[0] < 0 or pair[1] < 0 or math.isnan(pair[1]) or pair[1] != int(pair[1]):
                raise ConfigError(f"perturbation.tau_schedule[{i}]: expected [start >= 0, integer tau >= 0], "
                                  f"got {pair}")
        self.schedule = sorted((epoch_of(start, env.epochs), int(tau)) for start, tau in pairs)
        self._reset()

    def tau(self, epoch: int | None = None) -> int:
        """tau in ``epoch`` (0-indexed; default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        value = self.options.tau
        for start, tau in self.schedule:
            if epoch >= start - 1e-9:
                value = tau
        return value

    def early_stop(self) -> int | None:
        return self.tau()

    def perturb(self, step: Step) -> dict[str, View]:
        """Early-stopped PGD; the ``adv`` view carries K (the steps given) beside each sample's steps taken."""
        views = super().perturb(step)
        taken = views["adv"].steps_taken.detach().sum()
        self._taken = taken if self._taken is None else self._taken + taken
        self._n += len(step.x)
        return views

    def _reset(self) -> None:
        self._taken: torch.Tensor | None = None
        self._n = 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset()

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's count of attack steps taken and of examples so far."""
        return {"taken": None if self._taken is None else self._taken.detach().clone(), "n": self._n}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self._taken = None if state["taken"] is None else state["taken"].clone()
            self._n = int(state["n"])

    def epoch_metrics(self) -> dict[str, Any]:
        """tau of the epoch and the mean number of attack gradient steps per training example."""
        mean = float(self._taken) / self._n if self._n else None
        return {"fat_tau": self.tau(), "fat_mean_steps": mean}
