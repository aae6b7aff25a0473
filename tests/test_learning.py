"""End to end on real Fashion-MNIST: a standard model has no robustness, adversarial training gives it.

Both runs use 6,000 training images and a one-cycle schedule: enough steps for the small CNN (no batch norm)
to leave its initial plateau in well under a minute of CPU each.
"""

import pytest

from advlab.data import load
from advlab.runs import load_model
from advlab.engine.train import train
from advlab.evaluation import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist")]

COMMON = ["device=cpu", "batch_size=32", "data.train_size=6000", "schedule.name=one-cycle", "schedule.peak=0.4",
          "optimizer.lr=0.05", "model.options.dropout=0", "validation.n=100"]


@pytest.fixture(scope="module")
def test_points():
    images, labels = load("fashion-mnist", "test")
    return images[:200], labels[:200]


@pytest.fixture(scope="module")
def standard_result(tmp_path_factory, test_points):
    out = tmp_path_factory.mktemp("std") / "run"
    train("standard", out, overrides=COMMON + ["epochs=5"], progress=False, evaluate=False)
    model, _ = load_model(out, "last")
    return evaluate(model, *test_points, eps=0.1, attacks=("pgd20",), batch_size=200, progress=False)


def test_standard_training_is_accurate_but_not_robust(standard_result):
    assert standard_result.accuracy("clean") > 0.8, standard_result.table()
    assert standard_result.accuracy("pgd20") < 0.15, standard_result.table()
    checks = {c["name"]: c["status"] for c in standard_result.sanity}
    assert checks["robust<=clean"] == checks["large-eps"] == checks["more-steps"] == "passed", standard_result.sanity


def test_adversarial_training_makes_the_model_robust(tmp_path, test_points, standard_result):
    train("pgd-at", tmp_path / "pgd", overrides=COMMON + ["epochs=3", "perturbation.steps=2",
                                                         "perturbation.step_size=0.06"],
          progress=False, evaluate=False)
    model, _ = load_model(tmp_path / "pgd", "last")
    result = evaluate(model, *test_points, eps=0.1, attacks=("pgd20",), batch_size=200, sanity=False,
                      progress=False)
    assert result.accuracy("clean") > 0.65, result.table()
    assert result.accuracy("pgd20") > 0.5, result.table()
    assert result.accuracy("pgd20") > standard_result.accuracy("pgd20") + 0.35
