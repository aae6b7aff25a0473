"""MART (Wang et al. 2020): boosted CE on x_adv plus a KL term weighted by 1 - p_y(x)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...options import option
from ..base import ObjectivePart, Step, TermSpec, register


@dataclass
class MartOptions:
    beta: float = option(6.0, low=0)  # weight of the boundary term


@register("objective", "mart")
class Mart(ObjectivePart):
    """``adversarial`` BCE(p(x_adv), y) + beta * ``boundary`` KL(p(x) || p(x_adv)) * (1 - p_y(x)), per sample
    (YisenWang/MART mart.py). Soft loss targets are reduced to their top class (the boosted CE needs one)."""

    Options = MartOptions
    forward_views = ("clean", "adv")
    target_views = ("adv",)
    term_specs = (TermSpec("adversarial", ("adv",), supervised=True),
                  TermSpec("boundary", ("clean", "adv"), supervised=False))

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        logits_clean, logits_adv = step.outputs["clean"], step.outputs["adv"]
        target = step.loss_targets["adv"]
        if target.is_floating_point():
            target = target.argmax(1)
        target = target.long()
        p_adv = logits_adv.float().softmax(1)
        p_clean = logits_clean.float().softmax(1)
        wrong = p_adv.scatter(1, target[:, None], -1.0).argmax(1)  # the most likely wrong class on x_adv
        bce = torch.nn.functional.cross_entropy(logits_adv.float(), target, reduction="none") - torch.log(
            1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12)
        kl = (p_clean * (torch.log(p_clean + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
        true_prob = p_clean.gather(1, target[:, None]).squeeze(1)
        return {"adversarial": bce, "boundary": kl * (1.0000001 - true_prob)}

    def coefficients(self) -> dict[str, float]:
        return {"adversarial": 1.0, "boundary": self.options.beta}
