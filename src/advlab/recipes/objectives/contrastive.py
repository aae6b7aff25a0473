"""Self-supervised contrastive objectives: SimCLR (``contrastive``) and its label-free adversarial form
(``contrastive-adv``, RoCL / ACL style). No term reads a label (``target_views`` is empty).

Terms, per sample (B,), with g the model (encoder + projection head) and L the contrastive loss ``loss``
(:data:`advlab.recipes.contrastive.CONTRASTIVE_LOSSES`, nt-xent by default) at ``temperature``:

- ``contrastive``: L(g(view1), g(view2)), the two augmented views as the positive pair, the other images of
  the batch as negatives (SimCLR);
- ``adversarial`` (contrastive-adv only): L(g(adv), g(view2)), the pair the ``contrastive-pgd`` attack
  maximised, times ``adv_weight``.

All views are forwarded in ONE call of the model, concatenated (RoCL forwards ``cat(view1, view2, adv)``), so
batch norm normalises them with shared statistics. The training accuracy in the log is the contrastive top-1
of the clean pair (:func:`advlab.recipes.contrastive.contrastive_top1`): z2[i] the nearest of the other 2B - 1
representations to z1[i].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...attacks import forward_logits
from ...options import option
from ..base import ObjectivePart, RecipeEnv, Step, TermSpec, register
from ..contrastive import check_loss_name, contrastive_loss, contrastive_top1


@dataclass
class ContrastiveOptions:
    loss: str = "nt-xent"  # advlab.recipes.contrastive.CONTRASTIVE_LOSSES
    temperature: float = option(0.5, low=0, low_open=True)  # SimCLR's CIFAR-10 value; RoCL and ACL use 0.5 too


@register("objective", "contrastive")
class Contrastive(ObjectivePart):
    """One term, ``contrastive``: the contrastive loss of the two augmented views (SimCLR)."""

    Options = ContrastiveOptions
    pairs_with = {"perturbation": "augment"}  # the views view1, view2
    forward_views = ("view1", "view2")
    target_views = ()
    term_specs = (TermSpec("contrastive", ("view1", "view2"), supervised=False),)
    accuracy_view = "view1"
    label_free = True
    representation = True
    distributed = False  # the negatives would be this process's shard only: no all-gather of the projections yet

    def __init__(self, options: Any, env: RecipeEnv) -> None:
        super().__init__(options, env)
        check_loss_name(options.loss, "objective.loss")
        self.loss_fn = contrastive_loss(options.loss)
        self._reset()

    def forward(self, step: Step) -> dict[str, torch.Tensor]:
        """Projections (B, D) of ``forward_views``, from one forward of their concatenation."""
        xs = [step.views[name].x for name in self.forward_views]
        out = forward_logits(step.model, torch.cat(xs), f"objective {self.name!r}")
        return dict(zip(self.forward_views, out.split([len(x) for x in xs])))

    def pair_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(z1, z2, self.options.temperature)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        terms = {"contrastive": self.pair_loss(step.outputs["view1"], step.outputs["view2"])}
        self._record("loss", terms["contrastive"])
        return terms

    def correct(self, step: Step) -> torch.Tensor:
        """(B,) bool: the contrastive top-1 of the clean pair (z2[i] nearest to z1[i] of the other 2B - 1)."""
        return contrastive_top1(step.outputs["view1"].detach(), step.outputs["view2"].detach())

    # -- diagnostics: epoch means of the terms (this process's samples) ---------------------------------
    def _reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._n = 0

    def _record(self, name: str, values: torch.Tensor) -> None:
        total = values.detach().float().sum()
        self._sums[name] = self._sums[name] + total if name in self._sums else total
        if name == "loss":
            self._n += len(values)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset()

    def epoch_state(self) -> dict[str, Any]:
        """The epoch's sums of the recorded quantities and their count so far."""
        return {"sums": {k: v.detach().clone() for k, v in self._sums.items()}, "n": self._n}

    def load_epoch_state(self, epoch: int, state: dict[str, Any]) -> None:
        super().load_epoch_state(epoch, state)
        if state:
            self._sums = {k: v.clone() for k, v in state["sums"].items()}
            self._n = int(state["n"])

    def metric_names(self) -> tuple[str, ...]:
        return ("loss",)

    def epoch_metrics(self) -> dict[str, Any]:
        """``contrastive_<name>``: the epoch's mean of each recorded quantity (None before any step)."""
        return {f"contrastive_{name}": (self._sums[name].item() / self._n if self._n and name in self._sums else None)
                for name in self.metric_names()}


@dataclass
class ContrastiveAdvOptions(ContrastiveOptions):
    adv_weight: float = option(1.0, low=0)  # coefficient of the adversarial term


@register("objective", "contrastive-adv")
class ContrastiveAdv(Contrastive):
    """``contrastive`` (view1, view2) + adv_weight * ``adversarial`` (adv, view2): SimCLR with the pair the
    label-free attack maximised (``contrastive-pgd``) as a second positive pair."""

    Options = ContrastiveAdvOptions
    pairs_with = {"perturbation": "contrastive-pgd"}  # view1, view2 and adv
    forward_views = ("view1", "view2", "adv")
    term_specs = (TermSpec("contrastive", ("view1", "view2"), supervised=False),
                  TermSpec("adversarial", ("adv", "view2"), supervised=False))

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        terms = super().terms(step)
        z_adv, z2 = step.outputs["adv"], step.outputs["view2"]
        terms["adversarial"] = self.pair_loss(z_adv, z2)
        self._record("adv_loss", terms["adversarial"])
        self._record("adv_top1", contrastive_top1(z_adv.detach(), z2.detach()))
        return terms

    def coefficients(self) -> dict[str, float]:
        return {"contrastive": 1.0, "adversarial": self.options.adv_weight}

    def metric_names(self) -> tuple[str, ...]:
        return ("loss", "adv_loss", "adv_top1")
