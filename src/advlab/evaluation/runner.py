"""Running one attack over a dataset in batches: verify every adversarial batch, record per-sample flags."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks.model_output import forward_logits
from ..distributed import Collective
from .result import AttackOutcome
from .suite import EvalAttack
from .threat import ATOL, verify_threat_model


@dataclass
class EvalData:
    """The evaluation set and where to run: float images in [0, 1] (N, ...), int64 labels (N,).

    ``collective``: the processes evaluating together (``advlab.distributed``). With several, the batches
    (the same batches as one process) are dealt round-robin, batch ``j`` to rank ``j % world_size``, and the
    per-point flags gathered back in order, so every rank gets the flags of one process (see
    :func:`batches`).
    """

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    device: torch.device
    progress: bool = True
    collective: Collective = field(default_factory=Collective)

    def subset(self, n: int) -> "EvalData":
        """The first ``n`` points."""
        return EvalData(self.model, self.images[:n], self.labels[:n], self.batch_size, self.device, self.progress,
                        self.collective)

    def batches(self, desc: str, attack: EvalAttack | None = None):
        """(number, x, y) on the device, batch by batch, with a progress bar on stderr.

        With several processes: only this rank's batches when ``attack`` is None (no randomness) or can
        replay the random state of a batch it does not attack (``attack.can_skip``; its ``skip(x, y)`` is
        called for the other ranks' batches, so each batch is attacked with the draws of one process); every
        batch on every rank otherwise (the same result, no speed-up).
        """
        from tqdm.auto import tqdm

        n = len(self.labels)
        c = self.collective
        sharded = c.distributed and (attack is None or getattr(attack, "can_skip", False))
        starts = range(0, n, self.batch_size)
        for j, s in enumerate(tqdm(starts, desc=desc, unit="batch", file=sys.stderr, disable=not self.progress,
                                   leave=False)):
            x, y = self.images[s:s + self.batch_size].to(self.device), self.labels[s:s + self.batch_size].to(self.device)
            if sharded and j % c.world_size != c.rank:
                if attack is not None:
                    attack.skip(x, y)
                continue
            yield j, x, y

    def gather(self, flags: dict[int, torch.Tensor]) -> torch.Tensor:
        """The per-point flags of every batch in order, from ``{batch number: flags}`` of this rank (all
        batches, or with several processes this rank's share; the shares of the others are gathered)."""
        if self.collective.distributed:
            merged: dict[int, torch.Tensor] = {}
            for part in self.collective.all_gather_object(flags):
                merged.update(part)
            flags = merged
        ordered = [flags[j] for j in sorted(flags)]
        return torch.cat(ordered) if ordered else torch.zeros(0, dtype=torch.bool)


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
    flags = {}
    for j, x, y in data.batches("clean"):
        flags[j] = (predict(data.model, x) == y).cpu()
    return AttackOutcome("clean", data.gather(flags), time.perf_counter() - start)


def run_attack(name: str, attack: EvalAttack, data: EvalData, eps: float, norm: str,
               atol: float = ATOL) -> AttackOutcome:
    """Attack every batch, verify it against the threat model, and flag the points still classified correctly."""
    start = time.perf_counter()
    flags, worst = {}, 0.0
    for j, x, y in data.batches(name, attack):
        x_adv = attack(x, y).detach()
        sizes = verify_threat_model(x, x_adv, eps, norm, name, atol=atol)
        worst = max(worst, sizes.max().item() if len(sizes) else 0.0)
        flags[j] = (predict(data.model, x_adv) == y).cpu()
    correct = data.gather(flags)
    if data.collective.distributed:
        worst = max(data.collective.all_gather_object(worst))
    return AttackOutcome(name, correct, time.perf_counter() - start, worst, attack.settings())
