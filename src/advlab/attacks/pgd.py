"""The one projected-gradient engine behind every attack of advlab, in training and in evaluation.

One forward and one backward per step, gradients taken for the input only (``torch.autograd.grad``), so
parameter ``.grad`` is never touched. The forward of step k serves both the per-sample bookkeeping
(GAIRAT's kappa, the first misclassified iterate, FAT's early stop) and the gradient.

Attacks run the same inside ``torch.no_grad()``, inside ``torch.inference_mode()`` (inputs made there are
cloned into normal tensors) and on models with frozen parameters: the gradient of the input is taken under
``torch.enable_grad()`` whatever the caller's mode. Every model call goes through ``forward_logits``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdvlabError
from .box import box_count, box_stats, clamp_to_box
from .context import ModelMode, model_mode as _model_mode, no_param_grad
from .losses import LossSpec, as_labels, ascent_form, get_loss, kl_loss
from .model_output import (autograd_tensor, check_autograd_model, forward_logits, input_gradient, logits_of,
                           outside_inference_mode)
from .norms import get_norm, per_sample

RANDOM_STARTS = ("uniform", "normal", None)
NORMAL_START_STD = 0.001  # TRADES / MART: x + 0.001 * N(0, I)


@dataclass
class AttackResult:
    """What an attack returns: the adversarial batch and per-sample facts about the iterates.

    ``kappa``: GAIRAT's kappa, the number of iterates x^(0..K-1) (before each update, while the sample was
    active) classified correctly; ``first_wrong``: index k of the first misclassified iterate x^(k)
    (x^(0) is the start point; the final iterate is checked too), -1 if none; ``steps_taken``: (B,) int64,
    the gradient steps each sample took (the steps given, K, is the ``steps`` argument). ``kappa`` and
    ``first_wrong`` are None without labels ``y``; ``first_wrong`` is None also when ``track_final=False``.
    ``clamped``: the number of values of x outside [0, 1] by no more than a rounding error (``attacks.box``),
    clamped before the attack.
    """

    x_adv: torch.Tensor
    kappa: torch.Tensor | None
    first_wrong: torch.Tensor | None
    steps_taken: torch.Tensor
    clamped: int = 0


def _check_inputs(x: torch.Tensor, y: torch.Tensor | None, steps: int, random_start: str | None,
                  early_stop: int | None) -> torch.Tensor | None:
    """Check the arguments; return the labels as int64 (any integer dtype is accepted), or None."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise AdvlabError("attack input x must be a float tensor with values in [0, 1]")
    if y is not None:
        y = as_labels(y, "labels y", len(x))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise AdvlabError(f"steps must be an int >= 0, got {steps!r}")
    if random_start not in RANDOM_STARTS:
        raise AdvlabError(f"random_start must be one of {RANDOM_STARTS}, got {random_start!r}")
    if early_stop is not None:
        if isinstance(early_stop, bool) or not isinstance(early_stop, int) or early_stop < 0:
            raise AdvlabError(f"early_stop must be None or an int >= 0, got {early_stop!r}")
        if y is None:
            raise AdvlabError("early_stop needs the labels y")
    return y


def _loss_target(target: torch.Tensor, n: int) -> torch.Tensor:
    """The loss target, detached: integer labels (any integer dtype) as int64, float targets as they are."""
    if not torch.is_tensor(target):
        raise AdvlabError(f"target must be a tensor, got {type(target).__name__}")
    if not target.is_floating_point():
        target = as_labels(target, "target labels")
    if len(target) != n:
        raise AdvlabError(f"target has {len(target)} rows for a batch of {n}")
    return target.detach()


