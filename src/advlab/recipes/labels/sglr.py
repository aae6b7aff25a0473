"""SGLR, self-guided label refinement ("Soften to Defend", Li, Yu et al., CVPR 2024; code devicerxx/SGLS).

From a start epoch on, each sample's loss target is a soft label kept in a per-sample bank and moved by
an exponential moving average of the model's own predictions:

    S_i <- m * S_i + (1 - m) * [(1 - s) * (c * p(x_i) + (1 - c) * p(x'_i)) + s * e_{y_i}]

with m = 0.9, c = 0.2 (clean share) and s = 0 (one-hot share; s > 0 is the paper's form that keeps a
permanent share of the given label). The bank is updated before the loss of the same step, which then
uses the updated row (official order). The attack keeps aiming at the hard labels. Before the start
epoch the target is the hard label, so the loss is plain PGD-AT's (or TRADES').

With the ``adv`` view (CE/MART objectives) the logits passed in are the adversarial prediction and the
clean prediction costs one extra no-grad forward of the clean batch; with the ``clean`` view (TRADES:
the soft labels replace the natural term's target) the logits are the clean prediction and the
adversarial one is the objective's own output on the ``adv`` view when it has one (TRADES), else one
extra no-grad forward of the ``adv`` view.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from torch import nn

from ...options import option
from ..base import Step, register
from .refined import RefinedLabelsPart


@dataclass
class SGLROptions:
    momentum: float = option(0.9, low=0, high=1)  # EMA momentum m of the bank
    clean_share: float = option(0.2, low=0, high=1)  # share c of the clean prediction in the mix (adversarial: 1 - c)
    one_hot_share: float = option(0.0, low=0, high=1)  # s: permanent share of the given label (0 = official code's form)
    start_epoch: float | None = None  # None: one epoch before the first LR decay; <1: fraction; >=1: epoch
    clean_bn: Literal["eval", "batch", "train"] = "eval"  # batch-norm mode of the extra no-grad forward


@contextlib.contextmanager
def batch_norm_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Run the block with batch norm in ``mode``; restore every module's flags afterwards.

    ``eval``: running statistics, nothing updated. ``batch``: batch statistics, running statistics not
    updated (``track_running_stats`` off for the block, so no buffer is written). ``train``: batch
    statistics, running statistics updated (the official SGLS code).
    """
    flags = [(m, m.training) for m in model.modules()]
    frozen = []
    if mode == "batch":
        frozen = [m for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    model.train(mode != "eval")
    for m in frozen:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in frozen:
            m.track_running_stats = True
        for m, flag in flags:
            m.training = flag


def predict(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Softmax prediction of ``model`` on ``x`` without gradients, batch norm in ``mode``."""
    with torch.no_grad(), batch_norm_mode(model, mode):
        return model(x).float().softmax(1)


@register("labels", "sglr")
class SGLRLabels(RefinedLabelsPart):
    """Per-sample soft labels: EMA of 0.2 clean + 0.8 adversarial predictions from the start epoch."""

    Options = SGLROptions

    def prediction(self, step: Step, logits: torch.Tensor, view: str) -> torch.Tensor:
        """The prediction the bank moves toward: clean/adversarial mix, plus the one-hot share."""
        o = self.options
        own = logits.detach().float().softmax(1)
        if view == "clean":
            p_clean = own
            shared = step.outputs.get("adv")
            if shared is not None:
                p_adv = shared.detach().float().softmax(1)
            else:
                p_adv = predict(step.local_model, step.views["adv"].x, o.clean_bn)
        elif view == "adv":
            p_adv = own
            p_clean = predict(step.local_model, step.x, o.clean_bn)
        else:
            raise ValueError(f"view must be 'adv' or 'clean', got {view!r}")
        q = o.clean_share * p_clean + (1.0 - o.clean_share) * p_adv
        if o.one_hot_share > 0:
            q = (1.0 - o.one_hot_share) * q + o.one_hot_share * self.bank.one_hot_given(step.index)
        return q
