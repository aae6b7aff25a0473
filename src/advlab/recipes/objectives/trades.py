"""TRADES (Zhang et al. 2019): natural cross-entropy plus beta times KL(p(x) || p(x_adv))."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import ObjectivePart, Step, register, soft_cross_entropy, weighted_mean


@dataclass
class TradesOptions:
    beta: float = 6.0


def kl_per_sample(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) per sample; gradients flow through both, as in the official code."""
    log_p = logits_clean.float().log_softmax(1)
    log_q = logits_adv.float().log_softmax(1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


@register("objective", "trades")
class Trades(ObjectivePart):
    """CE(f(x), target) + beta * KL(p(x) || p(x_adv)); weights go to the term the weighting names."""

    Options = TradesOptions

    def loss(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        logits_clean = step.model(step.x)
        logits_adv = step.model(step.x_adv)
        step.facts["logits_adv"] = logits_adv  # lets a labels part refine from the adversarial view for free
        natural = soft_cross_entropy(logits_clean, step.loss_target(logits_clean, "clean"))
        robust = kl_per_sample(logits_clean, logits_adv)
        w = step.weights()
        term = step.weighting.term
        loss = weighted_mean(natural, w if term in ("natural", "both") else None) + self.options.beta * (
            weighted_mean(robust, w if term in ("robust", "both") else None)
        )
        return loss, logits_adv