def _check_numbers(logit_scale: float, generator: torch.Generator | None, **values: object) -> None:
    """Each of ``values`` (eps, step_size, direction) a real number or a tensor; logit_scale a finite number
    > 0; generator None or a torch.Generator. AdvlabError naming the argument otherwise."""
    for name, value in values.items():
        if not torch.is_tensor(value) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise AdvlabError(f"{name} must be a number or a tensor of shape (B,), got {value!r}")
    if (isinstance(logit_scale, bool) or not isinstance(logit_scale, numbers.Real)
            or not (0 < logit_scale < math.inf)):
        raise AdvlabError(f"logit_scale must be a finite number > 0, got {logit_scale!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise AdvlabError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_values(eps: float | torch.Tensor, step_size: float | torch.Tensor, direction: int | torch.Tensor,
                  start_eps: float | torch.Tensor | None = None) -> bool:
    """eps >= 0 (math.inf: no projection), step_size and start_eps finite and >= 0, direction +-1: in Python for
    numbers, one device sync for tensors. Returns whether any eps is infinite."""
    start = 0.0 if start_eps is None else start_eps
    if any(torch.is_tensor(v) for v in (eps, step_size, direction, start)):
        e, s, d, r = (torch.as_tensor(v) for v in (eps, step_size, direction, start))
        ok = torch.stack([((e >= 0) & ~torch.isnan(e)).all().cpu(), ((s >= 0) & torch.isfinite(s)).all().cpu(),
                          ((d == 1) | (d == -1)).all().cpu(), ((r >= 0) & torch.isfinite(r)).all().cpu(),
                          torch.isinf(e).any().cpu()])
        eps_ok, step_ok, dir_ok, start_ok, eps_inf = ok.tolist()
    else:
        eps_ok, step_ok, dir_ok = (0 <= eps <= math.inf), (0 <= step_size < math.inf), direction in (1, -1)
        start_ok, eps_inf = 0 <= start < math.inf, eps == math.inf
    if not eps_ok:
        raise AdvlabError("eps must be >= 0 (math.inf: no projection)")
    if not start_ok:
        raise AdvlabError("start_eps must be finite and >= 0 (None: eps)")
    if not step_ok:
        raise AdvlabError("step_size must be finite and >= 0 (direction=-1 descends)")
    if not dir_ok:
        raise AdvlabError("direction must be +1 or -1 (per sample)")
    return eps_inf


def _check_batch(x: torch.Tensor, out: torch.Tensor, labels: list[torch.Tensor]) -> int:
    """x in [0, 1] up to a rounding error (``attacks.box``) and every integer label tensor in [0, C) for outputs
    (B, C), in one device sync; returns the number of values of x outside [0, 1] (within the tolerance)."""
    c = out.shape[1]
    checks = [box_stats(x)]
    checks += [((t >= 0) & (t < c)).all().double()[None] for t in labels if len(t)]
    values = torch.cat(checks).cpu().tolist()
    clamped = box_count(values[:4], x.dtype, "attack input x")
    if not all(values[4:]):
        raise AdvlabError(f"labels must be class indices in [0, {c}) for a model with {c} outputs")
    return clamped


def _start_offset(x: torch.Tensor, eps: torch.Tensor, geometry, random_start: str | None,
                  generator: torch.Generator | None) -> torch.Tensor | None:
    """The random offset of the start point from x (in the ball of radius eps (B,)), or None without a random
    start: the one place the start's random draws are made."""
    if random_start is None:
        return None
    if random_start == "uniform":
        return geometry.random(x, eps, generator)
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return geometry.project(NORMAL_START_STD * noise, eps)


def _start(x: torch.Tensor, eps: torch.Tensor, geometry, random_start: str | None,
           generator: torch.Generator | None) -> torch.Tensor:
    """The start point x^(0): x, or a random point of the ball (inside [0, 1]); always a fresh tensor."""
    delta = _start_offset(x, eps, geometry, random_start, generator)
    return x.clone() if delta is None else (x + delta).clamp_(0, 1)


