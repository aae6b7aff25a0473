"""The benchmark scripts run end to end on a tiny budget and their tables hold what they claim."""
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fashion_mnist")]


@pytest.fixture(autouse=True)
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("overfitting", "compare", "common", "speed", "caat", "ssat"):
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


def test_compare_benchmark_tiny(tmp_path, one_thread):
    """benchmarks/compare.py (GAIRAT.md, BASELINES.md) end to end: its table holds each run's summary numbers."""
    import compare

    out = tmp_path / "cmp"
    records = compare.main(["--presets", "pgd-at", "gairat", "--epochs", "1", "--train-size", "60", "--eval-n", "10",
                            "--attacks", "pgd20", "--seeds", "0", "--device", "cpu", "--out", str(out),
                            "--set", "validation.n=20", "perturbation.steps=2", "batch_size=30"])
    assert [r["preset"] for r in records] == ["pgd-at", "gairat"]
    md = (out / "gairat.md").read_text()
    assert "best = highest validation robust accuracy under pgd20 (20 validation points)" in md
    assert "compare.py --presets pgd-at gairat" in md and "seeds: 0" in md
    for r in records:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert r["epochs"] == 1 and r["attack_steps_per_example"] == 2.0
        for which in ("best", "last"):
            entry, row = summary[which], r["checkpoints"][which]
            assert row["clean"] == entry["clean"]["acc"] and row["robust"] == entry["robust"]["acc"]
            assert row["pgd20"] == entry["attacks"]["pgd20"]["acc"]
            cells = [f"{100 * row[c]:.2f}" for c in ("clean", "pgd20", "robust")]
            assert f"| {r['preset']} | {which} | {row['epoch']} | " + " | ".join(cells) + " |" in md
    saved = json.loads((out / "gairat.json").read_text())
    assert saved["records"] == json.loads(json.dumps(records))


def test_speed_benchmark_tiny(capsys, one_thread):
    """benchmarks/speed.py runs every contestant in every round and reports ratios of the medians."""
    import speed

    result = speed.main(["--models", "small-cnn", "--device", "cpu", "--batches", "2", "--rounds", "2",
                         "--warmup", "1", "--batch-size", "16", "--variants", "default", "--no-art"])
    contestants = result["models"]["small-cnn"]["contestants"]
    assert list(contestants) == ["plain", "engine default"]
    for c in contestants.values():
        assert len(c["rounds"]) == 2 and all(v > 0 for v in c["rounds"])
        assert c["median"] == pytest.approx(sum(c["rounds"]) / 2)
        assert c["vs_plain"] == pytest.approx(c["median"] / contestants["plain"]["median"])
        assert c["vs_art"] is None
    out = capsys.readouterr().out
    assert out.rstrip().endswith(result["table"])
    rows = result["table"].splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == list(contestants)
    assert all(row.endswith("| not run (--no-art) |") for row in rows)


def test_speed_benchmark_art_tiny(one_thread):
    """ART's contestant (when installed) trains too and sets the ART column."""
    pytest.importorskip("art")
    import speed

    result = speed.main(["--models", "small-cnn", "--device", "cpu", "--batches", "1", "--rounds", "1",
                         "--warmup", "0", "--batch-size", "16", "--variants", "default"])
    contestants = result["models"]["small-cnn"]["contestants"]
    assert list(contestants) == ["plain", "engine default", "ART"]
    assert contestants["ART"]["rounds"][0] > 0 and contestants["ART"]["vs_art"] == pytest.approx(1.0)
    plain, art = contestants["plain"]["median"], contestants["ART"]["median"]
    assert contestants["plain"]["vs_art"] == pytest.approx(plain / art)


def test_ssat_benchmark_tiny(tmp_path, one_thread):
    """benchmarks/ssat.py (SSAT.md) end to end on simclr -> ssat: jobs wait for the run they start from, and the
    table holds each evaluation's numbers (DSR = knn-guide / clean)."""
    import ssat

    out = tmp_path / "ssat"
    tiny = ["--runs", "simclr", "ssat", "--seeds", "0", "--ssl-epochs", "1", "--ssat-epochs", "1", "--train-size", "100",
            "--val-n", "20", "--eval-n", "10", "--square-queries", "5", "--device", "cpu", "--out", str(out),
            "--set", "batch_size=50", "knn.k=5"]
    ssat.main(["--worker", *tiny])
    assert (out / "seed0" / "ssat" / "config.yaml").read_text().count(str(out / "seed0" / "simclr" / "last.pt")) == 1
    ssat.main(tiny)
    md = (out / "ssat.md").read_text()
    for row, run in (("simclr + kNN", "simclr"), ("ssat + kNN", "ssat")):
        saved = json.loads((out / "seed0" / run / "bench-eval-knn.json").read_text())
        result = saved["result"]
        assert saved["classifier"]["kind"] == "knn" and saved["classifier"]["k"] == 5
        clean, knn = result["clean"]["acc"], result["attacks"]["knn-guide"]["acc"]
        cells = [f"{100 * v:.1f}" for v in (clean, result["attacks"]["pgd20"]["acc"], knn)]
        assert f"| {row} | {saved['epoch']} | " + " | ".join(cells) + " |" in md
        dsr = f"{100 * knn / clean:.1f}" if clean else "–"
        assert f"| {dsr} |" in md.split(f"| {row} |")[1].splitlines()[0] + "|"
