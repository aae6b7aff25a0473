"""Self-adaptive training (Huang, Zhang, Zhang, NeurIPS 2020; code LayneH/self-adaptive-training).

From a start epoch on, each sample's target moves by an exponential moving average of the model's
prediction on the view the loss uses: ``t_i <- 0.9 t_i + 0.1 softmax(z_i)``, where z is the adversarial
logits for the CE (PGD-AT) form and the clean logits for the TRADES form (LayneH's ``TRADES_SAT``,
whose natural term is the one replaced). The target is updated before the loss of the same step, which
uses the updated row. The confidence weights ``max_k t_ik`` are the ``self-adaptive`` weighting part.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..base import LabelsPart, RecipeEnv, Step, register
from .sglr import CACHE_KEY, check_share
from .soft_label_bank import SoftLabelBank, resolve_start_epoch


@dataclass
class SelfAdaptiveOptions:
    momentum: float = 0.9  # EMA momentum alpha of the targets
    start_epoch: float | None = None  # None: one epoch before the first LR decay; <1: fraction; >=1: epoch


@register("labels", "self-adaptive")
class SelfAdaptiveLabels(LabelsPart):
    """Per-sample targets: EMA of the prediction on the loss's own view, from the start epoch."""

    Options = SelfAdaptiveOptions

    def __init__(self, options: SelfAdaptiveOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        check_share("momentum", options.momentum)
        self.start = resolve_start_epoch(options.start_epoch, env)
        self.bank = SoftLabelBank(env.num_train, env.num_classes, env.device)

    def active(self, epoch: int) -> bool:
        """Whether soft targets (and confidence weights) are used in ``epoch`` (0-indexed)."""
        return epoch >= self.start

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.bank.start_epoch()

    def attack_target(self, step: Step) -> torch.Tensor:
        """The hard labels."""
        return step.y

    def loss_target(self, step: Step, logits: torch.Tensor, view: str) -> torch.Tensor:
        """Hard labels before the start epoch; after it, the target row updated with ``softmax(logits)``.

        The targets are updated once per step: a second call in the same step returns the same rows.
        """
        self.bank.record(step.index, step.y)
        if not self.active(step.epoch):
            return step.y
        if CACHE_KEY not in step.facts:
            p = logits.detach().float().softmax(1)
            step.facts[CACHE_KEY] = self.bank.update(step.index, p, self.options.momentum)
        return step.facts[CACHE_KEY]

    def step_targets(self, step: Step) -> torch.Tensor | None:
        """The rows this step's loss used (None before the start epoch or before ``loss_target``)."""
        return step.facts.get(CACHE_KEY)

    def epoch_metrics(self) -> dict[str, Any]:
        """Target drift over the rows updated this epoch (see ``SoftLabelBank.diagnostics``)."""
        return self.bank.diagnostics()

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank.state_dict(), "start_epoch": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.bank.load_state_dict(state["bank"])
