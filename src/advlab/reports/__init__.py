"""Reports of runs: ``advlab report`` (one run: figures, Markdown, self-contained HTML) and ``advlab compare``
(runs grouped over seeds). Reads run directories through :class:`advlab.runs.RunDir` only; nothing below this
package (runs, evaluation, engine, recipes) imports it.

The names below are imported on first use, so the command line (``advlab --help``, ``advlab train``) does
not load the plotting stack.
"""
from __future__ import annotations

import importlib
from typing import Any

from .names import COMPARE_CSV, COMPARE_CURVES, COMPARE_MD, SECTIONS

_LAZY = {
    "Comparison": "compare", "compare_runs": "compare", "not_significant": "compare", "write_comparison": "compare_output",
    "RunRecord": "record", "load_run": "record", "part_groups": "record",
    "ReportFiles": "run_report", "create_report": "run_report", "write_report": "run_report",
}

__all__ = ["SECTIONS", "COMPARE_MD", "COMPARE_CSV", "COMPARE_CURVES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'advlab.reports' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
