"""CAAT's meta-network (xiaolingzhou98/CAAT MLP.py ``MLP(in_size=6, hidden_size=100, num_layers=1)``)."""
from __future__ import annotations

import torch
from torch import nn


class MetaNet(nn.Module):
    """Batch norm on the features, ``features -> hidden`` with ReLU, ``hidden -> 2``, softmax of logits /
    ``temperature``: (B, features) -> (B, 2) weights (a_i, b_i) with a_i + b_i = 1. The code's temperature
    0.001 makes them nearly one-hot. Kept in train mode, as in the code (batch statistics)."""

    def __init__(self, features: int = 6, hidden: int = 100, temperature: float = 0.001) -> None:
        super().__init__()
        self.temperature = temperature
        self.net = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.net(features) / self.temperature).softmax(1)
