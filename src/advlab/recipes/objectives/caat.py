"""CAAT's objective (xiaolingzhou98/CAAT utils.py): TRADES' natural and boundary terms plus the
cross-entropy of the anti-adversarial view,

    L = sum_i a_i w0[y_i] l_nat,i / sum w0 + beta * sum_i a_i w1[y_i] l_bdy,i / sum w1 + mean_i b_i l_anti,i

with beta 1.5. The weights (a_i, b_i from the meta-net, w0, w1 FRL's class weights) are the ``caat``
weighting part's; with uniform weights it is natural + beta boundary + anti.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...options import option
from ..base import ObjectivePart, Step, TermSpec, register, soft_cross_entropy
from .trades import kl_per_sample


@dataclass
class CAATObjectiveOptions:
    beta: float = option(1.5, low=0)  # weight of the boundary term (the code's --beta)


@register("objective", "caat")
class CAATObjective(ObjectivePart):
    """``natural`` CE(f(x)) + beta ``boundary`` KL(p(x) || p(x_adv)) + ``anti`` CE(f(x_anti))."""

    Options = CAATObjectiveOptions
    pairs_with = {"perturbation": "caat"}  # the adversarial and anti-adversarial views
    forward_views = ("clean", "adv", "anti")
    target_views = ("clean", "anti")
    term_specs = (TermSpec("natural", ("clean",), supervised=True),
                  TermSpec("boundary", ("clean", "adv"), supervised=False),
                  TermSpec("anti", ("anti",), supervised=True))

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        clean = step.outputs["clean"]
        return {"natural": soft_cross_entropy(clean, step.loss_targets["clean"]),
                "boundary": kl_per_sample(clean, step.outputs["adv"]),
                "anti": soft_cross_entropy(step.outputs["anti"], step.loss_targets["anti"])}

    def coefficients(self) -> dict[str, float]:
        return {"natural": 1.0, "boundary": self.options.beta, "anti": 1.0}
