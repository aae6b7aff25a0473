"""N-FGSM (de Jorge et al. 2022, "Make Some Noise: Reliable and Efficient Single-Step Adversarial Training"):
one signed-gradient step of eps from a point drawn with strong noise (2 eps), not projected back to the eps
ball, through the one attack engine (``advlab.attacks.pgd``: ``start_eps`` for the noise, ``eps=inf`` for no
projection). Official code: github.com/pdejorge/N-FGSM ``train.py`` (lines 216-235)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ...attacks import pgd
from ...options import option
from ..base import PerturbationPart, Step, View, register
from .pgd import ATTACK_FACTS

NOISE_TIMES_EPS = 2.0  # the paper's k: noise uniform in [-2 eps, 2 eps] (official --unif 2)
STEP_TIMES_EPS = 1.0  # the paper's alpha = eps (official --alpha equal to --epsilon)


@dataclass
class NFGSMOptions:
    noise: float | None = option(None, low=0)  # pixel units: the noise's radius; None = 2 * eps (the paper's k = 2)
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = eps (the paper's alpha)
    projection: float | None = option(None, low=0, low_open=True)  # pixel units: radius the perturbation is
    # projected onto after the step (official --clip); None = no projection (the paper's N-FGSM)
    model_mode: Literal["eval", "train"] = "train"  # the official attack runs the model in train mode


@register("perturbation", "n-fgsm")
class NFGSMPerturbation(PerturbationPart):
    """``adv`` = clamp_[0,1](x + eta + step_size * sign(grad_x CE(f(x + eta), y))), with x + eta in [0, 1] and
    eta uniform in [-noise, noise]^d (L-inf; in the L2 ball of radius noise for ``norm: l2``); the perturbation
    may reach noise + step_size (3 eps by default): no projection unless ``projection`` is given. The ``adv``
    view carries kappa (whether x + eta was classified correctly), steps 1 and steps_taken."""

    Options = NFGSMOptions
    views = {"adv": ATTACK_FACTS}

    def noise(self) -> float:
        """Radius of the noise in pixel units."""
        o = self.options
        return o.noise if o.noise is not None else NOISE_TIMES_EPS * self.env.eps

    def step_size(self) -> float:
        """The signed step in pixel units."""
        o = self.options
        return o.step_size if o.step_size is not None else STEP_TIMES_EPS * self.env.eps

    def projection(self) -> float:
        """Radius of the ball the perturbation is projected onto (pixel units); math.inf: none."""
        o = self.options
        return o.projection if o.projection is not None else math.inf

    def perturb(self, step: Step) -> dict[str, View]:
        noise = self.noise()
        result = pgd(
            step.local_model, step.x, step.y, eps=self.projection(), step_size=self.step_size(), steps=1,
            norm=self.env.norm, target=step.attack_target, random_start="uniform" if noise > 0 else None,
            start_eps=noise, model_mode=self.options.model_mode, track_final=False,
        )
        return {"adv": View(x=result.x_adv, kappa=result.kappa, steps=1, steps_taken=result.steps_taken)}
