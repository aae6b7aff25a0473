"""The names a report and a comparison write (kept apart from the plotting code, so the command line can
describe them without importing matplotlib)."""
from __future__ import annotations

SECTIONS = ("Status", "Training curves", "Part diagnostics", "Per-class accuracy", "Evaluation", "Sanity checks",
            "Model card", "Data", "Config", "Versions")
"""The second-level headings of every report, in order."""

COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_CURVES = "compare-curves.png"
