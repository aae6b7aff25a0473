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

NODROP = ["model.options.dropout=0"]
CANDIDATES = {
    "oc0.2-30k-steps3": ["schedule.name=one-cycle", "optimizer.lr=0.2", "data.train_size=30000", "perturbation.steps=3",
                         "perturbation.step_size=0.04", *NODROP],
    "pw0.1-ms0.8-30k-steps3": ["optimizer.lr=0.1", "schedule.milestones=[0.8]", "data.train_size=30000",
                               "perturbation.steps=3", "perturbation.step_size=0.04", *NODROP],
    "pw0.1-ms0.8-30k-steps3-0.033": ["optimizer.lr=0.1", "schedule.milestones=[0.8]", "data.train_size=30000",
                                     "perturbation.steps=3", "perturbation.step_size=0.033", *NODROP],
    "oc0.2-step0.025": ["schedule.name=one-cycle", "optimizer.lr=0.2", "perturbation.step_size=0.025", *NODROP],
    "pw0.1-ms0.8-4ep15k": ["optimizer.lr=0.1", "schedule.milestones=[0.8]", "perturbation.step_size=0.025",
                           "epochs=4", "data.train_size=15000", *NODROP],
    "oc0.2-30k-2ep": ["schedule.name=one-cycle", "optimizer.lr=0.2", "perturbation.step_size=0.025",
                      "data.train_size=30000", "epochs=2", *NODROP],
    "pw0.1-ms0.8-wd1e-4": ["optimizer.lr=0.1", "schedule.milestones=[0.8]", "perturbation.step_size=0.025",
                           "optimizer.weight_decay=1e-4", *NODROP],
    "oc0.15-ms-step0.025": ["schedule.name=one-cycle", "optimizer.lr=0.15", "perturbation.step_size=0.025", *NODROP],
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
