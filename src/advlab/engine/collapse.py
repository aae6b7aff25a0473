"""Catastrophic overfitting: a single-step run's robustness collapsing within an epoch, told from its log.

Wong et al. (ICLR 2020) and Andriushchenko & Flammarion (NeurIPS 2020) describe the failure of FGSM training:
within an epoch, robust accuracy under a multi-step attack (PGD) falls to near zero while the accuracy on the
single-step training examples rises, because the model learns to defeat the one step it is trained against.
advlab's per-epoch validation attacks with the reported attack (``validation.attack``, PGD-20), so the rule
reads the log:

    epoch e has **collapsed** when its validation robust accuracy is below ``collapse_ratio`` times the best
    validation robust accuracy of the epochs before it, while its training accuracy is above the previous
    epoch's.

The first epoch never collapses (nothing to compare with). With ``training.stop_on_collapse`` the run stops
after that epoch, its best checkpoint (chosen before the collapse) kept; otherwise the epoch's log line and the
summary say so and the run goes on.
"""
from __future__ import annotations

from typing import Any


def collapsed(history: list[dict[str, Any]], ratio: float) -> str | None:
    """Why the last epoch of ``history`` (rows of ``metrics.jsonl``: ``val_robust``, ``train_acc``, ``epoch``)
    collapsed, in one line, or None when it did not. ``ratio`` in (0, 1]: the fraction of the best earlier
    validation robust accuracy below which robustness has collapsed."""
    if len(history) < 2:
        return None
    last, before = history[-1], history[:-1]
    best = max(row["val_robust"] for row in before)
    previous = before[-1]
    if best > 0 and last["val_robust"] < ratio * best and last["train_acc"] > previous["train_acc"]:
        return (f"catastrophic overfitting in epoch {last['epoch']}: validation robust accuracy "
                f"{last['val_robust']:.3f} fell below {ratio:g} x its best {best:.3f} while the training accuracy "
                f"rose from {previous['train_acc']:.3f} to {last['train_acc']:.3f}")
    return None
