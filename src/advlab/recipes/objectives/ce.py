"""Cross-entropy on the perturbed batch (PGD-AT, fast AT, standard training)."""
from __future__ import annotations

import torch

from ..base import ObjectivePart, Step, TermSpec, register, soft_cross_entropy


@register("objective", "ce")
class CrossEntropy(ObjectivePart):
    """One term, ``adversarial``: cross-entropy of the model on the ``adv`` view against the loss target."""

    forward_views = ("adv",)
    target_views = ("adv",)
    term_specs = (TermSpec("adversarial", ("adv",), supervised=True),)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        return {"adversarial": soft_cross_entropy(step.outputs["adv"], step.loss_targets["adv"])}
