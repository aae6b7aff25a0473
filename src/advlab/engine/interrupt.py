"""Stopping a run on a signal without losing it: Ctrl-C (SIGINT) or SIGTERM (a cluster's pre-emption).

While a run trains, :class:`StopSignals` turns the first SIGINT or SIGTERM into a request: the training loop
sees it at the end of the current step (never in the middle of a write), writes a mid-epoch checkpoint and
raises :class:`RunStopped`, whose message is the command that continues the run. A second Ctrl-C stops at once,
without a new checkpoint (the run then continues from its last one).
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(KeyboardInterrupt):
    """A run stopped before its end on a signal (or a second Ctrl-C); ``str()`` says where and how to continue.
    ``exit_code``: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), what a shell reports for a
    process ended by that signal. A KeyboardInterrupt, so ``except Exception`` does not swallow it."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resume_command(run_dir: str | Path) -> str:
    """The command line that continues the run in ``run_dir``."""
    return f"advlab train --resume {shlex.quote(str(run_dir))}"


class StopSignals:
    """A context manager: while inside, the first SIGINT or SIGTERM is recorded (:attr:`signum`) instead of
    ending the process, and a note is printed to stderr (``announce``); a second SIGINT raises
    KeyboardInterrupt. Outside the main thread (where Python cannot set handlers) it records nothing. The
    previous handlers are restored on exit."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The recorded signal's name (``SIGINT``, ``SIGTERM``), or an empty string."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        if self.announce:  # os.write: a handler must not re-enter a buffered stream that may be mid-print
            note = (f"\nadvlab: {self.name}: stopping at the end of this step, after writing a checkpoint "
                    "(Ctrl-C again to stop at once)\n")
            try:
                os.write(sys.stderr.fileno(), note.encode())
            except (OSError, ValueError, AttributeError):  # a stderr without a file (captured): no note
                pass

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
