"""A one-step look-ahead of a model's parameters with its own SGD optimiser, differentiable, for any model
(through ``torch.func.functional_call``; no copy of a hard-coded architecture as in CAAT's ``MetaSGD``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ...errors import ConfigError


def check_sgd(optimizer: torch.optim.Optimizer | None, who: str) -> None:
    """ConfigError unless ``optimizer`` is SGD (the look-ahead follows SGD's update)."""
    if not isinstance(optimizer, torch.optim.SGD):
        name = type(optimizer).__name__ if optimizer is not None else "none"
        raise ConfigError(f"{who} looks one SGD step ahead and needs optimizer.name=sgd, got {name}")


def sgd_lookahead(model: nn.Module, grads: dict[str, torch.Tensor],
                  optimizer: torch.optim.SGD) -> dict[str, torch.Tensor]:
    """The parameters after one step of ``optimizer`` with gradients ``grads`` (by parameter name), as
    tensors that keep the graph of ``grads`` (for a meta-gradient); the model and optimiser are unchanged.

    Follows ``torch.optim.SGD``: g <- g + weight_decay * w; with momentum m, buffer b (the optimiser's, or g
    on its first step): b' = m b + (1 - dampening) g, then g <- g + m b' (nesterov) or g <- b'; w' = w - lr g.
    """
    params = dict(model.named_parameters())
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, w in params.items():
        g = grads[name]
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


class LookAhead(nn.Module):
    """``model`` run with other parameters (and copies of its buffers, so its running statistics stay)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.params = params
        self.buffers_ = {n: b.clone() for n, b in model.named_buffers()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (self.params, self.buffers_), (x,))
