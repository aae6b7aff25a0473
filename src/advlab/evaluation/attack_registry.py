"""The registry of evaluation attacks: the same names in the Python API, the CLI, configs and the JSON.

Each name maps to an :class:`AttackEntry`: a factory ``factory(setup: AttackSetup) -> EvalAttack`` and what
the attack is (``white_box``: it follows the model's gradients, so Square's black-box gap is measured
against it; ``needs_knn``: it attacks a :class:`advlab.models.KNNClassifier` only). Every list of attacks of
a kind (:func:`white_box_attacks`, :func:`knn_attacks`) is read from here. Register your own with
:func:`register_attack`. An EvalAttack attacks one batch (``attack(x, y) -> x_adv``) and describes its
settings (``attack.settings() -> dict``, JSON-ready).

The contract every EvalAttack keeps (tests/test_attack_contracts.py checks each registered name): x is not
modified; x_adv is in the eps-ball around x and in [0, 1]; integer labels of any dtype are accepted; a batch
is attacked like its samples one by one; every submodule's train/eval flag, the parameters and buffers and
the global torch RNG are as before; the same setup gives the same x_adv; it works under ``torch.no_grad()``
and ``torch.inference_mode()``; a model that does not return logits (B, C) is an AdvlabError.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..registry import Registry


@dataclass
class AttackSetup:
    """What a factory needs to build an attack for one evaluation."""

    model: nn.Module
    eps: float
    norm: str
    device: torch.device
    seed: int
    num_classes: int
    autoattack_version: str = "standard"
    square_queries: int = 1000
    outputs: int | None = None  # width of the model's logits (AutoAttack counts classes by it); None: num_classes
    progress: bool = False  # an attack may show its progress inside a batch on stderr (AutoAttack: its sub-attacks)


class EvalAttack(Protocol):
    """An attack of one batch. It may also offer ``cost() -> {part: (forwards, backwards)}``: the model passes
    per point at most (no point fooled early), read by ``advlab.evaluation.estimate`` for the time it takes."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AttackEntry:
    """One registered evaluation attack: ``factory(setup)`` builds it; ``white_box``: it follows the model's
    gradients; ``needs_knn``: it attacks a kNN classifier only (``evaluation.classifier: knn``)."""

    factory: Callable[[AttackSetup], EvalAttack]
    white_box: bool = False
    needs_knn: bool = False

    def __call__(self, setup: AttackSetup) -> EvalAttack:
        return self.factory(setup)


EVAL_ATTACKS: Registry[AttackEntry] = Registry("attack")


def register_attack(name: str, factory: Callable[[AttackSetup], EvalAttack], *, white_box: bool,
                    needs_knn: bool = False, overwrite: bool = False) -> AttackEntry:
    """Register ``factory`` as the evaluation attack ``name``; say whether it is white-box (gradient-based) and
    whether it needs a kNN classifier. Returns the entry."""
    entry = AttackEntry(factory, white_box=white_box, needs_knn=needs_knn)
    EVAL_ATTACKS.register(name, entry, overwrite=overwrite)
    return entry


def _entry(name: str) -> AttackEntry:
    item = EVAL_ATTACKS.get(name)
    return item if isinstance(item, AttackEntry) else AttackEntry(item)  # a bare factory registered by a user


def white_box_attacks() -> list[str]:
    """The registered attacks that follow the model's gradients (Square's black-box gap is measured against
    them)."""
    return [name for name in EVAL_ATTACKS.names() if _entry(name).white_box]


def knn_attacks() -> list[str]:
    """The registered attacks that attack a kNN classifier only."""
    return [name for name in EVAL_ATTACKS.names() if _entry(name).needs_knn]


def eval_attack_names() -> list[str]:
    """Every attack name ``evaluate`` accepts (``clean`` included)."""
    return ["clean", *EVAL_ATTACKS.names()]