def skip_start(x: torch.Tensor, eps: float | torch.Tensor, *, norm: str = "linf", random_start: str | None = "uniform",
               generator: torch.Generator | None = None) -> None:
    """Advance ``generator`` (or the global RNG) exactly as :func:`pgd`'s random start for the batch ``x``
    (B, ...) would, without attacking: the same draws (``_start_offset``), their result dropped. Lets several
    processes deal the batches of one stream among themselves and still attack each batch from the start one
    process draws.
    ``eps``: a number or (B,); the draws depend only on the shape of ``x``, the norm and ``random_start``."""
    with torch.no_grad():
        _start_offset(x, per_sample(eps, x, "eps"), get_norm(norm), random_start, generator)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    steps: int,
    norm: str = "linf",
    loss: LossSpec = "ce",
    target: torch.Tensor | None = None,
    direction: int | torch.Tensor = 1,
    random_start: str | None = "uniform",
    early_stop: int | None = None,
    model_mode: ModelMode = "eval",
    logit_scale: float = 1.0,
    generator: torch.Generator | None = None,
    track_final: bool = True,
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_eps: float | torch.Tensor | None = None,
) -> AttackResult:
    """Projected gradient ascent (``direction=1``) or descent (``-1``) of a per-sample loss in an eps-ball.

    Args:
        model: maps x in [0, 1] (B, ...) to a float tensor (B, C): logits for the built-in losses, or any
            (B, C) output a custom loss reads (with ``classify``: a representation (B, D)).
        x: clean inputs, float in [0, 1]; never modified. Values outside [0, 1] by at most a rounding error
            (``attacks.box.box_tolerance``: 1e-6 in float32 / float64) are clamped first and counted
            (``AttackResult.clamped``).
        y: integer labels (B,) of any integer dtype (used as int64): used for kappa, first_wrong and early
            stop, and as the loss target when ``target`` is None.
        eps, step_size: radius and step size, a number or a per-sample tensor (B,); eps 0 leaves a row as x.
            ``eps=math.inf``: no projection (every iterate stays in [0, 1]; N-FGSM, de Jorge et al. 2022); a
            random start then needs ``start_eps``.
        steps: number of gradient steps K.
        norm: "linf" (sign steps) or "l2" (normalised-gradient steps).
        loss: a name in ``LOSSES`` (ce, cw, kl, dlr) or a callable ``(output, target) -> (B,)``. Steps read only
            the direction of each sample's gradient, so a loss with an entry in ``losses.ASCENT`` is
            differentiated through it: the cross-entropy with integer labels through its soft margin
            (``losses.ce_ascent``), whose gradient does not vanish where the softmax saturates (a large
            ``logit_scale``, a confident model). A callable is differentiated as given.
        target: what the loss compares against (labels, soft labels, clean probabilities). For ``loss="kl"``
            and no target, the clean probabilities softmax(logit_scale * model(x)) are computed once, no grad.
        direction: +1 (adversarial) or -1 (anti-adversarial), a number or a per-sample tensor of +-1.
        random_start: "uniform" (uniform in the ball), "normal" (x + 0.001 N(0, I), projected) or None.
        early_stop: None, or FAT's tau: a sample misclassified with no budget left is frozen at that iterate;
            each other misclassified iterate uses one unit of its budget (initially tau).
        model_mode: "eval", "train" or None (leave as is) during the attack; every submodule's flag is restored.
        logit_scale: model outputs are multiplied by this before the loss (logit-scaling attack).
        generator: torch.Generator for the random start; the global RNG is not reseeded.
        track_final: with ``y`` given, forward the final iterate (only of samples not yet misclassified,
            one extra forward at most) to complete ``first_wrong``; False skips it and returns
            ``first_wrong=None`` (leanest training path).
        classify: None, or a function mapping the model's output to logits (B, C) (e.g. a kNN's vote over a
            representation, ``KNNClassifier.scores``): the loss then reads the model's output itself (a
            representation (B, D), compared with ``target``), while the labels are checked, and kappa,
            first_wrong and early stop judged, on ``classify``'s logits (computed without gradient).
            ``logit_scale`` must then be 1.
        start_eps: None (the random start is drawn in the ball of radius ``eps``), or the radius of the ball
            the random start is drawn in, a number or a per-sample tensor (B,), independent of the projection
            radius ``eps`` (N-FGSM's noise of 2 eps: ``start_eps=2 * eps, eps=math.inf``). The same draws
            as with ``eps``, scaled.

    Returns:
        AttackResult with the detached adversarial batch (same shape, dtype, device as x; inside the ball and
        [0, 1]; original batch order) and the per-sample kappa, first_wrong and steps.

    Raises:
        AdvlabError: bad arguments (labels not integer (B,), eps < 0, an infinite eps with a random start and
            no start_eps, ...); x with NaN or infinite values or further outside [0, 1] than a rounding error (the
            smallest and largest value in the message); a model output that is not a float tensor (B, C); a model
            whose output does not depend on its input through autograd; a model whose parameters were created
            under ``torch.inference_mode()``.

    Works the same (same seed, same x_adv) under ``torch.no_grad()``, ``torch.inference_mode()`` and with
    frozen parameters.
    """
    y = _check_inputs(x, y, steps, random_start, early_stop)
    _check_numbers(logit_scale, generator, eps=eps, step_size=step_size, direction=direction,
                   **({} if start_eps is None else {"start_eps": start_eps}))
    if classify is not None and (not callable(classify) or logit_scale != 1.0):
        raise AdvlabError("classify must be a callable (representation -> logits) and needs logit_scale 1")
    geometry = get_norm(norm)
    loss_fn = ascent_form(get_loss(loss))  # the gradient's direction only: cross-entropy without its underflow
    with outside_inference_mode():  # autograd cannot run in inference mode; its tensors are cloned
        check_autograd_model(model, "pgd")
        x, y, target = (autograd_tensor(t) for t in (x.detach(), y, target))
        raw = x  # checked at the first step (one sync with the labels): up to a rounding error in [0, 1]
        x = x.clamp(0, 1)
        eps, step_size, direction, start_eps = (autograd_tensor(v) for v in (eps, step_size, direction, start_eps))
        eps_t = per_sample(eps, x, "eps")
        direction_t = per_sample(direction, x, "direction")
        eps_inf = _check_values(eps, step_size, direction, start_eps)
        start_t = eps_t if start_eps is None else per_sample(start_eps, x, "start_eps")
        if random_start is not None and start_eps is None and eps_inf:
            raise AdvlabError("a random start with eps=math.inf (no projection) needs start_eps, the start's radius")
        move_t = per_sample(step_size, x, "step_size") * direction_t

        # parameters frozen for the attack: the backward is to the input only, also in a compiled model (whose
        # graph would otherwise compute every weight gradient), and no activation is kept for weight gradients
        with _model_mode(model, model_mode), no_param_grad(model):
            if target is None:
                if loss == "kl" or loss is kl_loss:
                    with torch.no_grad():
                        target = F.softmax(forward_logits(model, x, "pgd") * logit_scale, dim=1)
                elif y is None:
                    raise AdvlabError("pgd needs labels y or a loss target")
                else:
                    target = y
            target = _loss_target(target, len(x))
            with torch.no_grad():
                x_adv = _start(x, start_t, geometry, random_start, generator)
            clamped = clamp_to_box(raw, "attack input x")[1] if steps == 0 else 0  # else checked at step 0
            return _iterate(model, x, y, x_adv, target, eps_t, move_t, steps, geometry, loss_fn, early_stop,
                            logit_scale, track_final, classify, raw, clamped)


