"""A per-sample soft-label bank keyed by dataset index (shared by SGLR and self-adaptive training).

The bank is an ``N x C`` float32 tensor on the training device. A row starts as the one-hot vector of
its sample's given label the first time the sample is seen (``record``), and moves by an exponential
moving average of predictions (``update``). The given labels are kept beside it, so the bank can say
how far the soft labels have drifted from them.
"""
from __future__ import annotations

from typing import Any

import torch

from ...epochs import whole_epoch_of
from ...errors import AdvlabError
from ..base import RecipeEnv

# Start of label refinement when the schedule has no step decay: the fraction of the epochs at which
# SGLR's official scripts start (epoch 90 of 200).
FALLBACK_START_FRACTION = 0.45


def resolve_start_epoch(start_epoch: float | None, env: RecipeEnv) -> int:
    """The 0-indexed epoch from which soft labels are used.

    ``None``: one epoch before the first learning-rate decay (``env.first_decay_epoch - 1``, at least 0),
    or ``round(0.45 * epochs)`` when the schedule has no step decay. A value below 1 is a fraction of the
    epochs; a value of 1 or more is an epoch number (0-indexed) and must be a whole number.
    """
    if start_epoch is None:
        if env.first_decay_epoch is not None:
            return max(int(env.first_decay_epoch) - 1, 0)
        return int(round(FALLBACK_START_FRACTION * env.epochs))
    return whole_epoch_of(start_epoch, env.epochs, "labels.start_epoch")


class SoftLabelBank:
    """Soft labels of every training sample, updated in place by index.

    ``targets``: (N, C) float32, a row is one-hot of the given label from its first ``record`` on (rows
    never seen are zero). ``given``: (N,) int64, the given label of each row (-1 until seen).
    ``touched``: (N,) bool, the rows updated since the last ``start_epoch()`` (for diagnostics).
    """

    def __init__(self, num_samples: int, num_classes: int, device: torch.device | str) -> None:
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.targets = torch.zeros(num_samples, num_classes, dtype=torch.float32, device=device)
        self.given = torch.full((num_samples,), -1, dtype=torch.int64, device=device)
        self.touched = torch.zeros(num_samples, dtype=torch.bool, device=device)

    # ----------------------------------------------------------------------------------------------
    def record(self, index: torch.Tensor, y: torch.Tensor) -> None:
        """Remember the given labels ``y`` of rows ``index``; rows seen for the first time become one-hot.

        Runs without a host synchronisation (no boolean indexing), so it is cheap to call every step.
        """
        index = index.to(self.given.device, torch.long)
        y = y.to(self.given.device, torch.long)
        old = self.given[index]
        new = old < 0
        self.given[index] = torch.where(new, y, old)
        one_hot = torch.nn.functional.one_hot(y, self.num_classes).to(self.targets.dtype)
        self.targets[index] = torch.where(new[:, None], one_hot, self.targets[index])

    def update(self, index: torch.Tensor, q: torch.Tensor, momentum: float) -> torch.Tensor:
        """``S[index] <- momentum * S[index] + (1 - momentum) * q``; returns the updated rows (a copy).

        ``q`` (B, C) is detached and cast to float32. Indices must be distinct within one call.
        """
        index = index.to(self.targets.device, torch.long)
        rows = momentum * self.targets[index] + (1.0 - momentum) * q.detach().to(self.targets.dtype)
        self.targets[index] = rows
        self.touched[index] = True
        return rows

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """A copy of the rows ``index``."""
        return self.targets[index.to(self.targets.device, torch.long)]

    def one_hot_given(self, index: torch.Tensor) -> torch.Tensor:
        """One-hot vectors of the recorded given labels of rows ``index`` (rows must have been recorded)."""
        given = self.given[index.to(self.given.device, torch.long)]
        return torch.nn.functional.one_hot(given.clamp_min(0), self.num_classes).to(self.targets.dtype)

    # ----------------------------------------------------------------------------------------------
    def start_epoch(self) -> None:
        """Forget which rows were updated (called at the start of every epoch)."""
        self.touched.zero_()

    def diagnostics(self) -> dict[str, float]:
        """Statistics of the rows updated since ``start_epoch()`` (one host synchronisation).

        ``labels_updated``: how many rows were updated; ``labels_given_mass``: mean weight the soft labels
        put on the given class; ``labels_flipped``: fraction whose top class is not the given class;
        ``labels_confidence``: mean largest weight. With no row updated the soft labels are the hard
        labels, so the numbers are 1, 0 and 1.
        """
        mask = self.touched & (self.given >= 0)
        n = int(mask.sum())
        if n == 0:
            return {"labels_updated": 0, "labels_given_mass": 1.0, "labels_flipped": 0.0,
                    "labels_confidence": 1.0}
        rows, given = self.targets[mask], self.given[mask]
        mass = rows.gather(1, given[:, None]).squeeze(1)
        return {
            "labels_updated": n,
            "labels_given_mass": mass.mean().item(),
            "labels_flipped": (rows.argmax(1) != given).float().mean().item(),
            "labels_confidence": rows.max(1).values.mean().item(),
        }

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The bank and the given labels, copied to the CPU (the checkpoint does not alias live state)."""
        return {"targets": self.targets.detach().to("cpu", copy=True),
                "given": self.given.detach().to("cpu", copy=True)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output bit for bit; an empty mapping leaves the bank as it is."""
        if not state:
            return
        targets, given = state["targets"], state["given"]
        if tuple(targets.shape) != tuple(self.targets.shape) or tuple(given.shape) != tuple(self.given.shape):
            raise AdvlabError(
                f"soft-label bank in the checkpoint has shape {tuple(targets.shape)}, this run needs "
                f"{tuple(self.targets.shape)} (training-set size x classes); was data.train_size changed?")
        self.targets.copy_(targets.to(self.targets.dtype))
        self.given.copy_(given.to(self.given.dtype))
