"""The whole run's time beside the per-epoch bar: elapsed, and an estimate of what remains.

The estimate is the steps still to train times the mean time of a step, plus the validations still to run
times the mean time of one, both measured in this process (a resumed run times itself afresh). The first step
is not timed (memory allocation, cuDNN's search, compilation); validation counts once one has run. Elapsed
time includes what earlier processes of the run spent (the epochs' ``seconds`` in the history).
"""
from __future__ import annotations

import time
from typing import Callable

from tqdm import tqdm

ESTIMATE_AFTER = 20  # steps timed before the start line gives the run's estimated time


class RunClock:
    """Counts a run's steps and validations and estimates the time left.

    ``total_steps``: the run's training steps (epochs x batches per epoch); ``steps_done``: those trained
    before this process; ``validations_left``: epochs whose validation has not run; ``elapsed_before``:
    seconds spent before this process; ``now``: the clock (seconds; ``time.perf_counter``).
    """

    def __init__(self, total_steps: int, steps_done: int, validations_left: int, elapsed_before: float = 0.0,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.total_steps, self.steps_done = int(total_steps), int(steps_done)
        self.validations_left = int(validations_left)
        self.elapsed_before = float(elapsed_before)
        self.now = now
        self.started = now()
        self._timed_from: float | None = None  # the end of this process's first step
        self._timed_steps = 0
        self._validation_seconds: list[float] = []
        self._untimed = 0.0  # seconds of validation since the first step's end: not step time
        self._announced = False

    def step(self) -> None:
        """One training step finished."""
        self.steps_done += 1
        if self._timed_from is None:
            self._timed_from = self.now()
        else:
            self._timed_steps += 1

    def validation(self, seconds: float) -> None:
        """One epoch's validation finished, taking ``seconds``."""
        self._validation_seconds.append(float(seconds))
        if self._timed_from is not None:
            self._untimed += float(seconds)
        self.validations_left = max(self.validations_left - 1, 0)

    def step_seconds(self) -> float | None:
        """The mean time of a step in this process (validation time excluded), or None before any is timed."""
        if not self._timed_steps or self._timed_from is None:
            return None
        return max(self.now() - self._timed_from - self._untimed, 0.0) / self._timed_steps

    def elapsed(self) -> float:
        """Seconds the run has spent so far (earlier processes included)."""
        return self.elapsed_before + self.now() - self.started

    def remaining(self) -> float | None:
        """Estimated seconds to the end of training (validations included once one has been timed), or None."""
        per_step = self.step_seconds()
        if per_step is None:
            return None
        per_validation = (sum(self._validation_seconds) / len(self._validation_seconds)
                          if self._validation_seconds else 0.0)
        return (self.total_steps - self.steps_done) * per_step + self.validations_left * per_validation

    def text(self) -> str:
        """``elapsed<remaining`` of the run, as tqdm writes times (``1:02:03<3:10:00``; ``?`` before a step is
        timed)."""
        left = self.remaining()
        return f"{tqdm.format_interval(self.elapsed())}<{'?' if left is None else tqdm.format_interval(left)}"

    def start_line(self) -> str | None:
        """Once, after :data:`ESTIMATE_AFTER` timed steps: the line giving the run's estimated time; else None."""
        if self._announced or self._timed_steps < ESTIMATE_AFTER:
            return None
        self._announced = True
        left = self.remaining() or 0.0
        validation = ("" if self._validation_seconds else
                      f" and {self.validations_left} validations, not timed yet")
        return (f"advlab: estimated run time {tqdm.format_interval(self.elapsed() + left)}: about "
                f"{tqdm.format_interval(left)} to go for {self.total_steps - self.steps_done:,} steps at "
                f"{self.step_seconds():.3g} s each (timed over {self._timed_steps}){validation}")
