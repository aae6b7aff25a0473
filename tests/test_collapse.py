"""The catastrophic-overfitting guard (advlab.engine.collapse): the rule against hand-made logs, and a run whose
validation robustness is made to collapse while its training accuracy rises (a planted fault) stops with its
best checkpoint kept and says why."""
from __future__ import annotations

import json

import pytest

from advlab.config import load_config
from advlab.engine import loop
from advlab.engine.collapse import collapsed
from advlab.engine.train import resume, train
from advlab.runs import load_checkpoint

pytestmark = pytest.mark.usefixtures("fashion_mnist")


def _rows(*pairs):
    return [{"epoch": i + 1, "val_robust": r, "train_acc": a} for i, (r, a) in enumerate(pairs)]


def test_the_rule_needs_robustness_below_the_ratio_of_its_best_and_training_accuracy_rising():
    assert collapsed(_rows((0.40, 0.5)), 0.5) is None  # one epoch: nothing to compare with
    assert collapsed(_rows((0.40, 0.5), (0.45, 0.6), (0.10, 0.8)), 0.5).startswith("catastrophic overfitting in "
                                                                                  "epoch 3")
    assert collapsed(_rows((0.40, 0.5), (0.45, 0.6), (0.10, 0.55)), 0.5) is None  # training accuracy fell too
    assert collapsed(_rows((0.40, 0.5), (0.45, 0.6), (0.23, 0.8)), 0.5) is None  # 0.23 >= 0.5 x 0.45
    assert collapsed(_rows((0.40, 0.5), (0.45, 0.6), (0.22, 0.8)), 0.5) is not None
    assert collapsed(_rows((0.40, 0.5), (0.45, 0.6), (0.30, 0.8)), 0.8) is not None  # the ratio is the key's
    assert collapsed(_rows((0.0, 0.5), (0.0, 0.9)), 0.5) is None  # never robust: nothing collapsed


TINY = ["data.train_size=100", "batch_size=50", "validation.n=20", "evaluation.n=20", "evaluation.attacks=[pgd20]",
        "device=cpu", "epochs=5"]
SCRIPT = {1: (0.60, 0.30, 0.40), 2: (0.62, 0.40, 0.50), 3: (0.65, 0.05, 0.90), 4: (0.6, 0.05, 0.95),
          5: (0.6, 0.05, 0.97)}  # epoch -> (validation clean, validation robust, training accuracy)


@pytest.fixture
def collapsing(monkeypatch):
    """The planted fault: validation robustness collapses in epoch 3 while the training accuracy rises."""
    real = loop.train_one_epoch

    def train_one_epoch(run, epoch, *args, **kwargs):
        return {**real(run, epoch, *args, **kwargs), "train_acc": SCRIPT[epoch + 1][2]}

    monkeypatch.setattr(loop, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(loop, "validate", lambda run: dict(zip(("val_clean", "val_robust"),
                                                               SCRIPT[run.recipe.labels.epoch + 1][:2])))


@pytest.mark.slow
def test_a_collapsing_run_stops_keeps_its_best_checkpoint_and_says_why(tmp_path, collapsing, one_thread, capsys):
    out = tmp_path / "run"
    summary = train("fast-at", out, overrides=TINY)  # the preset stops on collapse
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["collapsed"] for r in rows] == [False, False, True]
    assert load_checkpoint(out / "best.pt")["epoch"] == 2 and load_checkpoint(out / "last.pt")["epoch"] == 3
    assert "catastrophic overfitting in epoch 3" in summary["stopped"] and summary["best"]["epoch"] == 2
    assert summary["collapsed_epochs"] == [3] and summary["last_epoch"] == 3
    assert "catastrophic overfitting in epoch 3" in capsys.readouterr().err
    again = resume(out, progress=False)  # a stopped run stays stopped
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 and again["stopped"] == summary["stopped"]


@pytest.mark.slow
def test_without_stop_on_collapse_the_run_goes_on_and_the_summary_names_the_collapsed_epochs(tmp_path, collapsing,
                                                                                              one_thread):
    summary = train("fast-at", tmp_path / "run", overrides=TINY + ["training.stop_on_collapse=false"],
                    progress=False)
    assert "stopped" not in summary and summary["collapsed_epochs"] == [3, 4, 5] and summary["last_epoch"] == 5
