"""Attacks: one PGD engine (training and evaluation), its losses, norms and model-state context managers.

>>> from advlab.attacks import pgd
>>> result = pgd(model, x, y, eps=8/255, step_size=2/255, steps=10)   # doctest: +SKIP
>>> result.x_adv, result.kappa, result.first_wrong, result.steps       # doctest: +SKIP
"""
from __future__ import annotations

from .context import bn_mode, eval_mode, no_param_grad, train_mode
from .losses import LOSSES, ce_loss, cw_loss, dlr_loss, get_loss, kl_loss, margin
from .norms import NORMS, L2, Linf, get_norm, per_sample
from .pgd import RANDOM_STARTS, AttackResult, fgsm, pgd

__all__ = [
    "pgd", "fgsm", "AttackResult", "RANDOM_STARTS",
    "LOSSES", "get_loss", "ce_loss", "cw_loss", "kl_loss", "dlr_loss", "margin",
    "NORMS", "get_norm", "Linf", "L2", "per_sample",
    "bn_mode", "eval_mode", "train_mode", "no_param_grad",
]
