"""A run's training state: how far it got, what it logged, its best epoch; what a checkpoint holds to resume.

A checkpoint after epoch e (0-indexed) holds the model (``model``, ``model_spec``), the threat model
(``dataset``, ``eps``, ``norm``), ``epoch`` = e + 1 finished epochs, and to resume exactly: the optimiser and
gradient scaler, the global RNG state, every recipe part's state (per-sample banks, schedules), the history of
logged rows and the best epoch so far; and the run's config (``config``, a plain mapping).

A mid-epoch checkpoint (``mid-epoch.pt``) holds the same at a step boundary of the epoch in progress, plus
``mid_epoch``: that epoch (0-indexed), the batches done of how many, the training seconds so far, and for each
rank (one entry per process) its RNG state, its sums of the epoch so far (loss, correct, seen) and every part's
:meth:`~advlab.recipes.base.Part.epoch_state`. Resuming from it continues the epoch at the next batch without
calling the parts' ``on_epoch_start`` again: their state is the checkpoint's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..seeds import epoch_seed
from .run import Run

NO_BEST = {"epoch": -1, "val_robust": -1.0, "val_clean": -1.0}
RANK_STREAM = 1000  # under torchrun, rank r reseeds its global RNG each epoch from (seed, epoch, this + r)


@dataclass
class EpochProgress:
    """An epoch in progress. ``epoch``: 0-indexed; ``batch``: the batches done, which is the next one to train,
    of ``batches``; this process's sums over them: ``loss_sum`` (float32 tensor on the device: each batch's mean
    loss times its size), ``correct`` (int64 tensor), ``seen`` (samples); ``seconds``: training time spent on
    the epoch before this process (a resumed epoch); ``started``: when this process began training it
    (``time.perf_counter``)."""

    epoch: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    batch: int = 0
    batches: int = 0
    seen: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, epoch: int, device: torch.device) -> "EpochProgress":
        """Epoch ``epoch`` before its first batch."""
        return cls(epoch=epoch, loss_sum=torch.zeros((), device=device),
                   correct=torch.zeros((), device=device, dtype=torch.long))

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """Count one finished batch of ``n`` samples: its mean ``loss`` and the number ``correct``."""
        self.loss_sum += loss.detach() * n
        self.correct += correct
        self.seen += n
        self.batch += 1

    def train_seconds(self) -> float:
        """The epoch's training time so far, earlier processes included."""
        return self.seconds + time.perf_counter() - self.started


@dataclass
class TrainingState:
    """``epoch``: epochs finished (the next one to train, 0-indexed); ``history``: one logged row per finished
    epoch (``metrics.jsonl``); ``best``: the best epoch so far (1-indexed) and its validation accuracies;
    ``progress``: the epoch in progress when resumed from a mid-epoch checkpoint, else None; ``stopped``: why the
    run ended early, if it did."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: dict(NO_BEST))
    progress: EpochProgress | None = None
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


def seed_rank_stream(seed: int, epoch: int, rank: int, batch: int = 0) -> None:
    """Under torchrun: seed this rank's global RNG (random starts, dropout) from (seed, epoch, rank), at the
    start of an epoch (``batch`` 0), the same after a resume."""
    mixed = epoch_seed(seed, epoch, RANK_STREAM + rank)
    torch.manual_seed(mixed if batch == 0 else epoch_seed(mixed, batch, 0))


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


def mid_epoch_payload(run: Run, state: TrainingState, progress: EpochProgress, batches: int,
                      seconds: float) -> dict[str, Any] | None:
    """What a mid-epoch checkpoint holds after ``progress.batch`` of ``batches`` batches of ``progress.epoch``
    (``seconds``: its training time so far). Every rank calls it (each rank's RNG, sums and part epoch state
    are gathered); rank 0 gets the payload, the others None."""
    mine = _to_cpu({"rng": rng_state(), "loss_sum": progress.loss_sum.detach(), "correct": progress.correct,
                    "seen": progress.seen,
                    "parts": {kind: part.epoch_state() for kind, part in run.recipe.parts()}})
    ranks = run.collective.all_gather_object(mine)
    if not run.collective.is_main:
        return None
    payload = checkpoint_payload(run, state)
    payload["mid_epoch"] = {"epoch": progress.epoch, "batch": progress.batch, "batches": batches,
                            "seconds": float(seconds), "ranks": ranks}
    return payload


def restore(run: Run, checkpoint: dict[str, Any]) -> TrainingState:
    """Load a ``last`` or mid-epoch checkpoint into ``run`` (weights, optimiser, scaler, part state, RNG) and
    return the training state it continues from (with ``progress`` for a mid-epoch one)."""
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.scaler and checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
    for kind, part in run.recipe.parts():
        part.load_state_dict(checkpoint["parts"].get(kind, {}))
    set_rng_state(checkpoint["rng"])
    state = TrainingState(epoch=int(checkpoint["epoch"]), history=list(checkpoint["history"]),
                          best=dict(checkpoint["best"]), stopped=checkpoint.get("stopped"))
    if checkpoint.get("mid_epoch"):
        state.progress = _restore_epoch(run, checkpoint["mid_epoch"])
    return state


def _restore_epoch(run: Run, saved: dict[str, Any]) -> EpochProgress:
    """The epoch in progress of a mid-epoch checkpoint, its part state and this rank's RNG restored.

    On as many processes as wrote it, each rank takes its own entry: exact. On another number, every rank takes
    rank 0's part state, rank 0 the sums of all and the others none (the epoch's totals stay right), and each
    rank reseeds its stream from (seed, epoch, rank, batch): the random starts differ from an uninterrupted run.
    """
    comm, epoch, batch = run.collective, int(saved["epoch"]), int(saved["batch"])
    ranks = saved["ranks"]
    same = len(ranks) == comm.world_size
    mine = ranks[comm.rank] if same else ranks[0]
    for kind, part in run.recipe.parts():
        part.load_epoch_state(epoch, mine["parts"].get(kind, {}))
    if same:
        set_rng_state(mine["rng"])
    elif comm.distributed:
        seed_rank_stream(run.config.seed, epoch, comm.rank, batch)
    else:
        set_rng_state(ranks[0]["rng"])
    progress = EpochProgress.start(epoch, run.device)
    progress.batch, progress.seconds = batch, float(saved["seconds"])
    counted = [mine] if same else (ranks if comm.is_main else [])
    for entry in counted:
        progress.loss_sum += entry["loss_sum"].to(run.device, torch.float32)
        progress.correct += entry["correct"].to(run.device, torch.long)
        progress.seen += int(entry["seen"])
    return progress


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor copied to the CPU (what one rank sends another must not name its device)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
