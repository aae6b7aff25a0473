"""Runs on disk: the run directory's format, checkpoints read without executing code, the atomic writer."""
from __future__ import annotations

from .atomic import write_atomic
from .checkpoint import CHECKPOINT_NAMES, FORMAT, load_checkpoint, load_model, resolve_checkpoint, save_checkpoint
from .directory import CONFIG, DATA, METRICS, SUMMARY, RunDir

__all__ = ["write_atomic", "CHECKPOINT_NAMES", "FORMAT", "load_checkpoint", "load_model", "resolve_checkpoint",
           "save_checkpoint", "CONFIG", "DATA", "METRICS", "SUMMARY", "RunDir"]
