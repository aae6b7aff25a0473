"""TRADES (Zhang et al. 2019): natural cross-entropy plus beta times KL(p(x) || p(x_adv))."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...options import option
from ..base import ObjectivePart, Step, TermSpec, register, soft_cross_entropy


@dataclass
class TradesOptions:
    beta: float = option(6.0, low=0)  # weight of the boundary term


def kl_per_sample(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) per sample, (B,); gradients flow through both, as in the official code.
    Computed in float32 (float64 logits: in float64)."""
    dtype = torch.promote_types(torch.promote_types(logits_clean.dtype, logits_adv.dtype), torch.float32)
    log_p = logits_clean.to(dtype).log_softmax(1)
    log_q = logits_adv.to(dtype).log_softmax(1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


@register("objective", "trades")
class Trades(ObjectivePart):
    """``natural`` CE(f(x), target) + beta * ``boundary`` KL(p(x) || p(x_adv)) (yaodongyu/TRADES trades.py)."""

    Options = TradesOptions
    forward_views = ("clean", "adv")
    target_views = ("clean",)
    term_specs = (TermSpec("natural", ("clean",), supervised=True),
                  TermSpec("boundary", ("clean", "adv"), supervised=False))

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        clean, adv = step.outputs["clean"], step.outputs["adv"]
        return {"natural": soft_cross_entropy(clean, step.loss_targets["clean"]),
                "boundary": kl_per_sample(clean, adv)}

    def coefficients(self) -> dict[str, float]:
        return {"natural": 1.0, "boundary": self.options.beta}
