"""A test hook: die by SIGKILL (or receive another signal) at a named moment of a run, to test that a killed or
stopped run resumes to the same result.

Set ``ADVLAB_CRASH_AT="<point>@<n>"`` and the process sends itself SIGKILL the ``n``-th time (1-based) it passes
``crash_point("<point>")``; with ``"<point>@<n>:SIGINT"`` (or ``:SIGTERM``) it sends that signal instead, as Ctrl-C
or a cluster's pre-emption would at that moment; under torchrun ``ADVLAB_CRASH_RANK=<r>`` limits it to rank r.
The points: ``batch`` (after each training step, before the mid-epoch checkpoint decision), ``validation``
(after the validation attack, before the epoch is logged or saved), ``epoch`` (after the epoch's ``last.pt``
and metrics line, before its mid-epoch checkpoint is removed), ``write <file>`` (inside the atomic writer,
after the temporary file is on disk and before it replaces ``<file>``, e.g. ``write last.pt``) and
``evaluation`` (after each checkpoint's final evaluation, before ``summary.json``). Unset (the normal case), a
point costs one dictionary look-up. Used by ``tests/test_kill_resume.py``; never set it in real runs.
"""
from __future__ import annotations

import os
import signal

ENV = "ADVLAB_CRASH_AT"
RANK_ENV = "ADVLAB_CRASH_RANK"
_passed: dict[str, int] = {}


def crash_point(point: str) -> None:
    """Send this process SIGKILL (or the named signal) if ``ADVLAB_CRASH_AT`` names ``point`` and this is its
    n-th pass."""
    spec = os.environ.get(ENV)
    if not spec or os.environ.get(RANK_ENV, os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return
    where, _, sent = spec.partition(":")
    name, _, count = where.rpartition("@")
    if name != point:
        return
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] == int(count):
        os.kill(os.getpid(), getattr(signal, sent) if sent else signal.SIGKILL)


def passes(point: str) -> int:
    """How many times this process passed ``point`` since :func:`reset` (counted while ``ADVLAB_CRASH_AT`` names
    it: a test counts the steps a resumed run trained with a point it never reaches, e.g. ``batch@1000000``)."""
    return _passed.get(point, 0)


def reset() -> None:
    """Forget the passes counted so far (a test running several runs in one process)."""
    _passed.clear()
