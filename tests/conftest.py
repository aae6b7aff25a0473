"""Fixtures shared by the test modules."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch


def _fashion_mnist_folder() -> Path | None:
    """The first folder of advlab's own search path (``advlab.data.paths.search_folders``: ``$ADVLAB_DATA``,
    ``~/.cache/advlab``, Debian's folder) that holds both parts of Fashion-MNIST, or None."""
    from advlab.data import info
    from advlab.data.paths import search_folders

    source = info("fashion-mnist").source
    for folder in search_folders("fashion-mnist", None):
        if all(source.locate(folder, part) for part in ("train", "test")):
            return folder
    return None


FASHION_MNIST_MISSING = ("Fashion-MNIST not found in advlab's search path ($ADVLAB_DATA, ~/.cache/advlab, "
                         "/usr/share/datasets/fashion-mnist); install it with `apt-get install "
                         "dataset-fashion-mnist` (scripts/setup.sh does), or put the four IDX files in "
                         "$ADVLAB_DATA/fashion-mnist")


def require_fashion_mnist() -> Path:
    """The folder advlab.data.load finds Fashion-MNIST in (its own search path, no fixed folder).

    Missing: ``pytest.fail`` under CI (the environment variable CI is set, as `bash .ci/run` runs), else
    ``pytest.skip``; both say how to install it.
    """
    folder = _fashion_mnist_folder()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail(FASHION_MNIST_MISSING, pytrace=False)
        pytest.skip(FASHION_MNIST_MISSING)
    return folder


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """:func:`require_fashion_mnist` as a fixture: ``pytestmark = pytest.mark.usefixtures("fashion_mnist")``
    for a whole module, or an argument ``fashion_mnist`` (the folder) for one test."""
    return require_fashion_mnist()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny tensors on a small shared CPU only contend with more (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stopped_run(config, run_dir, epochs: int) -> None:
    """Train ``config`` into the RunDir ``run_dir`` (config written by the caller) and stop after ``epochs``
    epochs, as a run killed between two epochs leaves it."""
    from advlab.engine.loop import fit
    from advlab.engine.run import create_run
    from advlab.engine.state import TrainingState

    run = create_run(config, progress=False)
    with run.collective:
        fit(run, TrainingState(), run_dir, until=epochs)


@pytest.fixture
def stopped_run():
    """The function that trains a config into a run directory and stops after some epochs (``_stopped_run``)."""
    return _stopped_run


def _whole_and_resumed(config, tmp_path: Path, stop_after: int,
                       on_stop: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """Train ``config`` uninterrupted, and again stopped after ``stop_after`` epochs then resumed.

    ``on_stop(run_dir)`` runs between the stop and the resume. Returns the two finished run directories
    (whole, resumed); neither runs the final evaluation.
    """
    from advlab.engine.train import resume, train
    from advlab.runs import RunDir

    whole = tmp_path / "whole"
    train(config, whole, progress=False, evaluate=False)
    run = RunDir.create(tmp_path / "part", overwrite=False)
    run.write_config(config)
    _stopped_run(config, run, stop_after)
    part = run.path
    if on_stop is not None:
        on_stop(part)
    resume(part, progress=False, evaluate=False)
    return whole, part


def _whole_and_resumed_mid_epoch(config, tmp_path: Path, stop_at: int,
                                 on_stop: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """Train ``config`` uninterrupted, and again stopped by a real SIGINT at the end of training step ``stop_at``
    (1-based, counted over the run: a mid-epoch checkpoint is written) then resumed in this process.

    Checks that the resume trained exactly the steps left (it continued the epoch, not restarted it; the steps
    are counted with the ``batch`` crash point set to a pass never reached). ``on_stop(run_dir)`` runs between
    the stop and the resume. Returns (whole, resumed) run directories, neither evaluated.
    """
    from advlab import crashpoints
    from advlab.engine.interrupt import RunStopped
    from advlab.engine.train import resume, train

    def steps_of(what: Callable[[], object], crash_at: str = "batch@1000000000") -> int:
        os.environ[crashpoints.ENV] = crash_at
        crashpoints.reset()
        what()
        return crashpoints.passes("batch")

    whole, part = tmp_path / "whole", tmp_path / "part"
    before = os.environ.get(crashpoints.ENV)
    try:
        total = steps_of(lambda: train(config, whole, progress=False, evaluate=False))
        with pytest.raises(RunStopped, match="advlab train --resume"):
            steps_of(lambda: train(config, part, progress=False, evaluate=False), f"batch@{stop_at}:SIGINT")
        if on_stop is not None:
            on_stop(part)
        trained = steps_of(lambda: resume(part, progress=False, evaluate=False))
    finally:
        crashpoints.reset()
        if before is None:
            os.environ.pop(crashpoints.ENV, None)
        else:
            os.environ[crashpoints.ENV] = before
    assert trained == total - stop_at, f"the resume trained {trained} steps; {total - stop_at} were left"
    return whole, part


@pytest.fixture
def whole_and_resumed_mid_epoch():
    """The function that trains a config whole and stopped mid-epoch by SIGINT then resumed
    (see ``_whole_and_resumed_mid_epoch``)."""
    return _whole_and_resumed_mid_epoch


TIMING = {"seconds", "train_seconds", "images_per_second"}


def _training_rows(run_dir: Path) -> list[dict]:
    """The lines of a run's metrics.jsonl without the timing columns (what a resumed run must reproduce)."""
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def training_rows():
    """The function that reads a run's metrics without timing (see ``_training_rows``)."""
    return _training_rows


@pytest.fixture
def whole_and_resumed():
    """The function that trains a config whole and stopped-then-resumed (see ``_whole_and_resumed``)."""
    return _whole_and_resumed
