"""A one-step look-ahead of a model's parameters with its own SGD optimiser, differentiable, for any model
(through ``torch.func.functional_call``; no copy of a hard-coded architecture as in CAAT's ``MetaSGD``).

Under torchrun the look-ahead takes the gradient the real (DDP) update takes, that of the global batch's
mean loss: :func:`global_mean_gradient`."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ...distributed import Collective, all_reduce_sum_list
from ...errors import ConfigError


def check_sgd(optimizer: torch.optim.Optimizer | None, who: str) -> None:
    """ConfigError unless ``optimizer`` is SGD (the look-ahead follows SGD's update)."""
    if not isinstance(optimizer, torch.optim.SGD):
        name = type(optimizer).__name__ if optimizer is not None else "none"
        raise ConfigError(f"{who} looks one SGD step ahead and needs optimizer.name=sgd, got {name}")


def sgd_lookahead(model: nn.Module, grads: dict[str, torch.Tensor],
                  optimizer: torch.optim.SGD) -> dict[str, torch.Tensor]:
    """The parameters named in ``grads`` after one step of ``optimizer`` with those gradients (by parameter
    name), as tensors that keep the graph of ``grads`` (for a meta-gradient); the model and optimiser are
    unchanged. Only the parameters in ``grads`` are stepped and returned: pass the trainable ones (a frozen
    parameter, ``requires_grad`` off as under ``model.freeze=encoder``, has no gradient and stays as it is).

    Follows ``torch.optim.SGD`` (and CAAT's ``MetaSGD.meta_step``, xiaolingzhou98/CAAT meta.py lines 21-44):
    g <- g + weight_decay * w; with momentum m, buffer b (the optimiser's, or g on its first step):
    b' = m b + (1 - dampening) g, then g <- g + m b' (nesterov) or g <- b'; w' = w - lr g.

    Raises:
        ConfigError: a name in ``grads`` that is not a parameter of ``model`` or not in ``optimizer``.
    """
    params = dict(model.named_parameters())
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, g in grads.items():
        w = params.get(name)
        if w is None or id(w) not in group_of:
            raise ConfigError(f"the look-ahead steps parameter {name!r}, which the optimiser does not train")
        group = group_of[id(w)]
        lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
        damp, nesterov = group["dampening"], group["nesterov"]
        if wd:
            g = g + wd * w
        if m:
            buf = optimizer.state.get(w, {}).get("momentum_buffer")
            buf = g if buf is None else m * buf + (1 - damp) * g
            g = g + m * buf if nesterov else buf
        out[name] = w - lr * g
    return out


def global_mean_gradient(grads: dict[str, torch.Tensor], local_n: int, global_n: int,
                         collective: Collective) -> dict[str, torch.Tensor]:
    """The gradient the real update uses, for the look-ahead: of the mean loss over the global batch.

    ``grads``: by parameter name, the gradients of the mean loss over this rank's ``local_n`` samples (with
    their graph, ``create_graph``); ``global_n``: the samples of the global batch (every rank's). Under
    torchrun DDP's update is the gradient of the global-batch mean, ``sum_r (n_r / N) g_r``; this returns it
    on every rank (one all-reduce of all the gradients), with the graph of this rank's own term only: the
    other ranks' terms enter as constants, so the sum over ranks of each rank's meta-gradient through it is
    the meta-gradient of one process. For one process ``grads`` unchanged. ValueError if ``local_n`` is
    outside ``1..global_n``.
    """
    if not collective.distributed:
        return grads
    if not 0 < local_n <= global_n:
        raise ValueError(f"local batch {local_n} outside 1..{global_n} (the global batch)")
    share = local_n / global_n
    local = {name: g * share for name, g in grads.items()}
    totals = all_reduce_sum_list(collective, list(local.values()))
    # the value is the sum (exactly: g - g.detach() is 0), the graph that of this rank's own term
    return {name: total + (g - g.detach()) for (name, g), total in zip(local.items(), totals)}


class LookAhead(nn.Module):
    """``model`` run with other parameters (and copies of its buffers, so its running statistics stay)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.params = params
        self.buffers_ = {n: b.clone() for n, b in model.named_buffers()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (self.params, self.buffers_), (x,))
