"""``advlab report RUN`` and ``advlab compare RUN...``: the command lines of :mod:`advlab.reports`."""
from __future__ import annotations

import argparse
import sys

from .names import COMPARE_CSV, COMPARE_CURVES, COMPARE_MD, SECTIONS


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a run's report: figures, report.md and a self-contained report.html",
        description="Read a run directory and write into it report.md, report.html (figures embedded, one file to "
                    "share) and the PNG figures under report/. Sections: " + ", ".join(SECTIONS) + ". The parts' "
                    "diagnostics are found in metrics.jsonl (every column the engine does not write, grouped by "
                    "its prefix such as gair_ or noise_). A run that was killed, not evaluated or has torn files "
                    "still gets a report that says what is missing.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run directory (as written by `advlab train`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no list of written files")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from .run_report import write_report  # the plotting stack is imported only when a report is made

    files = write_report(args.run_dir, progress=not args.quiet)
    if not args.quiet:
        for problem in files.problems:
            print(f"note: {problem}", file=sys.stderr)
        print(f"wrote {files.markdown}, {files.html} and {len(files.figures)} figure(s)")
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare runs: mean and spread over seeds, significance, overlaid validation curves",
        description="One table of best and last checkpoints (clean, each attack, robust = per-sample AND) and the "
                    "best-to-last robust gap, per group of runs: mean and sample standard deviation over the runs "
                    "of a group (seeds). The first group is the reference; a difference from it no larger than the "
                    "sum of the two groups' standard deviations is marked n.s. (not significant; a rule of thumb, "
                    "not a test). A group holds runs that differ only in their seed (runs of one --group-by value "
                    "that differ in another config key are split by it, named beside the table); a difference is "
                    "given only between accuracies measured alike (the same points; for attacks and robust "
                    "accuracy the same eps, norm and attack settings), otherwise said beside the table. "
                    f"Writes {COMPARE_MD}, {COMPARE_CSV} (accuracies as fractions) and "
                    f"{COMPARE_CURVES} into --out.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--group-by", metavar="KEY",
                   help="config key whose value groups the runs, e.g. preset or model.activation (dotted); "
                        "default: each run its own group")
    p.add_argument("--out", default="compare", help="folder for the outputs (default: ./compare)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table printed")
    p.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from .compare_output import write_comparison  # the plotting stack is imported only when a comparison is made

    written = write_comparison(args.runs, args.out, group_by=args.group_by, progress=not args.quiet)
    if not args.quiet:
        print(written["md"].read_text())
        print(f"wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return 0
