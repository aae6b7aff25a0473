"""The engine's choices against hand-written expectations: the best checkpoint is the best validation epoch,
validation labels are the file's, the one-cycle schedule is Smith's triangle (faults the rest of the suite let
through: see scripts/plant_faults.py)."""
from __future__ import annotations

import pytest

from advlab import data as datasets
from advlab.config import ScheduleConfig, load_config
from advlab.engine.schedule import create_schedule
from advlab.engine import loop
from advlab.engine.run import create_run
from advlab.engine.state import TrainingState
from advlab.runs import RunDir, load_checkpoint

TINY = ["data.train_size=100", "batch_size=50", "perturbation.steps=1", "validation.n=50", "device=cpu"]


def test_one_cycle_rises_linearly_to_the_peak_then_falls_to_zero():
    # lr 0.2 over 3 epochs, peak at 40% = epoch 1.2: 0 -> 0.2 linearly, then 0.2 -> 0 linearly at epoch 3
    rate = create_schedule(ScheduleConfig(name="one-cycle", peak=0.4), 0.2, 3)
    for t, expected in [(0.0, 0.0), (0.6, 0.1), (1.2, 0.2), (2.1, 0.1), (2.55, 0.05), (3.0, 0.0)]:
        assert rate(t) == pytest.approx(expected, abs=1e-12), t


def test_best_is_the_epoch_with_the_highest_validation_robust_accuracy_ties_by_clean(tmp_path, monkeypatch):
    config = load_config("pgd-at", TINY + ["epochs=4"])
    run = RunDir.create(tmp_path / "run", overwrite=False)
    run.write_config(config)
    scripted = iter([(0.70, 0.50), (0.72, 0.60), (0.80, 0.55), (0.71, 0.60)])  # (clean, robust) per epoch
    monkeypatch.setattr(loop, "validate", lambda _: dict(zip(("val_clean", "val_robust"), next(scripted))))
    loop.fit(create_run(config, progress=False), TrainingState(), run)
    # epoch 2 and 4 tie on robust 0.60; epoch 2 has the higher clean accuracy
    assert [r["best_epoch"] for r in run.read_metrics()] == [1, 2, 2, 2]
    assert load_checkpoint(run.checkpoint_path("best"))["epoch"] == 2
    assert load_checkpoint(run.checkpoint_path("last"))["epoch"] == 4


def test_label_noise_never_reaches_the_validation_labels(tmp_path):
    config = load_config("pgd-at", TINY + ["epochs=1", "data.label_noise.rate=0.5"])
    run = create_run(config, progress=False)
    _, file_labels = datasets.load("fashion-mnist", "val")
    assert run.data.val_labels.tolist() == file_labels[:50].tolist()
    assert run.data.split.record["label_noise"]["realised_rate"] == pytest.approx(0.5)  # the training split is noisy
