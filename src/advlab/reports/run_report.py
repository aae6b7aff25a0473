"""``advlab report RUN``: one run as ``report.md`` and a self-contained ``report.html``, with PNG figures.

Sections: status (what is missing), training curves, the parts' own diagnostics (found in ``metrics.jsonl``,
not from a list of methods), per-class clean and robust accuracy of best and last, the evaluation table, the
sanity checks, the data split, the config and the versions. A run that was killed, never evaluated or has
torn files still gets a report: each section says what it lacks.
"""
from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from .. import __version__
from ..evaluation.model_card import model_card_rows
from ..runs import REPORT_FIGURES, write_atomic
from . import figures
from .document import Document, Figure
from .record import RunRecord, load_run, part_groups



@dataclass
class ReportFiles:
    """What :func:`write_report` wrote: the Markdown, the HTML, the PNG figures, and the run's problems."""

    markdown: Path
    html: Path
    figures: list[Path]
    problems: list[str]


def pct(value: Any) -> str:
    """A fraction in [0, 1] as a percentage with one decimal; ``-`` if not a number."""
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def create_report(record: RunRecord, progress: bool = False) -> Document:
    """The report of ``record`` as a :class:`Document` (figures drawn here; nothing written)."""
    groups = part_groups(record.rows)
    evaluated = record.evaluated()
    bar = tqdm(total=2 + len(groups), desc=f"report {record.name}", disable=not progress, file=sys.stderr,
               leave=False)
    doc = Document()
    doc.add("h1", f"Run report: {record.name}")
    doc.add("p", f"Run directory `{record.run.path}`; preset `{record.setting('preset') or '?'}`"
                 + (f" ({record.setting('description')})" if record.setting("description") else "")
                 + f". Written by advlab {__version__} on {datetime.date.today().isoformat()}. "
                 "Accuracies in %.")

    doc.add("h2", "Status")
    if record.problems:
        doc.add("p", "This run is incomplete; the sections below show what exists.")
        doc.add("ul", record.problems)
    else:
        doc.add("p", "Complete: config, data split, metrics of every epoch, best and last checkpoints and the "
                     "final evaluation are all there.")

    doc.add("h2", "Training curves")
    if record.rows:
        best = record.best_epoch
        doc.add("figure", Figure("training", figures.training_curves(record.rows, best),
                                 f"Training loss, accuracies and learning rate per epoch; best epoch {best} "
                                 "(highest validation robust accuracy) marked."))
        last = record.rows[-1]
        doc.add("p", f"{len(record.rows)} epoch(s) logged; last: train loss {_short(last.get('train_loss'))}, "
                     f"validation clean {pct(last.get('val_clean'))}, robust {pct(last.get('val_robust'))}.")
    else:
        doc.add("p", "No finished epoch in metrics.jsonl: nothing to draw.")
    bar.update()

    doc.add("h2", "Part diagnostics")
    if not groups:
        doc.add("p", "The recipe's parts logged no metrics of their own." if record.rows
                else "No metrics to look at.")
    for prefix, columns in groups.items():
        doc.add("h3", f"{prefix}_*")
        doc.add("figure", Figure(f"part-{prefix}", figures.part_diagnostics(prefix, record.rows, columns["scalars"],
                                                                             columns["lists"]),
                                 f"Metrics the part logs as {prefix}_* per epoch: "
                                 + ", ".join(columns["scalars"] + columns["lists"]) + "."))
        last = record.rows[-1]
        doc.add("table", (["metric", "last epoch"], [[k, _short(last.get(k))]
                                                     for k in columns["scalars"] + columns["lists"]]))
        bar.update()

    doc.add("h2", "Per-class accuracy")
    if evaluated:
        doc.add("figure", Figure("per-class", figures.per_class_accuracy(evaluated),
                                 "Per-class clean and robust (AND over attacks) accuracy on the test points; "
                                 "the worst robust class is outlined."))
        doc.add("table", _per_class_table(evaluated))
    else:
        doc.add("p", "Not available: the run has no final evaluation (summary.json).")
    bar.update()

    doc.add("h2", "Evaluation")
    if evaluated:
        doc.add("table", evaluation_table(evaluated))
        for which, entry in evaluated.items():
            table = (record.summary or {}).get("tables", {}).get(which)
            if isinstance(table, str):
                doc.add("p", f"{which} checkpoint, as `advlab eval` prints it:")
                doc.add("pre", table)
    else:
        doc.add("p", "Not evaluated: no summary.json. Evaluate a checkpoint with "
                     f"`advlab eval {record.run.path} --checkpoint best`.")

    doc.add("h2", "Sanity checks")
    sanity = [[which, c.get("name", "?"), c.get("status", "?"), c.get("message", "")]
              for which, entry in evaluated.items() for c in entry.get("sanity") or []]
    if sanity:
        doc.add("table", (["checkpoint", "check", "status", "message"], sanity))
        failed = sum(1 for row in sanity if row[2] == "failed")
        doc.add("p", f"{failed} check(s) failed." if failed else "No check failed.")
    else:
        doc.add("p", "None ran (evaluation.sanity is off, or the run was not evaluated)."
                if evaluated else "None: the run was not evaluated.")

    doc.add("h2", "Model card")
    if "best" in evaluated:
        doc.add("table", (["field", "value"], model_card_rows(evaluated["best"], _model_spec(record),
                                                             record.setting("data.dataset"))))
    else:
        doc.add("p", "Not available: the best checkpoint was not evaluated.")

    doc.add("h2", "Data")
    if record.data:
        doc.add("pre", yaml.safe_dump(record.data, sort_keys=False, default_flow_style=None, width=100))
    else:
        doc.add("p", "data.json is missing: the training split is not recorded.")

    doc.add("h2", "Config")
    doc.add("pre", yaml.safe_dump(record.config, sort_keys=False) if record.config else "config.yaml is missing.")

    doc.add("h2", "Versions")
    versions = [[which, k, v] for which, entry in evaluated.items() for k, v in (entry.get("version") or {}).items()]
    if versions:
        doc.add("table", (["evaluation of", "package", "version"], versions))
    else:
        doc.add("p", f"No evaluation recorded the versions; this report was written with advlab {__version__}.")
    bar.close()
    return doc


