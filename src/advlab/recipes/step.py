"""The training step as two plain functions, usable without the trainer (like torchvision's
``train_one_epoch``): :func:`compute_loss` runs the one-way pipeline of a recipe on a batch, and
:func:`train_step` adds the backward pass and the optimiser step.

>>> step = train_step(model, x, y, index, epoch=0, recipe=recipe, optimizer=opt)   # doctest: +SKIP
>>> step.loss, step.outputs["adv"], step.views["adv"].kappa, step.weights          # doctest: +SKIP
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .base import Step, View, combine
from .recipe import Recipe

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Training precisions: the autocast dtype of each (None: no autocast)."""

ATTACK_PRECISIONS = ("same", *PRECISIONS)
"""Precisions of the attack inside a training step: ``same`` as the step's, or one of :data:`PRECISIONS`."""


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a null context for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def attack_autocast(attack_precision: str, device: torch.device):
    """The context the perturbation part runs in: ``same`` keeps the caller's autocast, ``fp32`` turns
    autocast off (the attack in full precision inside a bf16/fp16 step), ``bf16``/``fp16`` their autocast.
    KeyError for other names (configs are checked against :data:`ATTACK_PRECISIONS` first)."""
    if attack_precision == "same":
        return contextlib.nullcontext()
    if PRECISIONS[attack_precision] is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return autocast(attack_precision, device)


def local_module(model: nn.Module) -> nn.Module:
    """``model`` without a DistributedDataParallel wrapper (the module it wraps), else ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def compute_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int,
                 recipe: Recipe, *, attack_precision: str = "same") -> Step:
    """Run the recipe's one-way pipeline on one batch; the returned Step holds every stage's output.

    ``x``: (B, ...) float pixels in [0, 1]; ``y``: (B,) int64 labels; ``index``: (B,) int64 dataset indices
    (rows of per-sample state); ``epoch``: 0-indexed. The model is used as it is (call ``model.train()``
    first to train); ``step.loss`` is the scalar to minimise, with its graph. ``attack_precision``: the
    perturbation part runs under :func:`attack_autocast` of it (``same``: the caller's precision). A
    DistributedDataParallel ``model`` trains through its wrapper; the attack and no-grad predictions use the
    wrapped module (``step.local_model``), so they stay on this process.
    """
    step = Step(model=model, x=x, y=y, index=index, epoch=epoch, local_model=local_module(model))
    step.attack_target = recipe.labels.attack_target(step)
    with attack_autocast(attack_precision, x.device):
        views = recipe.perturbation.perturb(step)
    step.views = {"clean": View(x=x), **views}
    objective = recipe.objective
    step.outputs = objective.forward(step)
    step.loss_targets = recipe.labels.loss_targets(step, objective.target_views)
    step.terms = objective.terms(step)
    step.weights = recipe.weighting.term_weights(step, objective.term_specs)
    step.loss = combine(step.terms, objective.coefficients(), step.weights)
    return step


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int,
               recipe: Recipe, optimizer: torch.optim.Optimizer, *, precision: str = "fp32",
               attack_precision: str = "same", scaler: torch.amp.GradScaler | None = None,
               loss_scale: float = 1.0) -> Step:
    """One optimisation step: model in train mode, :func:`compute_loss` under ``precision``'s autocast (the
    attack under ``attack_precision``'s, see :func:`attack_autocast`), backward, optimiser step (through
    ``scaler`` for fp16). Returns the Step (loss and outputs detached from nothing: call ``.detach()``
    before keeping them).

    ``loss_scale``: the backward pass is of ``loss_scale * step.loss`` (``step.loss`` itself is unscaled).
    Under DistributedDataParallel, which averages gradients over the W ranks, a rank holding ``b`` of a
    global batch of ``B`` passes ``W * b / B``, so the update is that of the mean over the global batch.
    """
    model.train()
    with autocast(precision, x.device):
        step = compute_loss(model, x, y, index, epoch, recipe, attack_precision=attack_precision)
    optimizer.zero_grad(set_to_none=True)
    loss = step.loss if loss_scale == 1.0 else step.loss * loss_scale
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return step
