"""How the training step runs the model: ``torch.compile`` modes and the channels-last memory format.

The trainer keeps the eager model for checkpoints, validation and evaluation (what is reported runs the plain
module) and gives the training step, attack included, the model :func:`step_model` returns. A compiled model
shares its parameters and buffers with the eager one, so the optimiser, the checkpoints and every part that
reads ``env.model`` (CAAT's look-ahead) see the same weights. Before a compiled model trains, :func:`check_compiled`
compares its logits and input gradient with the eager module's on the first batch and stops the run if they
differ (torch 2.13.0's CPU backend returns a zero input gradient for ``small-cnn`` when its parameters require
gradients too, which the attack avoids by freezing them: see benchmarks/README.md).

Measured in ``benchmarks/README.md`` (Engine speed); the choices are config keys ``compile`` and
``channels_last``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import forward_logits
from ..attacks.model_output import input_gradient
from ..attacks.context import eval_mode, no_param_grad
from ..errors import AdvlabError

COMPILE_MODES: dict[str, str | None] = {
    "none": None,                   # eager
    "default": "default",           # torch.compile with inductor: fused kernels
    "reduce-overhead": "reduce-overhead",  # inductor + CUDA graphs: less launch overhead for small models (CUDA)
    "max-autotune": "max-autotune-no-cudagraphs",  # inductor with kernel autotuning; long compile times
}
"""Values of the config key ``compile``: the ``torch.compile`` mode of each (None: no compilation)."""


def step_model(model: nn.Module, compile_mode: str = "none", channels_last: bool = False) -> nn.Module:
    """The module the training step calls: ``model`` itself, or ``torch.compile(model, mode=...)``.

    ``channels_last`` converts ``model``'s parameters and buffers to the channels-last memory format in place
    (the values are unchanged; the inputs must be converted with :func:`as_step_input`). KeyError for a
    ``compile_mode`` that is not in :data:`COMPILE_MODES` (configs are checked against it first).
    """
    mode = COMPILE_MODES[compile_mode]
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if mode is None:
        return model
    return torch.compile(model, mode=mode)


def as_step_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` (B, C, H, W) in the channels-last memory format when asked (same values), else unchanged;
    inputs of other ranks are returned as they are."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||`` in float32 (0 when both are zero, inf when only ``want`` is)."""
    got, want = got.detach().float(), want.detach().float()
    den = want.norm()
    num = (got - want).norm()
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return float(num / den)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of ``a`` and ``b`` flattened, in float32 (0 when either is zero)."""
    a, b = a.detach().flatten().float(), b.detach().flatten().float()
    den = a.norm() * b.norm()
    return float((a @ b) / den) if den > 0 else 0.0


def check_compiled(eager: nn.Module, compiled: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   logits_rtol: float = 1e-2, min_cosine: float = 0.99) -> dict[str, float]:
    """Compare ``compiled`` with the ``eager`` module it wraps on one batch, as the attack runs them (eval mode,
    parameters frozen, no autocast): the logits, and the direction of the gradient of the summed cross-entropy
    with respect to the input (what a sign or normalised step follows). Returns
    ``{"logits_error": relative error, "input_gradient_cosine": cosine similarity}``.

    The tolerances leave room for TF32 convolutions on GPUs (a few percent of relative error in the input
    gradient of a ResNet, cosine above 0.999) and catch a compiler fault (a zero or wrong gradient).
    ``x``: (B, ...) float pixels in [0, 1]; ``y``: (B,) int64 labels.

    Raises:
        AdvlabError: logits further than ``logits_rtol`` or a gradient cosine under ``min_cosine`` (training
            would follow wrong gradients); the message says which and suggests ``compile=none``.
    """
    outs = []
    with eval_mode(eager), no_param_grad(eager), torch.autocast(x.device.type, enabled=False):
        for model in (eager, compiled):
            xa = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                logits = forward_logits(model, xa, "check_compiled")
                grad = input_gradient(F.cross_entropy(logits.float(), y, reduction="none"), xa, "check_compiled")
            outs.append((logits.detach(), grad.detach()))
    found = {"logits_error": relative_error(outs[1][0], outs[0][0]),
             "input_gradient_cosine": cosine(outs[1][1], outs[0][1])}
    problems = []
    if not found["logits_error"] <= logits_rtol:
        problems.append(f"logits relative error {found['logits_error']:.3g} > {logits_rtol}")
    if not found["input_gradient_cosine"] >= min_cosine:
        problems.append(f"input gradient cosine {found['input_gradient_cosine']:.3g} < {min_cosine}")
    if problems:
        raise AdvlabError(f"compile: the compiled model disagrees with the eager one on the first batch "
                          f"({', '.join(problems)}); training would follow wrong gradients. This is a fault of "
                          f"torch.compile (torch {torch.__version__}) for this model and device: use compile=none")
    return found
