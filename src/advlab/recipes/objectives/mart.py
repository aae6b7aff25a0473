"""MART (Wang et al. 2020): boosted CE on x_adv plus a KL term weighted by 1 - p_y(x)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import ObjectivePart, Step, register, weighted_mean


@dataclass
class MartOptions:
    beta: float = 6.0


@register("objective", "mart")
class Mart(ObjectivePart):
    """BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x)), per sample (weights apply to all)."""

    Options = MartOptions

    def loss(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        logits_clean = step.model(step.x)
        logits_adv = step.model(step.x_adv)
        target = step.loss_target(logits_adv, "adv")
        if target.dtype != torch.int64:
            target = target.argmax(1)  # MART's boosted CE needs a class; soft targets give their top class
        p_adv = logits_adv.float().softmax(1)
        p_clean = logits_clean.float().softmax(1)
        # the most likely wrong class on x_adv
        masked = p_adv.scatter(1, target[:, None], -1.0)
        wrong = masked.argmax(1)
        bce = torch.nn.functional.cross_entropy(logits_adv.float(), target, reduction="none") - torch.log(
            1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12
        )
        kl = (p_clean * (torch.log(p_clean + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
        true_prob = p_clean.gather(1, target[:, None]).squeeze(1)
        per_sample = bce + self.options.beta * kl * (1.0000001 - true_prob)
        return weighted_mean(per_sample, step.weights()), logits_adv
