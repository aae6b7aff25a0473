"""What a report knows of a run: every file of the run directory read through :class:`advlab.runs.RunDir`,
each one allowed to be missing or torn (the report then says so instead of failing)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdvlabError
from ..runs import CHECKPOINT_NAMES, CONFIG, DATA, SUMMARY, TRAINING_COLUMNS, RunDir


@dataclass
class RunRecord:
    """One run as read from disk. ``problems`` lists, in words, every file that is missing or unreadable."""

    run: RunDir
    config: dict[str, Any] | None
    rows: list[dict[str, Any]]
    data: dict[str, Any] | None
    summary: dict[str, Any] | None
    checkpoints: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def best_epoch(self) -> int | None:
        """The best epoch (by validation robust accuracy) from the summary, else from the last metrics line."""
        if self.summary and isinstance(self.summary.get("best_epoch"), int):
            return self.summary["best_epoch"]
        for row in reversed(self.rows):
            if isinstance(row.get("best_epoch"), int):
                return row["best_epoch"]
        return None

    def setting(self, key: str) -> Any:
        """A config value by dotted key (``preset``, ``model.activation``); None if absent or no config."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def evaluated(self) -> dict[str, dict[str, Any]]:
        """The summary's evaluation entries by checkpoint (``best``, ``last``) that hold accuracies."""
        if not self.summary:
            return {}
        return {which: self.summary[which] for which in CHECKPOINT_NAMES
                if isinstance(self.summary.get(which), dict) and "clean" in self.summary[which]}


def load_run(path: str | Path) -> RunRecord:
    """Read the run directory at ``path`` for a report. AdvlabError only if ``path`` is not a folder; every
    missing or unreadable file becomes a line of ``RunRecord.problems``."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise AdvlabError(f"no such run directory: {run.path}")
    problems: list[str] = []
    config = None
    if not run.file(CONFIG).is_file():
        problems.append(f"{CONFIG} is missing: the config is unknown")
    else:
        try:
            config = run.read_config().to_dict()
        except AdvlabError as exc:
            problems.append(f"{CONFIG} cannot be read ({exc}); the config is unknown")
    rows, skipped = run.scan_metrics()
    rows = [r for r in rows if _finite_epoch(r)]
    if not run.file("metrics.jsonl").is_file():
        problems.append("metrics.jsonl is missing: no epoch finished, so there are no training curves")
    elif not rows:
        problems.append("metrics.jsonl holds no finished epoch")
    if skipped:
        problems.append(f"metrics.jsonl: {skipped} torn or unreadable line(s) skipped (a run killed mid-write)")
    if config and rows and rows[-1].get("epoch", 0) < config.get("epochs", 0):
        problems.append(f"training stopped after epoch {rows[-1]['epoch']} of {config['epochs']} "
                        f"(resume with `advlab train --resume {run.path}`)")
    data = _json(run, DATA, problems, "the training split is not recorded")
    summary = _json(run, SUMMARY, problems, "no final evaluation on the test split (the run was not evaluated, "
                                           "or has not finished)")
    checkpoints = [which for which in CHECKPOINT_NAMES if run.has_checkpoint(which)]
    for which in CHECKPOINT_NAMES:
        if which not in checkpoints:
            problems.append(f"{which}.pt is missing")
    return RunRecord(run, config, rows, data, summary, checkpoints, problems)


def _finite_epoch(row: dict[str, Any]) -> bool:
    epoch = row.get("epoch")
    return isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and math.isfinite(epoch)


def _json(run: RunDir, name: str, problems: list[str], consequence: str) -> dict[str, Any] | None:
    if not run.file(name).is_file():
        problems.append(f"{name} is missing: {consequence}")
        return None
    try:
        value = run.read_json(name)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{name} cannot be read ({exc}): {consequence}")
        return None
    if not isinstance(value, dict):
        problems.append(f"{name} does not hold a JSON object: {consequence}")
        return None
    return value


def part_groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """The parts' own metrics found in ``rows``: every column that is not one of the engine's
    (:data:`advlab.runs.TRAINING_COLUMNS`), grouped by its prefix before the first ``_`` (``gair_``, ``noise_``,
    ``labels_``, ``fat_``, ...), split into ``scalars`` (numbers or bools in some row) and ``lists`` (lists of
    numbers, e.g. ``gair_kappa_hist``). Columns that are never a number or a list of numbers are left out."""
    groups: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in TRAINING_COLUMNS:
                continue
            if isinstance(value, (bool, int, float)):
                kind = "scalars"
            elif isinstance(value, list) and value and all(isinstance(v, (bool, int, float)) for v in value):
                kind = "lists"
            else:
                continue
            prefix = key.split("_", 1)[0] if "_" in key else key
            group = groups.setdefault(prefix, {"scalars": [], "lists": []})
            if key not in group[kind]:
                group[kind].append(key)
    return groups
