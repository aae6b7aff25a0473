"""Self-adaptive training's confidence weights: w_i = max_k t_ik, rescaled to mean 1 over the batch.

The targets t are this step's soft loss targets (``step.loss_targets``), given by a labels part with soft
targets (``self-adaptive``, as LayneH/self-adaptive-training; ``sglr`` works too) after this step's update.
By default (``term: auto``) the weights apply to the supervised terms: the whole loss of CE, TRADES' clean
cross-entropy (LayneH's ``TRADES_SAT``), MART's boosted CE. While the targets are still hard labels
(before the labels part's start epoch) the weights are uniform.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import Step, TermSpec, WeightingPart, register


@dataclass
class SelfAdaptiveWeightingOptions:
    term: str = "auto"  # the objective's term the weights multiply: auto (the supervised terms), all, or a name


@register("weighting", "self-adaptive")
class SelfAdaptiveWeighting(WeightingPart):
    """Per-sample weights max(t), normalised over the batch (sum = batch size)."""

    Options = SelfAdaptiveWeightingOptions
    pairs_with = {"labels": "self-adaptive"}  # the soft targets whose confidence it reads
    needs_soft_targets = True

    def default_terms(self, specs: tuple[TermSpec, ...]) -> list[str]:
        return [s.name for s in specs if s.supervised]

    def weights(self, step: Step) -> torch.Tensor | None:
        targets = next(iter(step.loss_targets.values()), None)
        if targets is None or not targets.is_floating_point():
            return None
        w = targets.max(1).values
        # under torchrun: normalised over the global batch (sum and size gathered from every rank)
        collective = self.env.collective
        if collective.distributed:
            total = collective.all_reduce_sum(torch.stack([w.sum(), w.new_tensor(float(len(w)))]))
            return w * (total[1] / total[0])
        return w * (len(w) / w.sum())
