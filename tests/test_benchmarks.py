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
    for name in ("overfitting", "compare", "common", "speed", "caat", "ssat", "fidelity", "time_to_robust"):
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


def test_time_to_robust_race_tiny(tmp_path, one_thread):
    """benchmarks/time_to_robust.py: each contestant trains epoch by epoch until its schedule ends (nothing reaches
    70% at this size), its rows are cumulative training seconds, and the stopped checkpoint is tested once."""
    import time_to_robust

    out = tmp_path / "ttr"
    assert time_to_robust.main(["--smoke", "--out", str(out), "--contestants", "speedrun", "plain", "pgd2-2ep"]) == 0
    report = json.loads((out / "time_to_robust.json").read_text())
    assert [c["key"] for c in report["contestants"]] == ["speedrun", "plain", "pgd2-2ep"]
    epochs = {"speedrun": 2, "plain": 1, "pgd2-2ep": 2}  # the preset's own 2, --smoke's 1, the candidate's 2
    for c in report["contestants"]:
        assert [r["epoch"] for r in c["rows"]] == list(range(1, epochs[c["key"]] + 1))
        seconds = [r["train_seconds"] for r in c["rows"]]
        assert 0 < seconds[0] and seconds == sorted(seconds) and c["reached"]["train_seconds"] == seconds[-1]
        assert not c["reached"]["reached"] and 0 <= c["reached"]["test_autoattack"] <= c["reached"]["test_clean"]
    assert report["speedrun_choice"] is None
    rows = (out / "time_to_robust.md").read_text().splitlines()[2:5]
    assert [row.split(" | ")[0] for row in rows] == ["| advlab speedrun", "| plain PGD-10 loop (fp32, eager)",
                                                     "| advlab PGD-2, 2 epochs (candidate)"]
    assert (out / "time_to_robust.png").stat().st_size > 0


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


def test_caat_benchmark_weights_and_fidelity_measurements_tiny(tmp_path, capsys, one_thread):
    """benchmarks/caat.py trains a CAAT job and prints its per-class weights from metrics.jsonl; every measurement
    of benchmarks/fidelity.py runs on that run and its tables hold the run's own numbers."""
    import caat
    import fidelity

    out = tmp_path / "bench"
    tiny = ["--presets", "caat", "--scenarios", "clean", "--seeds", "0", "--epochs", "2", "--train-size", "100",
            "--eval-n", "10", "--val-n", "20", "--device", "cpu", "--out", str(out), "--set", "batch_size=50",
            "perturbation.steps=2", "weighting.meta_every=3", "weighting.meta_batch_size=20",
            "weighting.attack_steps=2", "evaluation.attacks=[pgd20]", "evaluation.sanity=false", "data.meta_size=40",
            "validation.attack=pgd20"]
    caat.main(["--worker", *tiny])
    run = out / "clean" / "caat-seed0"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["caat_meta_steps"] for r in rows] == [0, 1]  # 2 steps an epoch: the run's 3rd step is a meta step
    capsys.readouterr()
    caat.main(["--weights", *tiny])
    table = capsys.readouterr().out
    for r in (rows[0], rows[-1]):
        assert " | ".join(f"{v:.2f}" for v in r["caat_a_per_class"]) in table

    caat.main(["--meta-net", str(run)])
    table = capsys.readouterr().out
    from advlab.config import read_config
    from advlab.data import run_training_split
    from advlab.runs import load_model
    import torch

    config = read_config(run / "config.yaml")
    split = run_training_split(config.data, config.seed)
    model, _ = load_model(run, "last")
    with torch.no_grad():
        wrong = (model(split.images.float().div(255)).argmax(1) != split.labels).double()
    error = torch.zeros(10, dtype=torch.float64).index_add_(0, split.labels, wrong) / torch.bincount(
        split.labels, minlength=10).double().clamp_min(1)
    assert "| training error of the last model | " + " | ".join(f"{v:.2f}" for v in error.tolist()) + " |" in table
    assert table.count("| a, final meta-net |") == table.count("| a, initial meta-net |") == 1

    fidelity.main(["meta-steps", str(run)])
    assert f"| [0, 1] | [0, 0] |" in capsys.readouterr().out  # the code's per-epoch counter: 2 full batches < 3
    fidelity.main(["start", str(run), "--n", "10"])
    start = capsys.readouterr().out
    assert start.count("\n| CAAT views") == 1 and start.count("\n| TRADES / AFF") == 1
    fidelity.main(["knn-ties", str(run), "--n", "10", "--k", "5"])
    ties = capsys.readouterr().out.strip().splitlines()[-1]
    assert ties.startswith("| ") and ties.count("%") == 4
    fidelity.main(["frl-eps", str(run)])
    assert "largest difference: w1" in capsys.readouterr().out
    fidelity.main(["meta-gradient", str(run)])
    assert capsys.readouterr().out.count("\n| 0.001 |") == 1