def evaluation_table(evaluated: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per evaluated checkpoint: epoch, points, clean, each attack, robust (AND)."""
    attacks: list[str] = []
    for entry in evaluated.values():
        attacks += [a for a in entry.get("attacks", {}) if a not in attacks]
    headers = ["checkpoint", "epoch", "points", "clean", *attacks, "robust (AND)"]
    rows = []
    for which, entry in evaluated.items():
        rows.append([which, entry.get("epoch", "?"), entry.get("n", "?"), pct(entry["clean"].get("acc")),
                     *[pct(entry.get("attacks", {}).get(a, {}).get("acc")) for a in attacks],
                     pct(entry.get("robust", {}).get("acc"))])
    return headers, rows


def _per_class_table(evaluated: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    classes = sorted({c for e in evaluated.values() for c in e["clean"].get("per_class", {})}, key=int)
    headers = ["class"] + [f"{which} {kind}" for which in evaluated for kind in ("clean", "robust")]
    rows = []
    for c in classes:
        row = [c]
        for entry in evaluated.values():
            worst = (entry.get("robust", {}).get("worst_class") or {}).get("class")
            robust = pct(entry.get("robust", {}).get("per_class", {}).get(c))
            row += [pct(entry["clean"].get("per_class", {}).get(c)), robust + (" (worst)" if str(worst) == c else "")]
        rows.append(row)
    return headers, rows


def _model_spec(record: RunRecord) -> dict[str, Any] | None:
    if record.config is None:
        return None
    return {"name": record.setting("model.name"), "activation": record.setting("model.activation"),
            **(record.setting("model.options") or {})}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def write_report(path: str | Path, progress: bool = False) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``report/*.png`` into the run directory at ``path``.

    Works on an incomplete run (killed, not evaluated, torn files): the report says what is missing.
    AdvlabError if ``path`` is not a folder."""
    record = load_run(path)
    doc = create_report(record, progress=progress)
    run = record.run
    written = []
    for figure in doc.figures:
        target = run.figure_path(figure.name)
        write_atomic(target, figure.png)
        written.append(target)
    md, page = run.report_path("md"), run.report_path("html")
    write_atomic(md, doc.markdown(REPORT_FIGURES))
    write_atomic(page, doc.html(f"advlab report: {record.name}"))
    return ReportFiles(md, page, written, record.problems)
