"""Running one attack over a dataset in batches: verify every adversarial batch, record per-sample flags."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.model_output import forward_logits
from .report import AttackOutcome
from .suite import EvalAttack
from .threat import ATOL, verify_threat_model


@dataclass
class EvalData:
    """The evaluation set and where to run: float images in [0, 1] (N, ...), int64 labels (N,)."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    device: torch.device
    progress: bool = True

    def subset(self, n: int) -> "EvalData":
        """The first ``n`` points."""
        return EvalData(self.model, self.images[:n], self.labels[:n], self.batch_size, self.device, self.progress)

    def batches(self, desc: str):
        """(x, y) on the device, batch by batch, with a progress bar on stderr."""
        from tqdm.auto import tqdm

        n = len(self.labels)
        starts = range(0, n, self.batch_size)
        for s in tqdm(starts, desc=desc, unit="batch", file=sys.stderr, disable=not self.progress, leave=False):
            yield (self.images[s:s + self.batch_size].to(self.device),
                   self.labels[s:s + self.batch_size].to(self.device))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (B,) of a batch x (B, ...) (no grad).

    Raises:
        AdvlabError: the model does not return a float logits tensor (B, C).
    """
    with torch.no_grad():
        return forward_logits(model, x, "evaluate").argmax(1)


def run_clean(data: EvalData) -> AttackOutcome:
    """Clean accuracy flags."""
    start = time.perf_counter()
    flags = []
    for x, y in data.batches("clean"):
        flags.append((predict(data.model, x) == y).cpu())
    return AttackOutcome("clean", torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool),
                         time.perf_counter() - start)


def run_attack(name: str, attack: EvalAttack, data: EvalData, eps: float, norm: str,
               atol: float = ATOL) -> AttackOutcome:
    """Attack every batch, verify it against the threat model, and flag the points still classified correctly."""
    start = time.perf_counter()
    flags, worst = [], 0.0
    for x, y in data.batches(name):
        x_adv = attack(x, y).detach()
        sizes = verify_threat_model(x, x_adv, eps, norm, name, atol=atol)
        worst = max(worst, sizes.max().item() if len(sizes) else 0.0)
        flags.append((predict(data.model, x_adv) == y).cpu())
    correct = torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)
    return AttackOutcome(name, correct, time.perf_counter() - start, worst, attack.settings())
