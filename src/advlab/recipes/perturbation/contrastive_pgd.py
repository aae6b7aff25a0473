"""A label-free adversarial view: PGD on the contrastive loss itself (RoCL, Kim et al. 2020; ACL, Jiang et al. 2020).

The ``contrastive-pgd`` perturbation makes the two augmented views of ``augment`` (``view1``, ``view2``) and
``adv`` = view1 + delta, where delta, in the eps-ball of the run's threat model (``eps`` in pixel units, linf
or l2) around view1 and inside [0, 1], maximises the contrastive loss (``loss``, nt-xent by default) between
the projections of the adversarial view and of the other view:

    delta = argmax_{||delta|| <= eps}  sum_b loss(g(view1 + delta), stop_grad(g(view2)))_b

Every other image of the batch is a negative, so the attack pushes each adversarial view away from its own
positive and toward the other images' representations: RoCL's instance-wise attack (``RepresentationAdv``
with ``attack_to='other'``). No labels are read anywhere.

Defaults: 5 steps (ACL's ``--pgd_iter 5``; RoCL trains with 7), step size eps / 4 (ACL 2/255 at 8/255; RoCL
0.007 at 0.0314), a uniform random start (both), temperature 0.5 (both), batch norm in eval mode during the
attack (both call ``model.eval()``); the attack runs on :func:`advlab.attacks.pgd` with a callable loss, so
the parameters are frozen for its length and every flag restored, as for every attack of advlab. The random
start is drawn from the part's own generator (see :mod:`.augment`), after the two views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...attacks import model_mode, forward_logits, pgd
from ...options import option
from ..base import RecipeEnv, Step, View, register
from ..contrastive import check_loss_name, contrastive_loss
from .augment import AugmentOptions, AugmentPerturbation


@dataclass
class ContrastivePGDOptions(AugmentOptions):
    steps: int = option(5, low=1)
    step_size: float | None = option(None, low=0, low_open=True)  # pixel units; None = eps / 4
    random_start: Literal["uniform", "none"] = "uniform"
    loss: str = "nt-xent"  # advlab.recipes.contrastive.CONTRASTIVE_LOSSES
    temperature: float = option(0.5, low=0, low_open=True)
    model_mode: Literal["eval", "train"] = "eval"


@register("perturbation", "contrastive-pgd")
class ContrastivePGDPerturbation(AugmentPerturbation):
    """``view1``, ``view2`` (two augmentations) and ``adv``: view1 moved by PGD up the contrastive loss of
    (adv, view2) within eps; the ``adv`` view carries the steps K and the steps each sample took."""

    Options = ContrastivePGDOptions
    pairs_with = {"objective": "contrastive-adv"}
    views = {"view1": frozenset(), "view2": frozenset(), "adv": frozenset({"steps", "steps_taken"})}

    def __init__(self, options: ContrastivePGDOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        check_loss_name(options.loss, "perturbation.loss")
        self.loss_fn = contrastive_loss(options.loss)

    def step_size(self) -> float:
        o = self.options
        return o.step_size if o.step_size is not None else self.env.eps / 4

    def attack_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,) the attack maximises: the contrastive loss of the adversarial view's projection
        ``output`` (B, D) against the other view's ``target`` (B, D, detached)."""
        return self.loss_fn(output, target, self.options.temperature)

    def adversarial(self, model: torch.nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> View:
        """The ``adv`` view of (view1, view2) (B, C, H, W) against ``model`` (its projection)."""
        o = self.options
        with model_mode(model, o.model_mode), torch.no_grad():
            target = forward_logits(model, view2, "perturbation 'contrastive-pgd'").detach()
        result = pgd(model, view1, None, eps=self.env.eps, step_size=self.step_size(), steps=o.steps,
                     norm=self.env.norm, loss=self.attack_loss, target=target,
                     random_start=None if o.random_start == "none" else "uniform", model_mode=o.model_mode,
                     generator=self.generator, track_final=False)
        return View(x=result.x_adv, steps=o.steps, steps_taken=result.steps_taken)

    def perturb(self, step: Step) -> dict[str, View]:
        views = self.two_views(step.x.detach())
        views["adv"] = self.adversarial(step.local_model, views["view1"].x, views["view2"].x)
        return views
