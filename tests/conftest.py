"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny tensors on a small shared CPU only contend with more (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _whole_and_resumed(config, tmp_path: Path, stop_after: int,
                       on_stop: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """Train ``config`` uninterrupted, and again stopped after ``stop_after`` epochs then resumed.

    ``on_stop(run_dir)`` runs between the stop and the resume. Returns the two finished run directories
    (whole, resumed); neither runs the final evaluation.
    """
    from advlab.engine.trainer import Trainer, resume, train
    from advlab.runs import RunDir

    whole = tmp_path / "whole"
    train(config, whole, progress=False, evaluate=False)
    run = RunDir.create(tmp_path / "part", overwrite=False)
    run.write_config(config)
    Trainer(config, run, progress=False).fit(until=stop_after)
    part = run.path
    if on_stop is not None:
        on_stop(part)
    resume(part, progress=False, evaluate=False)
    return whole, part


@pytest.fixture
def whole_and_resumed():
    """The function that trains a config whole and stopped-then-resumed (see ``_whole_and_resumed``)."""
    return _whole_and_resumed
