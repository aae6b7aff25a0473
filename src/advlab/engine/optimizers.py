"""Optimisers by name: ``optimizer.name`` in config, built from the ``optimizer`` section."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..config import OptimizerConfig
from ..errors import ConfigError
from ..registry import Registry

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], OptimizerConfig], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[torch.nn.Parameter], c: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD with momentum, weight decay and optional Nesterov momentum (every official AT code)."""
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable[torch.nn.Parameter], c: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam with L2 weight decay; ``momentum`` is its beta1 (default 0.9, Adam's own; the SSAT code uses 0.8),
    beta2 0.999; ``nesterov`` unused."""
    if c.momentum >= 1:
        raise ConfigError(f"optimizer.momentum: Adam's beta1 must be below 1, got {c.momentum}")
    return torch.optim.Adam(params, lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay)


def create_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser ``config.name`` over ``params``; AdvlabError naming the allowed names otherwise."""
    return OPTIMIZERS.get(config.name)(params, config)
