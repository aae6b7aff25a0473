"""The run directory, in one place: what a run writes, where, and how train, resume, eval and reports read it.

``<run>/``:
- ``config.yaml``: the resolved config (``advlab.config.TrainConfig``), written once the run is validated;
- ``data.json``: what the training split is (sizes, class counts, meta split, label noise and imbalance
  as applied: realised noise rate overall and per class);
- ``metrics.jsonl``: one JSON line per finished epoch (training, validation, each part's metrics);
- ``last.pt``, ``best.pt``: checkpoints (:mod:`advlab.runs.checkpoint`); best = highest validation robust
  accuracy, ties broken by clean accuracy;
- ``mid-epoch.pt``: while an epoch is in progress, its state at a step boundary (``checkpoint.every``, or a
  signal stopping the run); removed once the epoch's ``last.pt`` is written;
- ``summary.json``: the final evaluation of best and last on the test split;
- ``report.md``, ``report.html`` and ``report/*.png``: what ``advlab report`` writes (figures as PNG files,
  the HTML with them embedded);
- ``tensorboard/``: TensorBoard event files of the per-epoch metrics, with ``logging.tensorboard: true``.

Every file is written atomically (:func:`advlab.runs.atomic.write_atomic`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, dump_config, read_config
from ..errors import AdvlabError
from .atomic import write_atomic
from .checkpoint import CHECKPOINT_NAMES, load_checkpoint, save_checkpoint

CONFIG = "config.yaml"
DATA = "data.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_FIGURES = "report"  # folder of the report's PNG figures
TENSORBOARD = "tensorboard"  # folder of the TensorBoard event files (logging.tensorboard: true)
MID_EPOCH = "mid-epoch.pt"  # the epoch in progress: for resuming only (not a `--checkpoint` choice)

RUN_FILES = (CONFIG, DATA, METRICS, "last.pt", "best.pt", SUMMARY)
"""What a finished run holds, in the order it writes them."""

TRAINING_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "train_seconds", "images_per_second", "val_clean",
                    "val_robust", "seconds", "best_epoch", "collapsed")
"""The columns of a ``metrics.jsonl`` line the engine writes; every other column is a part's own metric."""


class RunDir:
    """One run's folder. :meth:`create` starts one (only after the run was validated), :meth:`open` an
    existing one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- lifecycle ------------------------------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | Path, overwrite: bool) -> "RunDir":
        """AdvlabError unless ``path`` can hold a new run (missing, empty, or ``overwrite``); touches nothing."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise AdvlabError(f"run directory {run.path} is a file")
        if run.path.is_dir() and any(run.path.iterdir()) and not overwrite:
            raise AdvlabError(f"run directory {run.path} is not empty; continue it with `advlab train --resume "
                              f"{run.path}`, or pass --overwrite to start afresh")
        return run

    @classmethod
    def create(cls, path: str | Path, overwrite: bool) -> "RunDir":
        """An empty run directory at ``path`` (its old content removed with ``overwrite``)."""
        run = cls.check_new(path, overwrite)
        if run.path.is_dir() and any(run.path.iterdir()):
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run (it must hold ``config.yaml``)."""
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise AdvlabError(f"{run.path} is not an advlab run directory (no {CONFIG})")
        return run

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temporary files of atomic writes a killed process left (``.<name>.*.tmp``); their paths."""
        stale = sorted(self.path.glob(".*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    # -- files ----------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def checkpoint_path(self, which: str) -> Path:
        if which not in CHECKPOINT_NAMES:
            raise AdvlabError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {which!r}")
        return self.path / f"{which}.pt"

    def write_config(self, config: TrainConfig) -> None:
        write_atomic(self.file(CONFIG), dump_config(config))

    def read_config(self) -> TrainConfig:
        return read_config(self.file(CONFIG))

    def write_json(self, name: str, obj: Any) -> None:
        write_atomic(self.file(name), json.dumps(obj, indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``rows`` (on resume: drops lines of an epoch that did not finish)."""
        write_atomic(self.file(METRICS), "".join(json.dumps(row) + "\n" for row in rows))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's line to ``metrics.jsonl`` (a crash mid-line leaves a torn last line, which
        :meth:`read_metrics` skips and a resume rewrites from the checkpoint's history)."""
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch lines; a torn last line (a crash while appending) is skipped."""
        return self.scan_metrics()[0]

    def scan_metrics(self) -> tuple[list[dict[str, Any]], int]:
        """``(rows, skipped)``: the epoch lines that parse as JSON objects, and how many lines did not."""
        path = self.file(METRICS)
        rows, skipped = [], 0
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    skipped += 1
                    continue
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    skipped += 1
        return rows, skipped

    def missing_files(self) -> list[str]:
        """The names of :data:`RUN_FILES` this run does not hold (yet)."""
        return [name for name in RUN_FILES if not self.file(name).is_file()]

    def report_path(self, kind: str) -> Path:
        """Where the report of kind ``md`` or ``html`` goes."""
        names = {"md": REPORT_MD, "html": REPORT_HTML}
        if kind not in names:
            raise AdvlabError(f"report kind must be one of {', '.join(names)}, got {kind!r}")
        return self.path / names[kind]

    def figure_path(self, name: str) -> Path:
        """Where the report's figure ``name`` (a file stem, e.g. ``training``) goes: ``report/<name>.png``."""
        return self.path / REPORT_FIGURES / f"{name}.png"

    def save_checkpoint(self, which: str, payload: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path(which), payload)

    def has_checkpoint(self, which: str) -> bool:
        return self.checkpoint_path(which).is_file()

    def load_checkpoint(self, which: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_path(which), map_location=map_location)

    # -- the epoch in progress ------------------------------------------------------------------------
    def save_mid_epoch(self, payload: dict[str, Any]) -> None:
        """Write the mid-epoch checkpoint (atomically, as every checkpoint)."""
        save_checkpoint(self.file(MID_EPOCH), payload)

    def remove_mid_epoch(self) -> None:
        """Delete the mid-epoch checkpoint (its epoch has finished: ``last.pt`` holds it)."""
        self.file(MID_EPOCH).unlink(missing_ok=True)

    def has_resume_point(self) -> bool:
        """Whether the run has a checkpoint to continue from (``last.pt`` or a mid-epoch one)."""
        return self.has_checkpoint("last") or self.file(MID_EPOCH).is_file()

    def load_resume_point(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The checkpoint a resume continues from: the mid-epoch checkpoint when it continues ``last.pt`` (the
        same number of finished epochs; 0 without a ``last.pt``), else ``last.pt``, else None (start afresh).

        ``last.pt`` is the commit point: a mid-epoch checkpoint of an epoch that has since finished (left by a
        kill between that epoch's ``last.pt`` and the removal) is stale; it is deleted and ``last.pt`` used.
        """
        last = self.load_checkpoint("last", map_location) if self.has_checkpoint("last") else None
        if self.file(MID_EPOCH).is_file():
            mid = load_checkpoint(self.file(MID_EPOCH), map_location=map_location)
            if int(mid["epoch"]) == (int(last["epoch"]) if last is not None else 0) and mid.get("mid_epoch"):
                return mid
            self.remove_mid_epoch()
        return last
