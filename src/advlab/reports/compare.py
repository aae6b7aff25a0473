"""``advlab compare RUN...``: runs side by side, grouped (e.g. by preset) with mean and spread over seeds.

For each group and each evaluated checkpoint (best, last): clean accuracy, each attack, robust (the per-sample
AND) and the best-to-last gap of robust accuracy (best robust - last robust, from the same run).

Spread and significance, as used here:
- the spread of a group is the sample standard deviation over its runs (denominator n - 1); a group of one
  run has no spread;
- the first group (in the order the runs are given) is the reference; every other group's difference is its
  mean minus the reference's mean;
- a difference is marked **not significant** (``n.s.``) when it is no larger in size than the sum of the two
  groups' spreads (``|mean_a - mean_b| <= sd_a + sd_b``: the mean +- one standard deviation intervals
  overlap or touch; two groups equal to the last digit are n.s. even with zero spread). This is a rule of thumb for a few seeds, not a statistical test: a difference that passes it may
  still be chance. Without a spread in both groups no mark is given (``no spread``).

Outputs: ``compare.md`` (one table, accuracies in %), ``compare.csv`` (one line per group, checkpoint and
metric; accuracies as fractions in [0, 1]) and ``compare-curves.png`` (validation clean and robust accuracy of
each group over epochs, overlaid).
"""
from __future__ import annotations

import csv
import io
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..errors import AdvlabError
from ..runs import CHECKPOINT_NAMES, write_atomic
from . import figures
from .names import COMPARE_CSV, COMPARE_CURVES, COMPARE_MD
from .record import RunRecord, load_run

GAP = "gap"  # best robust - last robust


@dataclass
class Stat:
    """Mean and sample standard deviation (None for a single value) of one metric over a group's runs."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


def not_significant(a: Stat, b: Stat) -> bool | None:
    """True when ``|a.mean - b.mean| <= a.sd + b.sd`` (the difference is within the spreads), False when it is
    not, None when either group has no spread (one run)."""
    if a.sd is None or b.sd is None:
        return None
    return abs(a.mean - b.mean) <= a.sd + b.sd


@dataclass
class Group:
    name: str
    records: list[RunRecord]
    stats: dict[tuple[str, str], Stat] = field(default_factory=dict)  # (checkpoint or "gap", metric) -> Stat

    @property
    def seeds(self) -> list[Any]:
        return [r.setting("seed") for r in self.records]


@dataclass
class Comparison:
    """Groups in order (the first is the reference) and the metric columns: ``(checkpoint, metric)`` pairs,
    checkpoint in ``best``/``last`` (or ``gap`` for the best-to-last robust gap)."""

    groups: list[Group]
    columns: list[tuple[str, str]]
    group_by: str | None
    problems: list[str]


def run_metrics(record: RunRecord) -> dict[tuple[str, str], float]:
    """One run's numbers (fractions): ``(checkpoint, "clean"|<attack>|"robust")`` and ``("gap", "robust")``."""
    out: dict[tuple[str, str], float] = {}
    for which, entry in record.evaluated().items():
        out[(which, "clean")] = float(entry["clean"]["acc"])
        for name, attack in (entry.get("attacks") or {}).items():
            if isinstance(attack, dict) and isinstance(attack.get("acc"), (int, float)):
                out[(which, name)] = float(attack["acc"])
        if isinstance((entry.get("robust") or {}).get("acc"), (int, float)):
            out[(which, "robust")] = float(entry["robust"]["acc"])
    if ("best", "robust") in out and ("last", "robust") in out:
        out[(GAP, "robust")] = out[("best", "robust")] - out[("last", "robust")]
    return out


