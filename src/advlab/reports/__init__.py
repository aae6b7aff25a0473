"""Reports of runs: ``advlab report`` (one run: figures, Markdown, self-contained HTML) and ``advlab compare``
(runs grouped over seeds). Reads run directories through :class:`advlab.runs.RunDir` only; nothing below this
package (runs, evaluation, engine, recipes) imports it."""
from __future__ import annotations

from .compare import Comparison, compare_runs, not_significant, write_comparison
from .record import RunRecord, load_run, part_groups
from .report import SECTIONS, ReportFiles, build_report, write_report

__all__ = ["Comparison", "compare_runs", "not_significant", "write_comparison", "RunRecord", "load_run",
           "part_groups", "SECTIONS", "ReportFiles", "build_report", "write_report"]
