"""PGD and FGSM perturbations toward higher loss, from the one attack engine in ``advlab.attacks``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...attacks import pgd
from ...options import option
from ..base import PerturbationPart, Step, View, register

ATTACK_FACTS = frozenset({"kappa", "steps", "steps_taken"})


@dataclass
class PGDOptions:
    steps: int = option(10, low=1)
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = 2.5 * eps / steps (Madry)
    random_start: Literal["uniform", "normal", "none"] = "uniform"
    loss: Literal["ce", "kl", "cw"] = "ce"  # kl is TRADES' label-free attack
    model_mode: Literal["eval", "train"] = "eval"


@register("perturbation", "pgd")
class PGDPerturbation(PerturbationPart):
    """K-step projected gradient ascent from a random start (PGD-AT, TRADES, MART); the ``adv`` view carries
    kappa (GAIRAT), the steps K and the steps each sample took."""

    Options = PGDOptions
    views = {"adv": ATTACK_FACTS}

    def step_size(self) -> float:
        o = self.options
        return o.step_size if o.step_size is not None else 2.5 * self.env.eps / o.steps

    def early_stop(self) -> int | None:
        return None

    def perturb(self, step: Step) -> dict[str, View]:
        o = self.options
        target = step.attack_target
        kappa_labels = target if target is not None and target.dtype == torch.int64 else step.y
        result = pgd(
            step.local_model, step.x, kappa_labels,
            eps=self.env.eps, step_size=self.step_size(), steps=o.steps, norm=self.env.norm,
            loss=o.loss, target=None if o.loss == "kl" else target,
            random_start=None if o.random_start == "none" else o.random_start,
            early_stop=self.early_stop(), model_mode=o.model_mode, track_final=False,
        )
        return {"adv": View(x=result.x_adv, kappa=result.kappa, steps=o.steps, steps_taken=result.steps_taken)}


@dataclass
class FGSMOptions:
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = 1.25 * eps (Wong et al. 2020)
    random_start: Literal["uniform", "none"] = "uniform"
    model_mode: Literal["eval", "train"] = "train"


@register("perturbation", "fgsm")
class FGSMPerturbation(PerturbationPart):
    """One signed-gradient step from a uniform random start: fast adversarial training (Wong et al. 2020)."""

    Options = FGSMOptions
    views = {"adv": ATTACK_FACTS}

    def step_size(self) -> float:
        o = self.options
        return o.step_size if o.step_size is not None else 1.25 * self.env.eps

    def perturb(self, step: Step) -> dict[str, View]:
        o = self.options
        result = pgd(
            step.local_model, step.x, step.y, eps=self.env.eps, step_size=self.step_size(), steps=1,
            norm=self.env.norm, target=step.attack_target,
            random_start=None if o.random_start == "none" else o.random_start, model_mode=o.model_mode,
            track_final=False,
        )
        return {"adv": View(x=result.x_adv, kappa=result.kappa, steps=1, steps_taken=result.steps_taken)}
