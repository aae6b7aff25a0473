"""GradAlign (Andriushchenko and Flammarion 2020, "Understanding and Improving Fast Adversarial Training"):
cross-entropy on the perturbed batch plus align_weight times the gradient-alignment regulariser
1 - cos(grad_x CE(f(x), y), grad_x CE(f(x + eta), y)), eta uniform in the eps ball, per sample.

Official code: github.com/tml-epfl/understanding-fast-adv-training, ``train.py`` lines 152-162 (the first
gradient, at the FGSM's start point, x in the paper's runs, detached) and 191-202 (the second, at x + eta, with
``create_graph=True``; the cosine of flattened gradients per sample, averaged over the samples whose two
gradients are non-zero), ``utils.py`` lines 70-91 (``get_input_grad``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...attacks import forward_logits, get_norm, no_param_grad, per_sample
from ...options import option
from ..base import ObjectivePart, RecipeEnv, Step, TermSpec, register, soft_cross_entropy


@dataclass
class GradAlignOptions:
    align_weight: float = option(0.2, low=0)  # lambda: 0.2 is the official CIFAR-10 value at eps 8/255
    noise: float | None = option(None, low=0, low_open=True)  # pixel units: radius of eta; None = eps (the paper)


def _work(t: torch.Tensor) -> torch.Tensor:
    """(B, d) rows of ``t`` in float32 at least (float16/bfloat16 upcast, float64 kept)."""
    flat = t.flatten(1)
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def per_sample_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The cosine (B,) of the flattened rows of ``a`` and ``b`` (B, ...), differentiable in both.

    Each row is first divided by its (detached) max-abs, which leaves the cosine unchanged and keeps tiny
    gradients (a confident model's, ~1e-20) from underflowing when squared. A row of either that is zero or
    not finite gives cosine 1 (no alignment term and no gradient for that sample; the official code drops such
    samples from its mean, ``train.py`` line 194). float32 at least; float64 stays float64.
    """
    a, b = _work(a), _work(b)
    sa = a.detach().abs().amax(1, keepdim=True)
    sb = b.detach().abs().amax(1, keepdim=True)
    ok = (sa > 0) & (sb > 0) & torch.isfinite(sa) & torch.isfinite(sb)
    ones = torch.ones_like(a)
    # rows that are not ok become rows of ones (finite everywhere, forward and backward), then cos := 1
    a = torch.where(ok, a / torch.where(ok, sa, torch.ones_like(sa)), ones)
    b = torch.where(ok, b / torch.where(ok, sb, torch.ones_like(sb)), ones)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return torch.where(ok.squeeze(1), cos, torch.ones_like(cos))


def loss_input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                        create_graph: bool) -> torch.Tensor:
    """grad_x of the summed cross-entropy of ``model`` at ``x`` (B, ...) against ``target`` (int64 labels (B,)
    or soft labels (B, C)), same shape as ``x``. ``create_graph=True`` keeps it differentiable in the
    parameters (double backprop); False returns it detached, computed with the parameters frozen. The sum's
    gradient is the official mean's (``F.cross_entropy``) times B: the same cosine."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        if create_graph:
            loss = soft_cross_entropy(forward_logits(model, xg, "objective 'grad-align'"), target).sum()
            (grad,) = torch.autograd.grad(loss, xg, create_graph=True)
            return grad
        with no_param_grad(model):
            loss = soft_cross_entropy(forward_logits(model, xg, "objective 'grad-align'"), target).sum()
            (grad,) = torch.autograd.grad(loss, xg)
        return grad.detach()


@register("objective", "grad-align")
class GradAlign(ObjectivePart):
    """``adversarial``: CE(f(x_adv), target); ``align`` (times ``align_weight``): 1 - cos(g(x), g(x + eta)) per
    sample, g = grad_x CE(f(.), attack target), eta uniform in the ball of radius ``noise`` (eps), x + eta
    clamped to [0, 1]. g(x) is detached and g(x + eta) trains through double backprop, as the official code.

    Costs one forward and backward at x (input gradient only) and one forward, backward and double backward at
    x + eta per step, on top of the perturbation's. Both run on the module without DistributedDataParallel or
    ``torch.compile`` wrappers (neither supports double backward); the parameters are the same, so the
    regulariser's weight gradients join the one backward of the loss.
    """

    Options = GradAlignOptions
    forward_views = ("adv",)
    target_views = ("adv",)
    term_specs = (TermSpec("adversarial", ("adv",), supervised=True),
                  TermSpec("align", ("clean",), supervised=False))

    def __init__(self, options: GradAlignOptions, env: RecipeEnv) -> None:
        super().__init__(options, env)
        self._reset()

    def noise(self) -> float:
        """Radius of eta in pixel units."""
        return self.options.noise if self.options.noise is not None else self.env.eps

    def alignment(self, step: Step) -> torch.Tensor:
        """cos(g(x), g(x + eta)) per sample (B,), differentiable in the parameters through g(x + eta)."""
        model = getattr(step.local_model, "_orig_mod", step.local_model)  # eager: compiled graphs lack double backward
        target = step.attack_target if step.attack_target is not None else step.y
        x = step.views["clean"].x
        g_clean = loss_input_gradient(model, x, target, create_graph=False)
        with torch.no_grad():
            eta = get_norm(self.env.norm).random(x, per_sample(self.noise(), x, "noise"), None)
            x_noisy = (x + eta).clamp(0, 1)
        g_noisy = loss_input_gradient(model, x_noisy, target, create_graph=True)
        return per_sample_cosine(g_clean, g_noisy)

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        cos = self.alignment(step)
        self._cos = cos.detach().sum() + (self._cos if self._cos is not None else 0)
        self._n += len(cos)
        return {"adversarial": soft_cross_entropy(step.outputs["adv"], step.loss_targets["adv"]),
                "align": 1.0 - cos}

    def coefficients(self) -> dict[str, float]:
        return {"adversarial": 1.0, "align": self.options.align_weight}

    def _reset(self) -> None:
        self._cos: torch.Tensor | None = None
        self._n = 0

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset()

    def epoch_metrics(self) -> dict[str, Any]:
        """``align_cos``: the epoch's mean cosine of the two input gradients (this process's samples; None
        before any step); it falls toward 0 when the model becomes locally non-linear (catastrophic
        overfitting)."""
        return {"align_cos": self._cos.item() / self._n if self._n else None}
