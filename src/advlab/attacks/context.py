"""Context managers that change a model's state for the length of an attack and restore it exactly."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Optional

from torch import nn

from ..errors import AdvlabError

ModelMode = Optional[Literal["eval", "train"]]


@contextmanager
def model_mode(module: nn.Module, mode: ModelMode) -> Iterator[nn.Module]:
    """Put ``module`` in ``mode`` ("eval", "train", or None: leave as is); restore every submodule's flag after."""
    if mode not in ("eval", "train", None):
        raise AdvlabError(f"model_mode must be 'eval', 'train' or None, got {mode!r}")
    saved = [(m, m.training) for m in module.modules()]
    try:
        if mode is not None:
            module.train(mode == "train")
        yield module
    finally:
        for m, flag in saved:
            m.training = flag


def eval_mode(module: nn.Module):
    """``with eval_mode(model):`` runs in eval mode and restores each submodule's flag after."""
    return model_mode(module, "eval")


def train_mode(module: nn.Module):
    """``with train_mode(model):`` runs in train mode and restores each submodule's flag after."""
    return model_mode(module, "train")


@contextmanager
def no_param_grad(module: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` of every parameter of ``module``; restore each flag after."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
