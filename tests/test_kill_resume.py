"""Kill at any moment: a run SIGKILLed during an epoch, a checkpoint write, validation or the final evaluation
resumes (`advlab train --resume`) to exactly the metrics and summary of a run that was never interrupted.

The moments are exact: ``ADVLAB_CRASH_AT`` (advlab.crashpoints) makes the run send itself SIGKILL the n-th time
it passes a named point, which is what an outside ``kill -9`` at that moment does.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from advlab.crashpoints import ENV

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")]

# 200 images, batch 50: 4 batches per epoch, 3 epochs
CONFIG = ["--preset", "pgd-at", "--quiet", "data.train_size=200", "batch_size=50", "epochs=3",
          "perturbation.steps=2", "validation.n=50", "evaluation.n=50", "evaluation.attacks=[pgd20]",
          "evaluation.checkpoints=[best,last]", "device=cpu"]
TIMING = {"seconds", "train_seconds", "images_per_second"}
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
