"""Self-adaptive training's confidence weights: w_i = max_k t_ik, rescaled to mean 1 over the batch.

The targets t are those of the ``self-adaptive`` labels part (reached through ``step.labels``), after
this step's update. The weights apply to the natural term: the whole loss of CE/MART, TRADES' clean
cross-entropy (LayneH's ``TRADES_SAT``). Before the start epoch the weights are uniform.
"""
from __future__ import annotations

import torch

from ...errors import AdvlabError
from ..base import Step, WeightingPart, register
from ..labels.self_adaptive import SelfAdaptiveLabels


@register("weighting", "self-adaptive")
class SelfAdaptiveWeighting(WeightingPart):
    """Per-sample weights max(t), normalised over the batch (sum = batch size)."""

    term = "natural"

    def weights(self, step: Step) -> torch.Tensor | None:
        labels = step.labels
        if not isinstance(labels, SelfAdaptiveLabels):
            raise AdvlabError(
                f"weighting 'self-adaptive' reads the targets of labels 'self-adaptive', but labels is "
                f"{getattr(labels, 'name', type(labels).__name__)!r}; set labels.name=self-adaptive")
        if not labels.active(step.epoch):
            return None
        targets = labels.step_targets(step)
        if targets is None:
            raise AdvlabError("weighting 'self-adaptive' needs this step's targets: the objective must call "
                              "step.loss_target(...) before step.weights()")
        w = targets.max(1).values
        return w * (len(w) / w.sum())
