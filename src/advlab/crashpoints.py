"""A test hook: die by SIGKILL at a named moment of a run, to test that a killed run resumes to the same result.

Set ``ADVLAB_CRASH_AT="<point>@<n>"`` and the process sends itself SIGKILL the ``n``-th time (1-based) it passes
``crash_point("<point>")``. The points: ``batch`` (after each training step), ``validation`` (after the
validation attack, before the epoch is logged or saved), ``write <file>`` (inside the atomic writer, after the
temporary file is on disk and before it replaces ``<file>``, e.g. ``write last.pt``) and ``evaluation`` (after
each checkpoint's final evaluation, before ``summary.json``). Unset (the normal case), a point costs one
dictionary look-up. Used by ``tests/test_kill_resume.py``; never set it in real runs.
"""
from __future__ import annotations

import os
import signal

ENV = "ADVLAB_CRASH_AT"
_passed: dict[str, int] = {}


def crash_point(point: str) -> None:
    """SIGKILL this process if ``ADVLAB_CRASH_AT`` names ``point`` and this is its n-th pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, count = spec.rpartition("@")
    if name != point:
        return
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
