"""Optional TensorBoard logging of the per-epoch metrics (``logging.tensorboard: true``, off by default).

Uses ``torch.utils.tensorboard``, which needs the ``tensorboard`` package; advlab does not depend on it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; ConfigError naming the fix if ``tensorboard`` is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("logging.tensorboard: true needs the tensorboard package (pip install tensorboard), "
                          "or set logging.tensorboard=false") from None
    return SummaryWriter


class EpochScalars:
    """Writes each ``metrics.jsonl`` line's numbers (bools as 0/1; lists, strings and None left out) as
    TensorBoard scalars at step = the epoch. Built before the run writes anything, so a missing package stops
    the run before its directory is touched; the event files go to the folder of the first :meth:`write`."""

    def __init__(self) -> None:
        self.writer_class = summary_writer_class()
        self.writer: Any = None

    def write(self, row: dict[str, Any], folder: str | Path) -> None:
        """Add the numbers of one epoch's line (``row["epoch"]`` is the step) to ``folder`` and flush."""
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(Path(folder)))
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or isinstance(value, (list, dict, str)) or value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
