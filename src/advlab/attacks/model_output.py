"""What attacks and evaluation need from a model: a logits tensor (B, C), differentiable in the input.

Every place that calls a model goes through :func:`forward_logits` (or :func:`logits_of` on an output it
already has), so a model that returns a tuple, a dict or a tensor of the wrong shape fails with one clear
:class:`~advlab.errors.AdvlabError` instead of an ``AttributeError`` deep inside an attack. :func:`input_gradient`
does the same for a model whose output does not depend on its input through autograd;
:func:`outside_inference_mode`, :func:`autograd_tensor` and :func:`check_autograd_model` let attacks run when
called under ``torch.inference_mode()``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import AdvlabError

FIX = ("wrap the model in an nn.Module whose forward returns the logits tensor "
       "(e.g. forward(x) = model(x)[0] for a model that returns a tuple)")
NOT_DIFFERENTIABLE = ("the model's output does not depend on its input through autograd; gradient attacks need a "
                      "differentiable model (no detach, no argmax or torch.no_grad inside forward)")


def _describe(output: Any) -> str:
    """A short description of what a model returned: its type, and dtype and shape for tensors."""
    if torch.is_tensor(output):
        return f"a {str(output.dtype).replace('torch.', '')} tensor of shape {tuple(output.shape)}"
    if isinstance(output, (tuple, list)):
        items = ", ".join(_describe(o) if torch.is_tensor(o) else type(o).__name__ for o in output[:4])
        more = ", ..." if len(output) > 4 else ""
        return f"a {type(output).__name__} of {len(output)} ({items}{more})"
    if isinstance(output, dict):
        keys = ", ".join(repr(k) for k in list(output)[:6])
        return f"a {type(output).__name__} with keys [{keys}{', ...' if len(output) > 6 else ''}]"
    return f"a {type(output).__name__}"


def logits_of(output: Any, where: str, batch: int | None = None) -> torch.Tensor:
    """``output`` itself if it is a floating-point logits tensor of shape (B, C), C >= 1.

    Args:
        output: what a model returned.
        where: who called the model (named in the error), e.g. ``"pgd"`` or ``"evaluate (clean accuracy)"``.
        batch: the batch size B the output must have; None: any.

    Raises:
        AdvlabError: anything else (a tuple, a dict, an integer tensor, a (B,) or (B, C, H, W) tensor, a wrong
            batch size), naming what the model returned and how to fix it.
    """
    if (torch.is_tensor(output) and output.is_floating_point() and output.dim() == 2 and output.shape[1] >= 1
            and (batch is None or output.shape[0] == batch)):
        return output
    want = "a float logits tensor of shape (B, C)" + (f" with B = {batch}" if batch is not None else "")
    raise AdvlabError(f"{where}: the model must return {want}, got {_describe(output)}; {FIX}")


def forward_logits(model: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    """``model(x)`` checked by :func:`logits_of` against the batch size of ``x`` (B, ...): logits (B, C).

    Raises:
        AdvlabError: the model did not return a float tensor of shape (B, C).
    """
    return logits_of(model(x), where, batch=len(x))


def input_gradient(loss: torch.Tensor, x: torch.Tensor, where: str) -> torch.Tensor:
    """The gradient of ``loss.sum()`` with respect to ``x`` (same shape as x), computed with grad enabled.

    ``loss`` must have been computed from ``x`` (a leaf that requires grad) with grad enabled; the sum is
    taken here under ``torch.enable_grad()``, so this also works inside ``torch.no_grad()``.

    Raises:
        AdvlabError: ``loss`` does not depend on ``x`` through autograd (a model that detaches its input,
            takes an argmax, or runs under no_grad inside forward).
    """
    with torch.enable_grad():
        total = loss.sum()
        if not total.requires_grad:
            raise AdvlabError(f"{where}: {NOT_DIFFERENTIABLE}")
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    if grad is None:
        raise AdvlabError(f"{where}: {NOT_DIFFERENTIABLE}")
    return grad


@contextmanager
def outside_inference_mode() -> Iterator[None]:
    """Run the block outside ``torch.inference_mode()``, where autograd is impossible, and with grad disabled
    there as under ``torch.no_grad()`` (leaving inference mode would otherwise turn grad mode on); outside
    inference mode, change nothing. Gradients are then taken under an explicit ``torch.enable_grad()``."""
    if not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def autograd_tensor(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a normal clone of it if it was created under ``torch.inference_mode()`` (None stays None).

    Inference tensors cannot take part in autograd; call this outside inference mode
    (``with outside_inference_mode():``), where the clone is a normal tensor.
    """
    if torch.is_tensor(t) and t.is_inference():
        return t.clone()
    return t


def check_autograd_model(model: nn.Module, where: str) -> None:
    """AdvlabError if a parameter or buffer of ``model`` was created under ``torch.inference_mode()``.

    Such tensors cannot be used by autograd, so no gradient attack can run on that model; it has to be built
    (or loaded) outside inference mode. Models that are not nn.Modules are not checked.
    """
    if not isinstance(model, nn.Module):
        return
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_inference():
            raise AdvlabError(f"{where}: the model's {name} was created under torch.inference_mode() and cannot be "
                              "used by autograd; build or load the model outside inference mode "
                              "(torch.no_grad() is fine)")
