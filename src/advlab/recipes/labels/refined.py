"""The shared frame of label parts that refine hard labels into per-sample soft ones (SGLR, self-adaptive).

Before a start epoch the loss target is the hard label. From it on, each step moves its samples' rows of a
``SoftLabelBank`` toward a prediction chosen by the subclass (``prediction``), once per step, and the loss
uses the updated rows. The attack always aims at the hard labels.
"""
from __future__ import annotations

from typing import Any

import torch

from ..base import LabelsPart, RecipeEnv, Step
from .soft_label_bank import SoftLabelBank, resolve_start_epoch

class RefinedLabelsPart(LabelsPart):
    """Soft labels kept as an EMA (``options.momentum``) of predictions, from ``options.start_epoch`` on."""

    def __init__(self, options: Any, env: RecipeEnv) -> None:
        super().__init__(options, env)
        self.start = resolve_start_epoch(options.start_epoch, env)
        self.bank = SoftLabelBank(env.num_train, env.num_classes, env.device)

    soft_targets = True

    def prediction(self, step: Step, logits: torch.Tensor, view: str) -> torch.Tensor:
        """The (B, C) distribution the rows of this step move toward."""
        raise NotImplementedError

    def active(self, epoch: int) -> bool:
        """Whether soft labels are used in ``epoch`` (0-indexed)."""
        return epoch >= self.start

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.bank.start_epoch()

    def attack_target(self, step: Step) -> torch.Tensor:
        """The hard labels."""
        return step.y

    def loss_targets(self, step: Step, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Hard labels before the start epoch; after it, the bank rows updated with this step's prediction
        on the first of ``views`` (one update per step), the same rows for every view."""
        self.bank.record(step.index, step.y)
        if not self.active(step.epoch):
            return {view: step.y for view in views}
        view = views[0]
        q = self.prediction(step, step.outputs[view], view)
        rows = self.bank.update(step.index, q, self.options.momentum)
        return {v: rows for v in views}

    def epoch_metrics(self) -> dict[str, Any]:
        """Soft-label drift over the rows updated this epoch (see ``SoftLabelBank.diagnostics``)."""
        return self.bank.diagnostics()

    def per_sample_state(self) -> dict[str, torch.Tensor]:
        """The bank's rows, given labels and touched flags: a step changes only its own rows of each."""
        return {"targets": self.bank.targets, "given": self.bank.given, "touched": self.bank.touched}

    def state_dict(self) -> dict[str, Any]:
        return {"bank": self.bank.state_dict(), "start_epoch": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.bank.load_state_dict(state["bank"])

    def epoch_state(self) -> dict[str, Any]:
        """Which rows of the bank this epoch updated so far (the epoch's diagnostics)."""
        return {"touched": self.bank.touched.detach().to("cpu", copy=True)}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self.bank.touched.copy_(state["touched"].to(self.bank.touched.device))
