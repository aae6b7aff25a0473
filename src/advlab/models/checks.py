"""Argument checks shared by the model and activation factories; every failure is an AdvlabError."""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import AdvlabError


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer >= 1 (numpy integers too, bools refused); an AdvlabError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise AdvlabError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def probability(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1); an AdvlabError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise AdvlabError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_call(fn: Callable[..., Any], kwargs: dict[str, Any], what: str, fixed: Iterable[str] = ()) -> None:
    """Raise an AdvlabError if ``fn(**kwargs)`` would fail on its signature (unknown or missing arguments).

    ``fixed`` names arguments the caller always passes; they are left out of the list of accepted ones
    shown in the message. Callables whose signature cannot be read are not checked.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        fixed = set(fixed)
        accepted = [p.name for p in sig.parameters.values()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in fixed]
        raise AdvlabError(f"bad arguments for {what}: {exc}; accepted: {', '.join(accepted) or 'none'}") from None


def check_model_fits(model: nn.Module, images: torch.Tensor, width: int, device: torch.device | str) -> None:
    """AdvlabError unless ``model`` maps ``images`` (uint8 (B, C, H, W), e.g. two training images, moved to
    ``device``) to outputs (B, ``width``): logits of the dataset's classes, or a projection of that width.
    Runs in eval mode without gradients; every submodule's flag is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(images.to(device).float().div(255))
    except RuntimeError as exc:
        raise AdvlabError(f"cannot process the dataset's images of shape {tuple(images.shape[1:])}: "
                          f"{str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(out) or tuple(out.shape) != (len(images), width):
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise AdvlabError(f"must return outputs of shape (B, {width}) for this dataset and head, got {got}")
