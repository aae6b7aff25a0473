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

Like with like:
- a group holds runs that differ only in their seeds (the config keys ``seed`` and ``*.seed``) and in the keys
  of :data:`HOW_KEYS` (how or where a run ran, never what it computes). Runs of one ``--group-by`` value that
  differ in another key are split into groups by the keys that differ (``pgd-at (data.label_noise.rate=0.4)``),
  and one line beside the table names those keys;
- an accuracy is compared with the reference's only when both were measured alike: clean accuracy on the same
  points (dataset, number of points, classifier); an attack's on the same points under the same threat model
  (eps, norm) with the same settings of that attack; robust accuracy (the per-sample AND) and the best-to-last
  gap under the same set of attacks with the same settings (:func:`evaluation_of`). Otherwise the cell gives no
  difference and no mark, and a line beside the table says what differs. A group whose own runs were evaluated
  differently has no mean for that column (``mixed``).

Outputs (:mod:`advlab.reports.compare_output`): ``compare.md`` (one table, accuracies in %), ``compare.csv`` (one
line per group, checkpoint and metric; accuracies as fractions in [0, 1]) and ``compare-curves.png`` (validation
clean and robust accuracy of each group over epochs, overlaid).
"""
from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from ..errors import AdvlabError
from ..runs import CHECKPOINT_NAMES
from .record import RunRecord, load_run

GAP = "gap"  # best robust - last robust

HOW_KEYS = ("description", "device", "out", "data.root", "logging", "distributed.backend", "distributed.timeout_s",
            "compile", "channels_last", "validation.batch_size", "evaluation.batch_size", "evaluation.checkpoints")
"""Config keys (and sections) that say how or where a run ran, or describe it, never what it computes: runs that
differ only in these and in their seeds are repetitions of one experiment. ``compile`` and ``channels_last``
change how the step runs, not what it computes (docs/ARCHITECTURE.md); the evaluation's batch size does not change
its flags (each point is attacked as alone); ``evaluation.checkpoints`` only says which are evaluated."""

OUTCOME_KEYS = frozenset({"acc", "per_class", "max_perturbation", "seconds", "attacks_run", "warnings",
                          "clamped_inputs", "seed"})
"""Keys of an attack's entry in an evaluation's JSON that report what happened, not how it attacked (``seed``:
the attack's random start, the run's seed)."""


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
    notes: list[str] = field(default_factory=list)  # lines beside the table: groups split, evaluations unlike
    # (group name, column) -> the evaluation its runs share; "mixed" when they differ (no mean is given)
    evaluations: dict[tuple[str, tuple[str, str]], str] = field(default_factory=dict)

    def comparable(self, group: Group, column: tuple[str, str]) -> bool:
        """Whether ``group``'s value of ``column`` was measured as the reference's (first group's) was."""
        reference = self.groups[0]
        mine = self.evaluations.get((group.name, column))
        return mine is not None and mine != MIXED and mine == self.evaluations.get((reference.name, column))


MIXED = "mixed"


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


def _is_how(key: str) -> bool:
    return any(key == h or key.startswith(h + ".") for h in HOW_KEYS)


def _is_seed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a config mapping (lists and empty mappings are leaves)."""
    if not isinstance(node, dict) or (not node and prefix):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def experiment(record: RunRecord) -> dict[str, str] | None:
    """What a run computes: every config leaf (dotted key -> value as JSON text) but its seeds and
    :data:`HOW_KEYS`; None for a run without a readable config."""
    if record.config is None:
        return None
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in _leaves(record.config).items()
            if not _is_seed(k) and not _is_how(k)}


NOT_SET = "(not set)"


def _show(text: str) -> str:
    """A config value of :func:`experiment` (JSON text) as written in a group's name."""
    if text == NOT_SET:
        return text
    value = json.loads(text)
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def split_unlike(name: str, records: list[RunRecord]) -> tuple[list[Group], str | None]:
    """The runs of one ``--group-by`` value as groups of runs that differ only in their seeds (and
    :data:`HOW_KEYS`): one group ``name`` when they all agree, else one group per combination of the keys that
    differ, named ``name (key=value, ...)`` in the order the runs come, with a line naming those keys (runs
    without a config form ``name (config unknown)``)."""
    settings = [experiment(r) for r in records]
    known = [e for e in settings if e is not None]
    keys: list[str] = []
    for e in known:
        keys += [k for k in e if k not in keys]
    differ = [k for k in keys if len({e.get(k, NOT_SET) for e in known}) > 1]
    if not differ and len(known) == len(records):
        return [Group(name, list(records))], None
    groups: dict[str, Group] = {}
    for record, e in zip(records, settings):
        if e is None:
            label = f"{name} (config unknown)"
        else:
            label = f"{name} ({', '.join(f'{k}={_show(e.get(k, NOT_SET))}' for k in differ)})" if differ else name
        groups.setdefault(label, Group(label, [])).records.append(record)
    if differ:
        note = (f"{name}: its runs differ in {', '.join(differ)} besides the seed, so they are not averaged "
                "together: grouped by these keys")
    else:
        note = f"{name}: the config of some runs is unknown, so they are not averaged with the others"
    return list(groups.values()), note


def evaluation_of(record: RunRecord, column: tuple[str, str]) -> dict[str, Any] | None:
    """How ``record``'s value of ``column`` was measured: the points (dataset, number, classifier) for clean
    accuracy; also eps, norm and the settings of the attack for an attack's accuracy, of every attack for
    robust accuracy (for the gap: of both checkpoints). Attack settings leave out :data:`OUTCOME_KEYS`. None
    when the run lacks the column."""
    which, metric = column
    if which == GAP:
        both = [evaluation_of(record, (w, "robust")) for w in CHECKPOINT_NAMES]
        return None if None in both else {"best": both[0], "last": both[1]}
    entry = record.evaluated().get(which)
    if entry is None:
        return None
    how: dict[str, Any] = {"dataset": record.setting("data.name"), "n": entry.get("n"),
                           "classifier": entry.get("classifier")}
    if metric == "clean":
        return how
    attacks = {name: {k: v for k, v in a.items() if k not in OUTCOME_KEYS}
               for name, a in (entry.get("attacks") or {}).items() if isinstance(a, dict)}
    how.update(eps=entry.get("eps"), norm=entry.get("norm"))
    if metric == "robust":
        return {**how, "attacks": attacks}
    return {**how, "attacks": {metric: attacks[metric]}} if metric in attacks else None


def _differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """What differs between two :func:`evaluation_of` results, in words (``mine`` against ``theirs``)."""
    if "best" in mine and "last" in mine and "attacks" not in mine:  # the gap: both checkpoints
        out: list[str] = []
        for w in CHECKPOINT_NAMES:
            out += [d for d in _differences(mine[w], theirs[w]) if d not in out]
        return out
    out = []
    for key, label in (("dataset", "dataset"), ("n", "points"), ("classifier", "classifier"), ("norm", "norm"),
                       ("eps", "eps")):
        if mine.get(key) != theirs.get(key):
            out.append(f"{label} {_plain(mine.get(key))} against {_plain(theirs.get(key))}")
    a, b = mine.get("attacks") or {}, theirs.get("attacks") or {}
    if set(a) != set(b):
        out.append(f"attacks {', '.join(a) or 'none'} against {', '.join(b) or 'none'}")
    out += [f"other settings of {name}" for name in a if name in b and a[name] != b[name]]
    return out


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def column_name(column: tuple[str, str]) -> str:
    """A column's heading: ``best robust``, ``last pgd20``, or the best-to-last gap."""
    which, metric = column
    return "best-to-last gap (robust)" if which == GAP else f"{which} {metric}"


def compare_runs(paths: Sequence[str | Path], group_by: str | None = None, progress: bool = False) -> Comparison:
    """Read the runs at ``paths`` and group them by the config key ``group_by`` (dotted, e.g. ``preset`` or
    ``model.activation``; None: each run its own group), each value's runs split further by the keys in which
    they differ besides their seeds (:func:`split_unlike`); each column's way of measurement per group in
    ``evaluations`` (:func:`evaluation_of`; ``mixed`` and no mean where a group's runs differ), and in
    ``notes`` the groups split and the groups not compared with the reference. AdvlabError if no path is
    given or one is not a folder, or one is given twice; runs without evaluation join the curves and are named
    in ``problems``."""
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
    notes: list[str] = []
    like: list[Group] = []
    for group in groups.values():
        split, note = split_unlike(group.name, group.records)
        like += split
        if note:
            notes.append(note)
    columns: list[tuple[str, str]] = []
    evaluations: dict[tuple[str, tuple[str, str]], str] = {}
    measured: dict[tuple[str, tuple[str, str]], dict[str, Any]] = {}
    for group in like:
        values: dict[tuple[str, str], list[float]] = {}
        ways: dict[tuple[str, str], list[str]] = {}
        for record in group.records:
            for key, value in run_metrics(record).items():
                values.setdefault(key, []).append(value)
                how = evaluation_of(record, key)
                text = json.dumps(how, sort_keys=True, default=str)
                if text not in ways.setdefault(key, []):
                    ways[key].append(text)
                measured[(group.name, key)] = how
                if key not in columns:
                    columns.append(key)
        group.stats = {key: Stat(v) for key, v in values.items() if len(ways[key]) == 1}
        for key, texts in ways.items():
            evaluations[(group.name, key)] = texts[0] if len(texts) == 1 else MIXED
            if len(texts) > 1:
                notes.append(f"{group.name}: {column_name(key)} is not averaged: its runs were evaluated "
                             "differently")
    order = {name: i for i, name in enumerate((*CHECKPOINT_NAMES, GAP))}
    columns.sort(key=lambda c: (order.get(c[0], 9), c[1] == "robust", c[1] != "clean"))
    comparison = Comparison(like, columns, group_by, problems, notes, evaluations)
    reference = like[0]
    for group in like[1:]:
        unlike = [c for c in columns if c in group.stats and c in reference.stats
                  and not comparison.comparable(group, c)]
        if unlike:
            first = unlike[0]
            why = _differences(measured[(group.name, first)], measured[(reference.name, first)])
            notes.append(f"{group.name} is not compared with {reference.name} in {', '.join(map(column_name, unlike))}"
                         f": evaluated differently ({'; '.join(why) or 'other settings'})")
    return comparison
