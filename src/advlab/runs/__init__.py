"""Runs on disk: the run directory's format, checkpoints read without executing code, the atomic writer."""
from __future__ import annotations

from .atomic import write_atomic
from .checkpoint import CHECKPOINT_NAMES, FORMAT, load_checkpoint, load_model, resolve_checkpoint, save_checkpoint
from .summary import summary_table
from .warm_start import load_warm_start, same_model
from .weights import describe_report, load_weights, read_weights
from .directory import (CONFIG, DATA, METRICS, MID_EPOCH, REPORT_FIGURES, REPORT_HTML, REPORT_MD, RUN_FILES, SUMMARY,
                        TENSORBOARD, TRAINING_COLUMNS, RunDir)

__all__ = ["summary_table", "load_warm_start", "same_model", "describe_report", "load_weights", "read_weights",
           "write_atomic", "CHECKPOINT_NAMES", "FORMAT", "load_checkpoint", "load_model", "resolve_checkpoint",
           "save_checkpoint", "CONFIG", "DATA", "METRICS", "MID_EPOCH", "SUMMARY", "RunDir",
           "REPORT_MD", "REPORT_HTML", "REPORT_FIGURES", "RUN_FILES", "TENSORBOARD", "TRAINING_COLUMNS"]
