"""Checkpoints in the middle of an epoch: every ``checkpoint.every`` (steps or time), and when a signal stops the
run (``engine/interrupt.py``), at the end of the step it arrived in.

Periodic checkpoints are not written after an epoch's last batch (the epoch's own ``last.pt`` follows
validation); a stop is. Under torchrun every rank takes the same decision at the same step: steps are counted
alike on every rank, rank 0's clock decides a checkpoint by time, and a signal any rank received stops all of
them; the ranks agree on the last two every :data:`AGREE_EVERY` steps (one small all-reduce, which waits for the
device), so a stop comes within that many steps. Every rank joins the gathering of the checkpoint's per-rank
state; rank 0 writes it.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..config import checkpoint_interval
from ..runs import MID_EPOCH, RunDir
from .interrupt import RunStopped, StopSignals, resume_command
from .run import Run
from .state import EpochProgress, TrainingState, mid_epoch_payload

AGREE_EVERY = 10  # under torchrun: steps between two agreements on a stop or a timed checkpoint


class MidEpochCheckpoints:
    """Decides after each step whether to write a mid-epoch checkpoint, writes it, and stops the run (raises
    :class:`RunStopped`) when a signal asked for it; ``state``: the run's training state (its history and best
    go into every checkpoint).

    A context manager: inside, SIGINT and SIGTERM are caught (:class:`StopSignals`), and a KeyboardInterrupt (a
    second Ctrl-C) leaves as a :class:`RunStopped` that says the run continues from its last checkpoint.
    """

    def __init__(self, run: Run, state: TrainingState, run_dir: RunDir,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.run, self.state, self.run_dir, self.now = run, state, run_dir, now
        self.signals = StopSignals(announce=run.collective.is_main)
        self.interval = checkpoint_interval(run.config.checkpoint.every)
        self.last_write = now()

    def __enter__(self) -> "MidEpochCheckpoints":
        self.signals.__enter__()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.signals.__exit__(exc_type, exc, tb)
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, RunStopped):  # stopped at once
            raise self.interrupted() from None

    def after_step(self, progress: EpochProgress) -> None:
        """Called after each training step: write a checkpoint when one is due; stop when a signal came."""
        comm = self.run.collective
        b, n = progress.batch, progress.batches
        periodic = self.interval is not None and b < n  # the epoch's own checkpoint follows its last batch
        due = periodic and self.interval[0] == "steps" and (progress.epoch * n + b) % int(self.interval[1]) == 0
        timed = (periodic and self.interval[0] == "seconds" and comm.is_main
                 and self.now() - self.last_write >= self.interval[1])
        stop = self.signals.requested
        if comm.distributed:
            if b % AGREE_EVERY == 0 or b == n:
                flags = comm.all_reduce_sum(torch.tensor([float(stop), float(timed)], device=self.run.device))
                stop, timed = bool(flags[0] > 0), bool(flags[1] > 0)
            else:
                stop = timed = False
        if due or timed or stop:
            self.write(progress)
        if stop:
            comm.barrier()  # the checkpoint is on disk before any rank exits
            e, epochs = progress.epoch + 1, self.run.config.epochs
            raise RunStopped(f"stopped by {self._signal_name()} in epoch {e}/{epochs} after batch {b} of {n}; saved "
                             f"to {self.run_dir.file(MID_EPOCH)}; continue with: {resume_command(self.run_dir.path)}",
                             self.signals.exit_code)

    def write(self, progress: EpochProgress) -> None:
        """Write the mid-epoch checkpoint of ``progress`` (every rank calls it; rank 0 writes)."""
        payload = mid_epoch_payload(self.run, self.state, progress, progress.batches, progress.train_seconds())
        if payload is not None:
            self.run_dir.save_mid_epoch(payload)
        self.last_write = self.now()

    def epoch_done(self) -> None:
        """Called once an epoch's ``last.pt`` is written: its mid-epoch checkpoint goes, the clock restarts, and
        a signal that came during the epoch's validation stops the run here."""
        comm = self.run.collective
        if comm.is_main:
            self.run_dir.remove_mid_epoch()
        self.last_write = self.now()
        stop = self.signals.requested
        if comm.distributed:
            stop = bool(comm.all_reduce_sum(torch.tensor([float(stop)], device=self.run.device))[0] > 0)
        if stop:
            raise RunStopped(f"stopped by {self._signal_name()} after epoch {self.state.epoch}/"
                             f"{self.run.config.epochs}; saved to {self.run_dir.checkpoint_path('last')}; continue "
                             f"with: {resume_command(self.run_dir.path)}", self.signals.exit_code)

    def interrupted(self) -> RunStopped:
        """The error for a run stopped at once (a second Ctrl-C): no new checkpoint was written."""
        where = ("continue from the last one with" if self.run_dir.has_resume_point() else
                 "none was written yet; start again with")
        return RunStopped(f"interrupted in epoch {self.state.epoch + 1}/{self.run.config.epochs} without a new "
                          f"checkpoint; {where}: {resume_command(self.run_dir.path)}")

    def _signal_name(self) -> str:
        return self.signals.name or "a signal on another process"
