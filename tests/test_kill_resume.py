"""Kill at any moment: a run SIGKILLed during an epoch, a checkpoint write, validation or the final evaluation
resumes (`advlab train --resume`) to exactly the metrics and summary of a run that was never interrupted; so
does a run stopped by Ctrl-C (SIGINT) or SIGTERM, which writes a mid-epoch checkpoint and exits with the line
that continues it, and a run killed after a periodic mid-epoch checkpoint (``checkpoint.every``), which resumes
in the middle of its epoch.

The moments are exact: ``ADVLAB_CRASH_AT`` (advlab.crashpoints) makes the run send itself SIGKILL (or the signal
named) the n-th time it passes a named point, which is what an outside ``kill`` at that moment does. A resume
run with a ``batch`` crash point one step past the steps left shows that it continued the epoch: restarting it
would train more steps and be killed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advlab.crashpoints import ENV

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

# 200 images, batch 50: 4 batches per epoch, 3 epochs
CONFIG = ["--preset", "pgd-at", "--quiet", "data.train_size=200", "batch_size=50", "epochs=3",
          "perturbation.steps=2", "validation.n=50", "evaluation.n=50", "evaluation.attacks=[pgd20]",
          "evaluation.checkpoints=[best,last]", "device=cpu"]
TIMING = {"seconds", "train_seconds", "images_per_second"}
STEPS = 12  # 3 epochs of 4 batches
MOMENTS = {  # name -> the n-th pass of a crash point
    "mid-epoch-2": "batch@6",
    "writing-last.pt-of-epoch-2": "write last.pt@2",
    "validation-of-epoch-3": "validation@3",
    "writing-summary": "write summary.json@1",
}


def _advlab(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                         env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # the same thread count in every process: the same floating-point order
    if crash_at:
        env[ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "advlab", "train", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _accuracies(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {"best_epoch": summary["best_epoch"], "last_epoch": summary["last_epoch"]}
    for which in ("best", "last"):
        entry = summary[which]
        out[which] = {"epoch": entry["epoch"], "clean": entry["clean"]["acc"], "robust": entry["robust"]["acc"],
                      **{name: a["acc"] for name, a in entry["attacks"].items()},
                      "sanity": {s["name"]: s["status"] for s in entry["sanity"]}}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("kill") / "uninterrupted"
    done = _advlab(["--out", str(run_dir), *CONFIG])
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_result(reference, tmp_path, moment):
    run_dir = tmp_path / "killed"
    killed = _advlab(["--out", str(run_dir), *CONFIG], crash_at=MOMENTS[moment])
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert not (run_dir / "summary.json").exists()
    for _ in range(3):  # resume until done (one resume suffices: the hook is not set any more)
        done = _advlab(["--resume", str(run_dir), "--quiet"])
        if (run_dir / "summary.json").exists():
            break
    assert done.returncode == 0, done.stderr
    assert _metrics(run_dir) == _metrics(reference)
    assert _accuracies(run_dir) == _accuracies(reference)
    assert not list(run_dir.glob(".*.tmp")), "a killed atomic write left its temporary file"


def test_a_run_killed_while_writing_its_last_best_checkpoint_keeps_best_pt_true(reference, tmp_path):
    # the n-th best.pt write is the one of the reference's final best epoch: after it, best.pt is never rewritten
    bests = [row["best_epoch"] for row in _metrics(reference)]
    writes = len(set(bests))
    run_dir = tmp_path / "killed"
    killed = _advlab(["--out", str(run_dir), *CONFIG], crash_at=f"write best.pt@{writes}")
    assert killed.returncode == -signal.SIGKILL
    done = _advlab(["--resume", str(run_dir), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert _metrics(run_dir) == _metrics(reference)
    assert _accuracies(run_dir) == _accuracies(reference)


def test_a_run_killed_during_the_final_evaluation_redoes_only_the_evaluation(reference, tmp_path):
    run_dir = tmp_path / "killed"
    killed = _advlab(["--out", str(run_dir), *CONFIG], crash_at="evaluation@1")
    assert killed.returncode == -signal.SIGKILL
    before = {name: (run_dir / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    done = _advlab(["--resume", str(run_dir), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before  # no epoch was trained again
    assert _accuracies(run_dir) == _accuracies(reference)


def test_a_torn_metrics_line_is_skipped_and_rewritten_on_resume(reference, tmp_path):
    run_dir = tmp_path / "killed"
    killed = _advlab(["--out", str(run_dir), *CONFIG], crash_at="validation@2")
    assert killed.returncode == -signal.SIGKILL
    with open(run_dir / "metrics.jsonl", "a") as f:  # what a kill in the middle of appending a line leaves
        f.write('{"epoch": 2, "lr": 0.0')
    from advlab.runs import RunDir

    assert [r["epoch"] for r in RunDir(run_dir).read_metrics()] == [1]
    done = _advlab(["--resume", str(run_dir), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert _metrics(run_dir) == _metrics(reference)


def _resumed(run_dir: Path, steps_left: int) -> None:
    """Resume ``run_dir`` without the final evaluation (the checkpoints are compared instead), with a SIGKILL on
    the step after the ``steps_left`` it should train: it continued its epoch, not restarted it."""
    done = _advlab(["--resume", str(run_dir), "--quiet", "--no-eval"], crash_at=f"batch@{steps_left + 1}")
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


def _same_checkpoints(run_dir: Path, reference: Path) -> None:
    """best.pt and last.pt hold the reference's epochs and weights, bit for bit."""
    from advlab.runs import load_checkpoint

    for which in ("best", "last"):
        a, b = load_checkpoint(run_dir / f"{which}.pt"), load_checkpoint(reference / f"{which}.pt")
        assert a["epoch"] == b["epoch"], which
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]), which


