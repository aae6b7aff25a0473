"""Per-sample attack losses, to be maximised by the attacker.

Every loss is ``fn(output, target) -> (B,)``. ``output`` is whatever the model returns (logits for the
built-in losses); ``target`` is integer labels (any integer dtype, used as int64), soft labels (B, C) or
clean probabilities (``kl``).
A user callable with the same signature is accepted wherever a loss name is.

The attack engine reads only the direction of each sample's gradient; ``ASCENT`` maps a loss to the function it
differentiates instead, of the same direction per sample but free of underflow (the cross-entropy: its soft
margin, :func:`ce_ascent`).
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

from ..errors import AdvlabError
from ..registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossSpec = Union[str, LossFn]

LOSSES: Registry[LossFn] = Registry("attack loss")


def as_labels(y: torch.Tensor, what: str = "labels y", n: int | None = None) -> torch.Tensor:
    """Class indices of any integer dtype (int8/16/32/64, uint8), shape (B,), as int64.

    Args:
        y: the labels. what: their name in the error. n: the batch size B they must match; None: any.

    Raises:
        AdvlabError: ``y`` is not a tensor, is bool, float or complex, or is not of shape (n,).
    """
    if not torch.is_tensor(y) or y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        kind = y.dtype if torch.is_tensor(y) else type(y).__name__
        raise AdvlabError(f"{what} must be an integer tensor of class indices (int8/16/32/64 or uint8), got {kind}")
    if y.dim() != 1 or (n is not None and len(y) != n):
        shape = f"({n},)" if n is not None else "(B,)"
        raise AdvlabError(f"{what} must have shape {shape}, got {tuple(y.shape)}")
    return y.long()


def _labels(target: torch.Tensor, what: str) -> torch.Tensor:
    """int64 labels from integer labels or soft labels (the most likely class of each row)."""
    if target.is_floating_point():
        if target.dim() != 2:
            raise AdvlabError(f"{what} loss needs integer labels (B,) or soft labels (B, C), got shape "
                              f"{tuple(target.shape)}")
        return target.argmax(1)
    return as_labels(target, f"{what} loss labels")


@LOSSES.register("ce")
def ce_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample; ``target`` is integer labels (B,) (any integer dtype) or soft labels (B, C)."""
    if target.is_floating_point():
        return -(target * F.log_softmax(output, dim=1)).sum(1)
    return F.cross_entropy(output, as_labels(target, "ce loss labels"), reduction="none")


def margin(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{k != y} z_k - z_y`` per sample: positive exactly when the sample is misclassified.

    ``y``: integer labels (B,) of any integer dtype.
    """
    y = as_labels(y, "margin labels")
    z_y = output.gather(1, y[:, None]).squeeze(1)
    others = output.scatter(1, y[:, None], float("-inf"))
    return others.max(1).values - z_y


def cw_loss(output: torch.Tensor, y: torch.Tensor, confidence: float | None = None) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{k != y} z_k - z_y``, capped at ``confidence`` when given.

    Soft labels are reduced to their most likely class.
    """
    m = margin(output, _labels(y, "cw"))
    return m if confidence is None else m.clamp(max=confidence)


LOSSES.register("cw", cw_loss)


@LOSSES.register("kl")
def kl_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TRADES' KL(p_clean || p_adv) per sample; ``target`` is the (detached) clean probabilities (B, C)."""
    if not target.is_floating_point() or target.shape != output.shape:
        raise AdvlabError("kl loss needs the clean probabilities (B, C) as target, "
                          f"got {target.dtype} of shape {tuple(target.shape)}")
    return F.kl_div(F.log_softmax(output, dim=1), target, reduction="none").sum(1)


@LOSSES.register("dlr")
def dlr_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Croce & Hein's difference-of-logits-ratio loss ``-(z_y - max_{k!=y} z_k) / (z_pi1 - z_pi3 + 1e-12)``."""
    if output.shape[1] < 3:
        raise AdvlabError(f"dlr loss needs at least 3 classes, got {output.shape[1]}")
    y = _labels(target, "dlr")
    top = output.sort(1, descending=True).values
    return margin(output, y) / (top[:, 0] - top[:, 2] + 1e-12)


def get_loss(loss: LossSpec) -> LossFn:
    """The loss function named ``loss`` (see ``LOSSES.names()``), or ``loss`` itself if callable."""
    if callable(loss):
        return loss
    return LOSSES.get(loss)


def ce_ascent(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The soft margin ``s = logsumexp_{k != y} z_k - z_y`` per sample (B,) for integer labels: a function whose
    gradient has the direction of the cross-entropy's, computed without its underflow.

    Cross-entropy is ``softplus(s)``, so its gradient is ``sigmoid(s)`` times the gradient of ``s``: the same
    direction for each sample, scaled by a positive number. Where the softmax saturates (the true class's
    logit leads by more than ~104 in float32, ~745 in float64, a few units in bfloat16) ``sigmoid(s)``, i.e.
    ``1 - p_y``, rounds to exactly 0 and the cross-entropy's gradient vanishes, although its direction (towards
    the other classes, weighted by their softmax among themselves) is well defined; the gradient of ``s``
    (``softmax_{k != y}(z) - onehot(y)`` on the logits) never does. A sign step (linf) or a normalised step
    (l2) of the two is the same step. Float16 and bfloat16 logits are read in float32.

    Soft labels (float (B, C)) and outputs of one column get the cross-entropy itself (:func:`ce_loss`).
    """
    if target.is_floating_point() or output.shape[1] < 2:
        return ce_loss(output, target)
    y = as_labels(target, "ce loss labels")
    z = output if output.dtype in (torch.float32, torch.float64) else output.float()
    true = F.one_hot(y, z.shape[1]).bool()
    z_y = z.gather(1, y[:, None]).squeeze(1)
    return torch.logsumexp(z.masked_fill(true, float("-inf")), dim=1) - z_y


ASCENT: dict[LossFn, LossFn] = {ce_loss: ce_ascent}
"""Losses whose gradient an attack takes through another function of the same per-sample gradient direction,
computed without underflow (the engine's sign and normalised steps read only the direction)."""


def ascent_form(loss_fn: LossFn) -> LossFn:
    """The function :func:`advlab.attacks.pgd` differentiates for ``loss_fn``: its entry in :data:`ASCENT`
    (cross-entropy: :func:`ce_ascent`), else ``loss_fn`` itself. Same direction of each sample's gradient."""
    return next((form for fn, form in ASCENT.items() if fn is loss_fn), loss_fn)  # any callable, hashable or not
