"""Cross-entropy on the perturbed batch (PGD-AT, fast AT, standard training)."""
from __future__ import annotations

import torch

from ..base import ObjectivePart, Step, register, soft_cross_entropy, weighted_mean


@register("objective", "ce")
class CrossEntropy(ObjectivePart):
    """Mean (or weighted) cross-entropy of the model on ``x_adv`` against the loss target."""

    def loss(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        logits = step.model(step.x_adv)
        per_sample = soft_cross_entropy(logits, step.loss_target(logits, "adv"))
        return weighted_mean(per_sample, step.weights()), logits