def test_ctrl_c_mid_epoch_writes_a_checkpoint_and_the_run_resumes_there(reference, tmp_path):
    run_dir = tmp_path / "stopped"
    stopped = _advlab(["--out", str(run_dir), *CONFIG], crash_at="batch@6:SIGINT")  # epoch 2, after batch 2
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"advlab train: stopped by SIGINT in epoch 2/3 after batch 2 of 4; saved to {run_dir / 'mid-epoch.pt'}; "
        f"continue with: advlab train --resume {run_dir}")
    assert (run_dir / "mid-epoch.pt").is_file() and len(_metrics(run_dir)) == 1
    _resumed(run_dir, STEPS - 6)
    assert _metrics(run_dir) == _metrics(reference)
    _same_checkpoints(run_dir, reference)
    assert not (run_dir / "mid-epoch.pt").exists()  # removed once its epoch finished


def test_sigterm_during_validation_stops_after_the_epochs_checkpoint(reference, tmp_path):
    run_dir = tmp_path / "stopped"
    stopped = _advlab(["--out", str(run_dir), *CONFIG], crash_at="validation@2:SIGTERM")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"advlab train: stopped by SIGTERM after epoch 2/3; saved to {run_dir / 'last.pt'}; "
        f"continue with: advlab train --resume {run_dir}")
    assert not (run_dir / "mid-epoch.pt").exists() and len(_metrics(run_dir)) == 2
    _resumed(run_dir, STEPS - 8)
    assert _metrics(run_dir) == _metrics(reference)
    _same_checkpoints(run_dir, reference)


@pytest.mark.parametrize("moment, crash_at, steps_left", [
    ("after-the-mid-epoch-checkpoint-of-step-6", "batch@7", STEPS - 6),  # resumes at epoch 2, batch 3
    # killed after epoch 1's last.pt, before its mid-epoch checkpoint (step 3) was removed: that one is stale,
    # removed by the resume, which continues from last.pt
    ("between-last.pt-of-epoch-1-and-the-removal", "epoch@1", STEPS - 4),
])
def test_a_run_killed_with_periodic_mid_epoch_checkpoints_resumes_from_the_right_one(reference, tmp_path, moment,
                                                                                     crash_at, steps_left):
    run_dir = tmp_path / "killed"  # a checkpoint every 3 steps: after steps 3, 6 and 9 (epoch 3, batch 1)
    killed = _advlab(["--out", str(run_dir), *CONFIG, "checkpoint.every=3"], crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert (run_dir / "mid-epoch.pt").is_file()
    _resumed(run_dir, steps_left)
    assert _metrics(run_dir) == _metrics(reference)  # writing checkpoints changed nothing of the run
    _same_checkpoints(run_dir, reference)
    assert not (run_dir / "mid-epoch.pt").exists()


def test_sigterm_from_outside_stops_with_the_resume_line_and_the_run_resumes_exactly(reference, tmp_path):
    import time

    run_dir = tmp_path / "stopped"
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "advlab", "train", "--out", str(run_dir), *CONFIG], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (run_dir / "last.pt").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # in epoch 2 (training or validation), wherever the process is
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].endswith(f"; continue with: advlab train --resume {run_dir}")
    done = _advlab(["--resume", str(run_dir), "--quiet", "--no-eval"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert _metrics(run_dir) == _metrics(reference)
    _same_checkpoints(run_dir, reference)
