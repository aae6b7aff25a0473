"""Calibrate the demo preset: train a few candidate budgets in parallel and report test accuracy.

Each candidate is the `demo` preset plus overrides; every run reports clean, PGD-20 and CW-20 (and
AutoAttack with --autoattack) on the first --eval-n test images. Used once to choose the demo's budget:

    python benchmarks/demo_sweep.py --device cuda --jobs 6 --out /tmp/sweep
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = ["schedule.name=one-cycle", "optimizer.lr=0.2", "data.train_size=30000", "model.options.dropout=0"]
CANDIDATES = {
    "demo-now": [],
    "steps2-0.06": ["perturbation.steps=2", "perturbation.step_size=0.06"],
    "steps2-0.05": ["perturbation.steps=2", "perturbation.step_size=0.05"],
    "steps2-0.06-36k": ["perturbation.steps=2", "perturbation.step_size=0.06", "data.train_size=36000"],
    "steps3-27k": ["data.train_size=27000"],
    "steps3-bs256-lr0.3": ["batch_size=256", "optimizer.lr=0.3"],
    "steps2-0.06-seed1": ["perturbation.steps=2", "perturbation.step_size=0.06", "seed=1"],
    "demo-now-seed1": ["seed=1"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--autoattack", action="store_true")
    p.add_argument("--out", default="runs/demo-sweep")
    p.add_argument("--only", nargs="*", help="candidate names to run")
    args = p.parse_args()
    out = Path(args.out)
    attacks = "pgd20,cw20" + (",autoattack" if args.autoattack else "")
    names = args.only or list(CANDIDATES)

    def run(name: str) -> dict:
        cmd = [sys.executable, "-m", "advlab", "train", "--preset", "demo", "--out", str(out / name), "--overwrite",
               "--quiet", "--device", args.device, "--eval-n", str(args.eval_n), f"evaluation.attacks={attacks}",
               "evaluation.checkpoints=[last]", *CANDIDATES[name]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            return {"name": name, "error": done.stderr[-2000:]}
        s = json.loads((out / name / "summary.json").read_text())["last"]
        return {"name": name, "clean": s["clean"]["acc"],
                **{k: v["acc"] for k, v in s["attacks"].items()}, "robust": s["robust"]["acc"]}

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, names))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
