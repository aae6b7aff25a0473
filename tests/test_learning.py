"""End to end on real Fashion-MNIST: a standard model has no robustness, adversarial training gives it."""
from pathlib import Path

import pytest

from advlab.data import load
from advlab.engine.checkpoint import load_model
from advlab.engine.trainer import train
from advlab.evaluate import evaluate

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")]

FAST = ["device=cpu", "epochs=2", "batch_size=128", "schedule.name=one-cycle", "optimizer.lr=0.2",
        "model.options.dropout=0", "validation.n=100", "validation.steps=3"]


@pytest.fixture(scope="module")
def test_points():
    images, labels = load("fashion-mnist", "test")
    return images[:200], labels[:200]


def test_standard_training_is_not_robust_and_sanity_checks_pass(tmp_path, test_points):
    train("standard", tmp_path / "std", overrides=FAST + ["data.train_size=2000"], progress=False, evaluate=False)
    model, _ = load_model(tmp_path / "std", "last")
    result = evaluate(model, *test_points, eps=0.1, attacks=("pgd20",), batch_size=200, progress=False)
    assert result.accuracy("clean") > 0.65
    assert result.accuracy("pgd20") < 0.05  # near zero at eps 0.1
    checks = {c["name"]: c["status"] for c in result.sanity}
    assert checks["robust<=clean"] == checks["large-eps"] == checks["more-steps"] == "passed", result.sanity


def test_adversarial_training_makes_the_model_robust(tmp_path, test_points):
    train("pgd-at", tmp_path / "pgd", overrides=FAST + ["data.train_size=4000", "perturbation.steps=3",
                                                       "perturbation.step_size=0.04"],
          progress=False, evaluate=False)
    model, _ = load_model(tmp_path / "pgd", "last")
    result = evaluate(model, *test_points, eps=0.1, attacks=("pgd20",), batch_size=200, sanity=False,
                      progress=False)
    assert result.accuracy("clean") > 0.6
    assert result.accuracy("pgd20") > 0.4, result.table()
