"""The benchmark scripts run end to end on a tiny budget and their tables hold what they claim."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.usefixtures("fashion_mnist")


@pytest.fixture(autouse=True)
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("overfitting", "compare", "common"):
        sys.modules.pop(name, None)


def test_overfitting_benchmark_tiny(tmp_path):
    import overfitting

    out = tmp_path / "ovf"
    report = overfitting.main(["--presets", "pgd-at", "noilin", "sglr", "--epochs", "2", "--train-size", "60",
                               "--eval-n", "20", "--attacks", "pgd20", "--seeds", "0", "--device", "cpu",
                               "--out", str(out), "--set", "validation.n=50", "--set", "perturbation.steps=2"])
    runs = {r["preset"]: r for r in report["runs"]}
    assert set(runs) == {"pgd-at", "noilin", "sglr"}
    for r in runs.values():
        assert r["gap"] == pytest.approx(r["best"]["robust"] - r["last"]["robust"])
        assert len(r["curves"]["val_robust"]) == 2
    assert runs["noilin"]["noise_raises"] is not None and runs["pgd-at"]["noise_raises"] is None
    assert runs["noilin"]["diagnostics"]["noise_rate"] == pytest.approx(0.05)
    assert runs["sglr"]["diagnostics"]["labels_given_mass"] is not None
    md = (out / "overfitting.md").read_text()
    assert md.count("\n| pgd-at |") == md.count("\n| noilin |") == md.count("\n| sglr |") == 1
    assert (out / "overfitting_curves.png").stat().st_size > 0
    saved = json.loads((out / "overfitting.json").read_text())
    assert saved["meta"]["tau"] == 1  # 10 of 120 epochs scaled to 2, at least 1
    # a second call reuses the finished runs instead of training again
    mtime = (out / "pgd-at" / "seed0" / "summary.json").stat().st_mtime_ns
    overfitting.main(["--presets", "pgd-at", "--epochs", "2", "--train-size", "60", "--eval-n", "20",
                      "--attacks", "pgd20", "--seeds", "0", "--device", "cpu", "--out", str(out),
                      "--set", "validation.n=50", "--set", "perturbation.steps=2"])
    assert (out / "pgd-at" / "seed0" / "summary.json").stat().st_mtime_ns == mtime
