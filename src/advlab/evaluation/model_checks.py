"""Checks of a model before it is attacked: the pitfalls that make a robustness number meaningless.

The field keeps hitting the same ones (fra31/auto-attack#46, #54, #74, #83; RobustBench#105): a model left in
train mode (dropout on, batch norm updating), a randomised forward pass (AutoAttack's standard version assumes a
deterministic model; its ``rand`` version averages gradients over draws, EOT), probabilities instead of logits
(a softmax inside flattens the gradients), and inputs the model does not expect (a wrong shape, or pixels in
another range or normalisation). :func:`check_model` looks at each on a few of the evaluation's points, before
any attack, and returns one entry per check: ``{name, status, message}`` with status ``passed``, ``flagged``
(the evaluation runs, and the flag is reported beside its numbers) or ``failed`` (the model cannot be
evaluated). It changes nothing: every submodule's train/eval flag is restored, and no parameter is touched.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.context import eval_mode
from ..errors import AdvlabError
from ..models.external import describe_output

CHECK_POINTS = 32
"""Points of the evaluation set the checks look at."""
DETERMINISM_ATOL = 1e-5
"""Two forward passes differing by more than this (relative to the largest logit, at least 1) are flagged."""
PROBABILITY_ATOL = 1e-4
"""Rows in [0, 1] whose sums are within this of 1 are flagged as probabilities."""
CONSTANT_MIN_POINTS = 10
"""A single predicted class over at least this many points is flagged."""

STATUSES = ("passed", "flagged", "failed")


def _entry(name: str, status: str, message: str, **details: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "status": status, "message": message}
    if details:
        out["details"] = details
    return out


def _training_modules(model: nn.Module) -> list[str]:
    return [name or type(model).__name__ for name, m in model.named_modules() if m.training]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_model(model: nn.Module, images: torch.Tensor, num_classes: int | None = None,
                device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """The pre-attack checks of ``model`` on the first :data:`CHECK_POINTS` of ``images``.

    Args:
        model: the model as it will be handed to ``advlab.evaluate`` (its train/eval flags are read, then
            restored).
        images: the evaluation's images, uint8 (divided by 255) or float in [0, 1], (N, C, H, W).
        num_classes: the dataset's number of classes (the logits' width must cover them); None: not checked.
        device: where to run (None: the model's).

    Returns:
        ``[{name, status, message[, details]}]`` for ``eval-mode``, ``input``, ``deterministic``, ``logits``,
        ``predictions`` (see the module docs); after a failed ``input`` the later checks are ``not run``.
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    x = images[:CHECK_POINTS].to(device)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    checks = []
    handed = _training_modules(model)
    with eval_mode(model):
        stuck = _training_modules(model)
        if stuck:
            checks.append(_entry("eval-mode", "flagged",
                                 f"{len(stuck)} modules stay in train mode after model.eval() ({_shown(stuck)}): "
                                 "dropout or batch norm keep training behaviour while attacked; fix their train()",
                                 modules=stuck[:20]))
        elif handed:
            checks.append(_entry("eval-mode", "flagged",
                                 f"the model was handed in train mode ({len(handed)} modules, e.g. "
                                 f"{_shown(handed)}); evaluated in eval mode, as every evaluation here is",
                                 modules=handed[:20]))
        else:
            checks.append(_entry("eval-mode", "passed", "in eval mode"))
        with torch.no_grad():
            try:
                first = model(x)
            except Exception as exc:  # the model's own failure on the dataset's images: reported, not raised
                line = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
                checks.append(_entry("input", "failed", f"cannot process the dataset's images "
                                     f"{tuple(x.shape[1:])} in [0, 1]: {type(exc).__name__}: {line}"))
                return checks + [_entry(n, "not run", "the model cannot process the images")
                                 for n in ("deterministic", "logits", "predictions")]
            problem = _input_problem(first, len(x), num_classes)
            if problem:
                checks.append(_entry("input", "failed", problem))
                return checks + [_entry(n, "not run", "the model's output is not logits (B, C)")
                                 for n in ("deterministic", "logits", "predictions")]
            checks.append(_entry("input", "passed", f"takes {tuple(x.shape[1:])} pixels in [0, 1], returns "
                                 f"{tuple(first.shape)}"))
            second = model(x)
        checks.append(_determinism(first.float(), second.float()))
        checks.append(_logits(first.float()))
        checks.append(_predictions(first.float()))
    return checks


def _input_problem(out: Any, n: int, num_classes: int | None) -> str | None:
    if not torch.is_tensor(out):
        return (f"returned {describe_output(out)}, not a logits tensor: select the logits (model.output, "
                "advlab eval --output)")
    if out.dim() != 2 or out.shape[0] != n:
        return f"returned shape {tuple(out.shape)} for {n} images, expected logits ({n}, classes)"
    if num_classes is not None and out.shape[1] < num_classes:
        return f"returned {out.shape[1]} logits per image, the dataset has {num_classes} classes"
    if not bool(torch.isfinite(out).all()):
        return "returned non-finite outputs (NaN or inf) on pixels in [0, 1]: check the input range"
    return None


def _determinism(first: torch.Tensor, second: torch.Tensor) -> dict[str, Any]:
    diff = float((first - second).abs().max())
    scale = max(1.0, float(first.abs().max()))
    if diff > DETERMINISM_ATOL * scale:
        return _entry("deterministic", "flagged",
                      f"two forward passes of the same images differ by up to {diff:.3g}: the model is randomised, "
                      "and AutoAttack's standard version assumes a deterministic one; evaluate with "
                      "--autoattack-version rand (APGD with EOT over 20 draws)", max_difference=diff)
    return _entry("deterministic", "passed", "two forward passes are equal", max_difference=diff)


def _logits(out: torch.Tensor) -> dict[str, Any]:
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    sums = out.sum(1)
    if in_unit and bool(((sums - 1).abs() <= PROBABILITY_ATOL).all()):
        return _entry("logits", "flagged",
                      "the outputs are probabilities (each row in [0, 1] sums to 1): a softmax inside the model "
                      "flattens the gradients the attacks follow; return logits (or log-probabilities)")
    return _entry("logits", "passed", "the outputs are not probabilities")


def _predictions(out: torch.Tensor) -> dict[str, Any]:
    predicted = out.argmax(1)
    if len(predicted) >= CONSTANT_MIN_POINTS and bool((predicted == predicted[0]).all()):
        return _entry("predictions", "flagged",
                      f"predicts class {int(predicted[0])} for all {len(predicted)} points checked: the model may "
                      "expect another input range or normalisation (model.normalize, advlab eval --normalize)")
    return _entry("predictions", "passed", f"{int(predicted.unique().numel())} classes predicted over "
                  f"{len(predicted)} points")


def check_statuses(checks: list[dict[str, Any]]) -> None:
    """AdvlabError naming the first failed check (the model cannot be evaluated)."""
    for check in checks:
        if check["status"] == "failed":
            raise AdvlabError(f"model check {check['name']}: {check['message']}")