def compare_runs(paths: Sequence[str | Path], group_by: str | None = None, progress: bool = False) -> Comparison:
    """Read the runs at ``paths`` and group them by the config key ``group_by`` (dotted, e.g. ``preset`` or
    ``model.activation``; None: each run its own group). AdvlabError if no path is given or one is not a
    folder, or one is given twice; runs without evaluation join the curves and are named in ``problems``."""
    if not paths:
        raise AdvlabError("compare needs at least one run directory")
    seen = [Path(p).resolve() for p in paths]
    twice = sorted({str(p) for p in paths if seen.count(Path(p).resolve()) > 1})
    if twice:
        raise AdvlabError(f"run given more than once: {', '.join(twice)} (it would count as two seeds)")
    records = [load_run(p) for p in tqdm(paths, desc="reading runs", disable=not progress, file=sys.stderr,
                                         leave=False)]
    groups: dict[str, Group] = {}
    problems = []
    for record in records:
        if group_by:
            value = record.setting(group_by)
            if value is None:
                problems.append(f"{record.run.path}: no config value {group_by!r} (grouped as 'unknown')")
            key = "unknown" if value is None else str(value)
        else:
            key = str(record.run.path)
        groups.setdefault(key, Group(key, [])).records.append(record)
        if not record.evaluated():
            problems.append(f"{record.run.path}: not evaluated (no summary.json), only in the curves")
    columns: list[tuple[str, str]] = []
    for group in groups.values():
        values: dict[tuple[str, str], list[float]] = {}
        for record in group.records:
            for key, value in run_metrics(record).items():
                values.setdefault(key, []).append(value)
                if key not in columns:
                    columns.append(key)
        group.stats = {key: Stat(v) for key, v in values.items()}
    order = {name: i for i, name in enumerate((*CHECKPOINT_NAMES, GAP))}
    columns.sort(key=lambda c: (order.get(c[0], 9), c[1] == "robust", c[1] != "clean"))
    return Comparison(list(groups.values()), columns, group_by, problems)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _cell(group: Group, reference: Group, column: tuple[str, str]) -> str:
    stat = group.stats.get(column)
    if stat is None:
        return "-"
    text = _pct(stat.mean) + (f" ± {_pct(stat.sd)}" if stat.sd is not None else "")
    if group is not reference and column in reference.stats:
        ref = reference.stats[column]
        diff = stat.mean - ref.mean
        verdict = not_significant(stat, ref)
        mark = {True: ", n.s.", False: "", None: ", no spread"}[verdict]
        text += f" ({'+' if diff >= 0 else ''}{_pct(diff)}{mark})"
    return text


def _column_name(column: tuple[str, str]) -> str:
    which, metric = column
    return "best-to-last gap (robust)" if which == GAP else f"{which} {metric}"


def markdown(comparison: Comparison) -> str:
    """The comparison as one Markdown table (accuracies in %, mean ± sample standard deviation over runs)."""
    groups = comparison.groups
    reference = groups[0]
    by = comparison.group_by or "run"
    lines = [f"# Comparison of {sum(len(g.records) for g in groups)} runs by {by}", "",
             "Accuracies in % on each run's test points, mean ± sample standard deviation over the runs of a "
             f"group (seeds). In brackets: the difference from the first group ({reference.name}); `n.s.` (not "
             "significant) where it is no larger than the sum of the two groups' standard deviations, `no spread` "
             "where a group has one run. Best is chosen on the validation split; gap = best robust - last robust.",
             ""]
    headers = [by, "runs", "seeds", *(_column_name(c) for c in comparison.columns)]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for group in groups:
        cells = [group.name, str(len(group.records)), ", ".join(str(s) for s in group.seeds),
                 *(_cell(group, reference, c) for c in comparison.columns)]
        lines.append("| " + " | ".join(cells) + " |")
    attack_info = _attack_versions(comparison)
    if attack_info:
        lines += ["", "Attacks: " + "; ".join(attack_info) + "."]
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
    diff_vs_reference, not_significant (empty where undefined); accuracies as fractions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "runs", "seeds", "checkpoint", "metric", "mean", "sd", "diff_vs_reference",
                     "not_significant"])
    reference = comparison.groups[0]
    for group in comparison.groups:
        for column in comparison.columns:
            stat = group.stats.get(column)
            if stat is None:
                continue
            ref = reference.stats.get(column)
            diff = "" if group is reference or ref is None else repr(stat.mean - ref.mean)
            verdict = None if group is reference or ref is None else not_significant(stat, ref)
            writer.writerow([group.name, len(group.records), " ".join(str(s) for s in group.seeds), column[0],
                             column[1], repr(stat.mean), "" if stat.sd is None else repr(stat.sd), diff,
                             "" if verdict is None else str(verdict).lower()])
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