def _logits(out: torch.Tensor, classify: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
    """The logits (B, C) that judge the labels: the model's output, or ``classify`` of it (without gradient)."""
    if classify is None:
        return out
    with torch.no_grad():
        return logits_of(classify(out.detach()), "pgd (classify)", batch=len(out))


def _forward_loss(model: nn.Module, xa: torch.Tensor, target: torch.Tensor, loss_fn, logit_scale: float,
                  check: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
                  classify: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Logits (B, C) and per-sample losses (B,) at ``xa`` (a leaf requiring grad), with grad enabled, and the
    number of clamped input values. ``check``: the clean batch as given and the integer label tensors to check
    (:func:`_check_batch`) before the loss reads them (no check: 0 clamped). With ``classify`` the loss reads
    the model's output and the logits are ``classify`` of it."""
    clamped = 0
    with torch.enable_grad():
        out = forward_logits(model, xa, "pgd")
        logits = _logits(out, classify)
        if check is not None:
            clamped = _check_batch(check[0], logits, check[1])
        if logit_scale != 1.0:
            out = out * logit_scale
        losses = loss_fn(out, target)
    if not torch.is_tensor(losses) or losses.shape != (len(xa),):
        shape = tuple(losses.shape) if torch.is_tensor(losses) else type(losses).__name__
        raise AdvlabError(f"attack loss must return one value per sample, got shape {shape}")
    return logits, losses, clamped


def _iterate(model, x, y, x_adv, target, eps_t, move_t, steps, geometry, loss_fn, early_stop, logit_scale,
             track_final, classify=None, raw=None, clamped=0) -> AttackResult:
    """The PGD loop over an active set of samples (all of them unless early stop froze some). ``x``: the clean
    batch clamped to [0, 1]; ``raw``: as given, checked at the first step (None: x itself), which gives the
    number of values ``clamped`` (its value without a step)."""
    n = len(x)
    long = dict(dtype=torch.long, device=x.device)
    track = y is not None
    kappa = torch.zeros(n, **long) if track else None
    first_wrong = torch.full((n,), -1, **long) if track else None
    budget = torch.full((n,), early_stop, **long) if early_stop is not None else None
    taken = torch.zeros(n, **long)
    idx = None  # indices of the active samples; None = all of them (no gathering)

    def rows(t):
        return t if idx is None else t[idx]

    for k in range(steps):
        xa = rows(x_adv).detach().requires_grad_(True)
        check = None if k else (x if raw is None else raw,
                                [t for t in (y, target) if t is not None and not t.is_floating_point()])
        out, losses, count = _forward_loss(model, xa, rows(target), loss_fn, logit_scale, check, classify)
        clamped = count if k == 0 else clamped
        moving = None
        if track:
            correct = out.detach().argmax(1) == rows(y)
            fw = rows(first_wrong)
            fw = torch.where((fw == -1) & ~correct, torch.full_like(fw, k), fw)
            if idx is None:
                kappa += correct
                first_wrong = fw
            else:
                kappa[idx] += correct
                first_wrong[idx] = fw
            if budget is not None:
                wrong = ~correct
                b = rows(budget)
                frozen = wrong & (b == 0)
                b = b - (wrong & ~frozen).long()
                if idx is None:
                    budget = b
                else:
                    budget[idx] = b
                moving = ~frozen
        if moving is not None and not bool(moving.any()):
            break  # every active sample froze at this iterate: no gradient needed
        grad = input_gradient(losses, xa, "pgd")
        with torch.no_grad():
            xo, xd = rows(x), xa.detach()
            delta = geometry.project(xd + geometry.step(grad, rows(move_t)) - xo, rows(eps_t))
            new = (xo + delta).clamp_(0, 1)
            if moving is not None:
                new = torch.where(moving.reshape(-1, *([1] * (x.dim() - 1))), new, xd)
            if idx is None:
                x_adv = new
                taken += 1 if moving is None else moving.long()
            else:
                x_adv[idx] = new
                taken[idx] += 1 if moving is None else moving.long()
            if moving is not None and not bool(moving.all()):
                idx = (torch.arange(n, device=x.device) if idx is None else idx)[moving]

    if track and track_final:
        pending = (first_wrong == -1).nonzero().squeeze(1)
        if len(pending):
            with torch.no_grad():
                pred = _logits(forward_logits(model, x_adv[pending], "pgd"), classify).argmax(1)
            first_wrong[pending] = torch.where(pred != y[pending], taken[pending], first_wrong[pending])
    return AttackResult(x_adv=x_adv.detach(), kappa=kappa, first_wrong=first_wrong if track_final else None,
                        steps_taken=taken, clamped=clamped)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor | None = None,
    random_start: str | None = "uniform",
    **kwargs,
) -> AttackResult:
    """Fast adversarial training's FGSM (Wong et al. 2020): uniform start, one signed step of size
    ``step_size`` (default 1.25 eps), projection, clipping. A preset of :func:`pgd` with ``steps=1``;
    other keyword arguments (norm, loss, target, model_mode, generator, ...) are passed on."""
    if step_size is None:
        step_size = 1.25 * eps
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=1, random_start=random_start, **kwargs)
