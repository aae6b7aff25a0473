"""Device names as config and CLI accept them."""
from __future__ import annotations

import torch

from .errors import ConfigError


def pick_device(name: str, key: str = "device") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else must name a usable device
    (``cpu``, ``cuda``, ``cuda:N``). ConfigError naming ``key`` otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}: invalid value {name!r}; allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: cuda was asked for but no CUDA device is available")
    return device
