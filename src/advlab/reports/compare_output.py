"""The outputs of ``advlab compare``: ``compare.md`` (one table, accuracies in %), ``compare.csv`` (one line per
group, checkpoint and metric; accuracies as fractions in [0, 1]) and ``compare-curves.png``, written from a
:class:`advlab.reports.compare.Comparison` (how runs are grouped and what is compared: that module's docs)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from ..errors import AdvlabError
from ..runs import write_atomic
from . import figures
from .compare import MIXED, Comparison, Group, column_name, compare_runs, not_significant
from .names import COMPARE_CSV, COMPARE_CURVES, COMPARE_MD


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _cell(comparison: Comparison, group: Group, column: tuple[str, str]) -> str:
    reference = comparison.groups[0]
    if comparison.evaluations.get((group.name, column)) == MIXED:
        return MIXED
    stat = group.stats.get(column)
    if stat is None:
        return "-"
    text = _pct(stat.mean) + (f" ± {_pct(stat.sd)}" if stat.sd is not None else "")
    if group is not reference and column in reference.stats:
        if not comparison.comparable(group, column):
            return text + " (not compared: evaluated differently)"
        ref = reference.stats[column]
        diff = stat.mean - ref.mean
        verdict = not_significant(stat, ref)
        mark = {True: ", n.s.", False: "", None: ", no spread"}[verdict]
        text += f" ({'+' if diff >= 0 else ''}{_pct(diff)}{mark})"
    return text


def markdown(comparison: Comparison) -> str:
    """The comparison as one Markdown table (accuracies in %, mean ± sample standard deviation over runs)."""
    groups = comparison.groups
    reference = groups[0]
    by = comparison.group_by or "run"
    lines = [f"# Comparison of {sum(len(g.records) for g in groups)} runs by {by}", "",
             "Accuracies in % on each run's test points, mean ± sample standard deviation over the runs of a "
             f"group (seeds). In brackets: the difference from the first group ({reference.name}); `n.s.` (not "
             "significant) where it is no larger than the sum of the two groups' standard deviations, `no spread` "
             "where a group has one run. A group holds runs that differ only in their seed; a difference is given "
             "only between accuracies measured alike (the same points, and for attacks and robust the same eps, "
             "norm and attack settings). Best is chosen on the validation split; gap = best robust - last robust.",
             ""]
    headers = [by, "runs", "seeds", *(column_name(c) for c in comparison.columns)]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for group in groups:
        cells = [group.name, str(len(group.records)), ", ".join(str(s) for s in group.seeds),
                 *(_cell(comparison, group, c) for c in comparison.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    attack_info = _attack_versions(comparison)
    if attack_info:
        lines += ["", "Attacks: " + "; ".join(attack_info) + "."]
    if comparison.notes:
        lines += ["", "Like with like:"] + [f"- {n}" for n in comparison.notes]
    if comparison.problems:
        lines += ["", "Not in the table:"] + [f"- {p}" for p in comparison.problems]
    lines += ["", f"![validation curves]({COMPARE_CURVES})", ""]
    return "\n".join(lines)


def _attack_versions(comparison: Comparison) -> list[str]:
    seen = []
    for group in comparison.groups:
        for record in group.records:
            for entry in record.evaluated().values():
                aa = (entry.get("attacks") or {}).get("autoattack")
                if aa:
                    text = f"autoattack = AutoAttack version {aa.get('version')} ({aa.get('package')})"
                    if text not in seen:
                        seen.append(text)
    return seen


def csv_text(comparison: Comparison) -> str:
    """One line per group, checkpoint and metric: group, runs, seeds, checkpoint, metric, mean, sd,
    diff_vs_reference, not_significant, comparable (measured as the reference's was: true / false) (each empty
    where undefined: the reference, a column the reference lacks, and diff and significance where not
    comparable); accuracies as fractions. A column whose runs in the group were evaluated differently has no
    line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "runs", "seeds", "checkpoint", "metric", "mean", "sd", "diff_vs_reference",
                     "not_significant", "comparable"])
    reference = comparison.groups[0]
    for group in comparison.groups:
        for column in comparison.columns:
            stat = group.stats.get(column)
            if stat is None:
                continue
            ref = reference.stats.get(column)
            versus = group is not reference and ref is not None
            like = versus and comparison.comparable(group, column)
            diff = repr(stat.mean - ref.mean) if like else ""
            verdict = not_significant(stat, ref) if like else None
            writer.writerow([group.name, len(group.records), " ".join(str(s) for s in group.seeds), column[0],
                             column[1], repr(stat.mean), "" if stat.sd is None else repr(stat.sd), diff,
                             "" if verdict is None else str(verdict).lower(), str(like).lower() if versus else ""])
    return buffer.getvalue()


def write_comparison(paths: Sequence[str | Path], out: str | Path, group_by: str | None = None,
                     progress: bool = False) -> dict[str, Path]:
    """Compare the runs at ``paths`` (see :func:`compare_runs`) and write ``compare.md``, ``compare.csv`` and
    ``compare-curves.png`` into the folder ``out``; returns their paths by kind (md, csv, png)."""
    comparison = compare_runs(paths, group_by, progress=progress)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AdvlabError(f"--out {out} is a file; give a folder")
    curves = {g.name: [r.rows for r in g.records] for g in comparison.groups}
    written = {"md": out / COMPARE_MD, "csv": out / COMPARE_CSV, "png": out / COMPARE_CURVES}
    write_atomic(written["png"], figures.validation_curves(curves))
    write_atomic(written["md"], markdown(comparison))
    write_atomic(written["csv"], csv_text(comparison))
    return written
