"""The four parts of a training step and the context they share.

A step runs: labels -> perturbation -> objective (which asks the labels part for its loss target and
the weighting part for per-sample weights) -> optimizer. Each part may keep per-sample state keyed by
dataset index, react to epoch boundaries and validation results, and report metrics for the log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import PART_KINDS
from ..registry import Registry


@dataclass
class RecipeEnv:
    """Facts about the run that parts may need when they are built."""

    num_train: int  # size of the training split; per-sample state has this many rows
    num_classes: int
    epochs: int
    eps: float
    norm: str
    device: torch.device
    seed: int = 0
    first_decay_epoch: int | None = None  # 0-indexed epoch at which the learning rate first drops


@dataclass
class NoOptions:
    pass


class Part:
    """Base of every recipe part. Subclasses set ``Options`` (a dataclass) and register by name."""

    Options: ClassVar[type] = NoOptions
    kind: ClassVar[str] = ""

    def __init__(self, options: Any, env: RecipeEnv) -> None:
        self.options = options
        self.env = env
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch with its 0-indexed number."""
        self.epoch = epoch

    def on_validation(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's validation with its results (``val_clean``, ``val_robust``)."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Numbers this part wants in the epoch's log line; reset per epoch by the part itself."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Per-sample and schedule state to save in checkpoints (tensors, numbers, lists)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class Step:
    """Everything one training step knows, passed from part to part."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    epoch: int
    labels: "LabelsPart"
    weighting: "WeightingPart"
    attack_target: torch.Tensor | None = None
    x_adv: torch.Tensor | None = None
    attack: Any = None  # advlab.attacks.AttackResult or None
    facts: dict[str, Any] = field(default_factory=dict)
    _weights: Any = None

    def loss_target(self, logits: torch.Tensor, view: str) -> torch.Tensor:
        """The loss's target for ``logits`` of the ``view`` ("adv" or "clean")."""
        return self.labels.loss_target(self, logits, view)

    def weights(self) -> torch.Tensor | None:
        """Per-sample weights with mean 1, or None for uniform (computed once per step)."""
        if self._weights is None:
            self._weights = self.weighting.weights(self)
            if self._weights is None:
                self._weights = False
        return self._weights if self._weights is not False else None


class LabelsPart(Part):
    kind = "labels"

    def attack_target(self, step: Step) -> torch.Tensor:
        """Target of the attack: int64 labels or soft labels (B, C)."""
        return step.y

    def loss_target(self, step: Step, logits: torch.Tensor, view: str) -> torch.Tensor:
        """Target of the loss for these logits: int64 labels or soft labels (B, C)."""
        return step.y


class PerturbationPart(Part):
    kind = "perturbation"

    def perturb(self, step: Step) -> None:
        """Set ``step.x_adv`` (and ``step.attack`` with per-sample facts such as kappa)."""
        raise NotImplementedError


class WeightingPart(Part):
    kind = "weighting"
    term: str = "robust"  # which objective term the weights apply to: robust, natural or both

    def weights(self, step: Step) -> torch.Tensor | None:
        return None


class ObjectivePart(Part):
    kind = "objective"

    def loss(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """The scalar loss to minimise and the logits whose accuracy is the training accuracy."""
        raise NotImplementedError


REGISTRIES: dict[str, Registry] = {
    kind: Registry(f"{kind} part") for kind in PART_KINDS
}


def register(kind: str, name: str):
    """Class decorator: register a part under ``name`` in the ``kind`` registry."""

    def add(cls):
        cls.name = name
        REGISTRIES[kind].register(name, cls)
        return cls

    return add


def weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-sample loss, weighted when weights (mean 1 over the batch) are given."""
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights.to(per_sample.dtype)).mean()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy with int64 labels or soft labels (B, C)."""
    if target.dtype in (torch.int64, torch.int32):
        return nn.functional.cross_entropy(logits, target, reduction="none")
    return -(target * logits.float().log_softmax(1)).sum(1)
