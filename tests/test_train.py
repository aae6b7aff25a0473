"""The training engine: every preset composes and runs, resume is exact, a killed run resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advlab.config import load_config, preset_names
from advlab.runs import load_checkpoint, load_model
from advlab.engine.train import train
from advlab.runs import RunDir
from advlab.errors import AdvlabError

pytestmark = pytest.mark.usefixtures("fashion_mnist")

TINY = ["data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=50",
        "device=cpu"]
TIMING = {"seconds", "train_seconds", "images_per_second"}


def rows(run_dir):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in preset_names() if p != "demo"])
def test_every_preset_composes_and_runs_one_epoch(preset, tmp_path):
    overrides = TINY + ["epochs=1"]
    if load_config(preset).perturbation.name not in ("pgd", "fat"):
        overrides.remove("perturbation.steps=2")
    out = train(preset, tmp_path / preset, overrides=overrides, progress=False, evaluate=False)
    (row,) = out["history"]
    assert 0 <= row["val_robust"] <= row["val_clean"] <= 1
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    model, ckpt = load_model(tmp_path / preset, "last")
    assert ckpt["epoch"] == 1


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path, whole_and_resumed):
    config = load_config("pgd-at", TINY + ["epochs=3", "schedule.milestones=[0.5]"])

    def stopped_after_one(run_dir):
        assert len(rows(run_dir)) == 1

    full, part = whole_and_resumed(config, tmp_path, 1, stopped_after_one)
    assert rows(part) == rows(full)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
def test_sigkill_mid_epoch_loses_at_most_that_epoch(tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "advlab", "train", "--preset", "pgd-at", "--out", str(run_dir), "--epochs", "4",
           "--no-eval", "--quiet", "data.train_size=600", "batch_size=50", "perturbation.steps=3",
           "validation.n=50", "device=cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    time.sleep(0.3)  # well inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    model, ckpt = load_model(run_dir, "last")  # still loadable
    assert ckpt["epoch"] >= 1
    done = subprocess.run([sys.executable, "-m", "advlab", "train", "--resume", str(run_dir), "--no-eval", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2, 3, 4]
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 4


def test_run_directory_is_not_overwritten_by_accident(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    with pytest.raises(AdvlabError, match="--resume"):
        RunDir.create(tmp_path / "run", overwrite=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_bad_option_with_overwrite_leaves_the_run_untouched_and_resumable(tmp_path, capsys, stopped_run):
    from advlab.cli import main

    from advlab.config import load_config
    config = load_config("pgd-at", TINY + ["epochs=2"])
    run = RunDir.create(tmp_path / "D", overwrite=False)
    run.write_config(config)
    stopped_run(config, run, 1)  # an interrupted run: one epoch of two finished
    run_dir = run.path
    before = _snapshot(run_dir)
    code = main(["train", "--preset", "noilin", "--out", str(run_dir), "--overwrite", "--quiet", "labels.rate=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["advlab train: error: labels.rate: must be in [0, 1], got 2"]
    assert _snapshot(run_dir) == before
    # the same for a bad dataset, model or part combination: checked before anything is removed
    for bad in (["--dataset", "nosuch"], ["weighting.name=self-adaptive"], ["model.name=nosuch"]):
        assert main(["train", "--preset", "pgd-at", "--out", str(run_dir), "--overwrite", "--quiet", *bad]) == 2
        assert _snapshot(run_dir) == before
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--no-eval", "--quiet"]) == 0
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2]


@pytest.mark.slow
def test_training_with_label_noise_and_a_long_tail_records_what_was_applied(tmp_path):
    from advlab import data

    val_before = data.load("fashion-mnist", "val")[1]
    test_before = data.load("fashion-mnist", "test")[1]
    out = tmp_path / "noisy"
    train("pgd-at", out, overrides=TINY + ["epochs=1", "data.train_size=2000", "data.label_noise.rate=0.4",
                                           "data.label_noise.seed=3", "evaluation.n=50", "evaluation.attacks=[pgd20]"],
          progress=False, evaluate=True)
    record = json.loads((out / "data.json").read_text())
    noise = record["label_noise"]
    assert noise["kind"] == "symmetric" and abs(noise["realised_rate"] - 0.4) <= 0.01
    assert len(noise["realised_rate_per_class"]) == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["label_noise"]["realised_rate"] == noise["realised_rate"]
    assert torch.equal(data.load("fashion-mnist", "val")[1], val_before)
    assert torch.equal(data.load("fashion-mnist", "test")[1], test_before)

    tail = tmp_path / "tail"
    train("pgd-at", tail, overrides=TINY + ["epochs=1", "data.train_size=2000", "data.imbalance.ratio=10"],
          progress=False, evaluate=False)
    counts = json.loads((tail / "data.json").read_text())["class_counts"]
    expected = [round(200 * 10 ** (-c / 9)) for c in range(10)]
    assert counts == expected


@pytest.mark.slow
def test_warm_start_loads_the_model_of_another_run_before_training(tmp_path):
    from advlab.config import load_config
    from advlab.engine.run import create_run
    from advlab.errors import ConfigError

    first = tmp_path / "first"
    train("pgd-at", first, overrides=TINY + ["epochs=1"], progress=False, evaluate=False)
    best = load_checkpoint(first / "best.pt")["model"]
    warm = create_run(load_config("trades", TINY + ["epochs=1", f"init.from={first}"]), progress=False)
    for name, value in warm.model.state_dict().items():
        assert torch.equal(value.cpu(), best[name]), name
    cold = create_run(load_config("trades", TINY + ["epochs=1"]), progress=False)
    assert not all(torch.equal(v, best[k]) for k, v in cold.model.state_dict().items())
    with pytest.raises(ConfigError, match="init.from"):
        train("trades", tmp_path / "bad", overrides=TINY + [f"init.from={tmp_path / 'nowhere'}"], progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="init.from: .* holds model"):
        create_run(load_config("trades", TINY + [f"init.from={first}", "model.options.dropout=0.3"]), progress=False)
