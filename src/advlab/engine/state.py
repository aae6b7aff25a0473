"""A run's training state: how far it got, what it logged, its best epoch; what a checkpoint holds to resume.

A checkpoint after epoch e (0-indexed) holds the model (``model``, ``model_spec``), the threat model
(``dataset``, ``eps``, ``norm``), ``epoch`` = e + 1 finished epochs, and to resume exactly: the optimiser and
gradient scaler, the global RNG state, every recipe part's state (per-sample banks, schedules), the history of
logged rows and the best epoch so far; and the run's config (``config``, a plain mapping).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .run import Run

NO_BEST = {"epoch": -1, "val_robust": -1.0, "val_clean": -1.0}


@dataclass
class TrainingState:
    """``epoch``: epochs finished (the next one to train, 0-indexed); ``history``: one logged row per finished
    epoch (``metrics.jsonl``); ``best``: the best epoch so far (1-indexed) and its validation accuracies;
    ``stopped``: why the run ended early, if it did."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: dict(NO_BEST))
    stopped: str | None = None  # why the run stopped before its last epoch (training.stop_on_collapse), or None


def rng_state() -> dict[str, Any]:
    """The global torch RNG state (and every CUDA device's)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s result (tensors a checkpoint loaded onto a GPU carries back to the CPU)."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_payload(run: Run, state: TrainingState) -> dict[str, Any]:
    """Everything a checkpoint holds once ``state.epoch`` epochs have finished."""
    c = run.config
    return {
        "model": run.model.state_dict(), "model_spec": run.model_spec, "dataset": c.data.dataset,
        "eps": c.eps, "norm": c.norm, "epoch": state.epoch,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else {},
        "rng": rng_state(), "parts": {kind: part.state_dict() for kind, part in run.recipe.parts()},
        "history": state.history, "best": dict(state.best), "stopped": state.stopped, "config": c.to_dict(),
    }


def restore(run: Run, checkpoint: dict[str, Any]) -> TrainingState:
    """Load a ``last`` checkpoint into ``run`` (weights, optimiser, scaler, part state, RNG) and return the
    training state it continues from."""
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.scaler and checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
    for kind, part in run.recipe.parts():
        part.load_state_dict(checkpoint["parts"].get(kind, {}))
    set_rng_state(checkpoint["rng"])
    return TrainingState(epoch=int(checkpoint["epoch"]), history=list(checkpoint["history"]),
                         best=dict(checkpoint["best"]), stopped=checkpoint.get("stopped"))
