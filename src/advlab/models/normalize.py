"""Input normalisation as a layer of the model, so attacks always work in [0, 1] pixel space."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence, Union

import torch
from torch import nn

from ..errors import AdvlabError

Stats = Union[float, Sequence[float]]


def _as_channel_tensor(values: Stats, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.detach().flatten().tolist()
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        floats = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AdvlabError(f"normalize {name} must be a number or a sequence of numbers, got {values!r}") from None
    if not floats or not all(math.isfinite(v) for v in floats):
        raise AdvlabError(f"normalize {name} must be finite and non-empty, got {values!r}")
    return torch.tensor(floats, dtype=torch.float32).view(1, -1, 1, 1)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers (moved by ``.to``, kept in the state dict)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Stats, std: Stats) -> None:
        super().__init__()
        mean_t, std_t = _as_channel_tensor(mean, "mean"), _as_channel_tensor(std, "std")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise AdvlabError(f"normalize mean and std differ in length: {mean_t.numel()} vs {std_t.numel()}")
        if not bool((std_t > 0).all()):
            raise AdvlabError(f"normalize std must be positive, got {std_t.flatten().tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @property
    def num_channels(self) -> int:
        """Channels the statistics are given for (1 means: broadcast to every channel)."""
        return max(self.mean.numel(), self.std.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def with_normalization(model: nn.Module, mean: Stats, std: Stats) -> nn.Sequential:
    """``model`` behind a :class:`Normalize` layer: ``Sequential(normalize=..., model=model)``.

    Works for any ``nn.Module``; the wrapped network stays reachable as ``wrapped.model``.
    """
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"with_normalization needs an nn.Module, got {type(model).__name__}")
    return nn.Sequential(OrderedDict([("normalize", Normalize(mean, std)), ("model", model)]))
