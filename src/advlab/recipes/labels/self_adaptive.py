"""Self-adaptive training (Huang, Zhang, Zhang, NeurIPS 2020; code LayneH/self-adaptive-training).

From a start epoch on, each sample's target moves by an exponential moving average of the model's
prediction on the view the loss uses: ``t_i <- 0.9 t_i + 0.1 softmax(z_i)``, where z is the adversarial
logits for the CE (PGD-AT) form and the clean logits for the TRADES form (LayneH's ``TRADES_SAT``,
whose natural term is the one replaced). The target is updated before the loss of the same step, which
uses the updated row. The confidence weights ``max_k t_ik`` are the ``self-adaptive`` weighting part.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...options import option
from ..base import Step, register
from .refined import RefinedLabelsPart


@dataclass
class SelfAdaptiveOptions:
    momentum: float = option(0.9, low=0, high=1)  # EMA momentum alpha of the targets
    start_epoch: float | None = None  # None: one epoch before the first LR decay; <1: fraction; >=1: epoch


@register("labels", "self-adaptive")
class SelfAdaptiveLabels(RefinedLabelsPart):
    """Per-sample targets: EMA of the prediction on the loss's own view, from the start epoch."""

    Options = SelfAdaptiveOptions

    def prediction(self, step: Step, logits: torch.Tensor, view: str) -> torch.Tensor:
        """``softmax(logits)`` of the view the loss uses."""
        return logits.detach().float().softmax(1)
