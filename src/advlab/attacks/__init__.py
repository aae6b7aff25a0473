"""Attacks: one PGD engine (training and evaluation), its losses, norms and model-state context managers.

``forward_logits(model, x, where)`` / ``logits_of(output, where)`` are the one check of what a model returns
(a float logits tensor (B, C)) used wherever advlab calls a model.

>>> from advlab.attacks import pgd
>>> result = pgd(model, x, y, eps=8/255, step_size=2/255, steps=10)   # doctest: +SKIP
>>> result.x_adv, result.kappa, result.first_wrong, result.steps_taken       # doctest: +SKIP
"""
from __future__ import annotations

from .context import model_mode, eval_mode, no_param_grad, train_mode
from .losses import LOSSES, as_labels, ce_loss, cw_loss, dlr_loss, get_loss, kl_loss, margin
from .model_output import forward_logits, logits_of
from .norms import NORMS, L2, Linf, get_norm, per_sample
from .pgd import RANDOM_STARTS, AttackResult, fgsm, pgd, skip_start

__all__ = [
    "pgd", "fgsm", "skip_start", "AttackResult", "RANDOM_STARTS",
    "LOSSES", "get_loss", "ce_loss", "cw_loss", "kl_loss", "dlr_loss", "margin", "as_labels",
    "logits_of", "forward_logits",
    "NORMS", "get_norm", "Linf", "L2", "per_sample",
    "model_mode", "eval_mode", "train_mode", "no_param_grad",
]
