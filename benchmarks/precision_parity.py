"""Does bf16 training keep fp32's robustness? The demo's regime trained in fp32 and in bf16 + channels-last.

For each seed and each setting the ``demo`` preset trains without its final evaluation; its best checkpoint
(chosen by the run's own validation) is then attacked on the whole validation split (1,000 images carved from
the training files) and on the first 1,000 test images with PGD-20 and AutoAttack (pyautoattack, advlab's
version ``apgd``: APGD-CE + APGD-DLR). ``precision: auto`` may pick bf16 only if the validation numbers say
the two settings are the same within their spread over seeds (the rule of ``advlab compare``: the difference of
the means is no larger than the sum of the two standard deviations). The test numbers are reported beside,
never used to decide.

    python benchmarks/precision_parity.py --out runs/precision --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import advlab
from advlab import data as datasets
from advlab.engine.train import train
from advlab.runs import load_model

SETTINGS = {"fp32": ["precision=fp32", "channels_last=false"], "bf16": ["precision=bf16", "channels_last=true"]}


def evaluate(run_dir: Path, split: str, n: int) -> dict[str, float]:
    model, _ = load_model(run_dir, "best")
    images, labels = datasets.load("fashion-mnist", split)
    result = advlab.evaluate(model, images[:n], labels[:n], 0.1, "linf", attacks=("pgd20", "autoattack"),
                             autoattack_version="apgd", sanity=False, progress=False, batch_size=500)
    return {"clean": result.accuracy("clean"), "pgd20": result.accuracy("pgd20"),
            "autoattack": result.accuracy("autoattack"), "robust": result.accuracy("robust")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--preset", default="demo")
    p.add_argument("--n", type=int, default=1000, help="validation and test points evaluated")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for both settings (e.g. a smaller run)")
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:
        for name, overrides in SETTINGS.items():
            run_dir = args.out / f"{name}-s{seed}"
            start = time.perf_counter()
            done = train(args.preset, run_dir, overrides=[f"seed={seed}", "device=cpu", *overrides, *args.extra],
                         overwrite=True, progress=False, evaluate=False)
            seconds = time.perf_counter() - start
            train_seconds = sum(r["train_seconds"] for r in done["history"])
            row = {"setting": name, "seed": seed, "train_seconds": train_seconds, "wall_seconds": seconds,
                   "best_epoch": done["best"]["epoch"], "val": evaluate(run_dir, "val", args.n),
                   "test": evaluate(run_dir, "test", args.n)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    report = {"preset": args.preset, "extra": args.extra, "seeds": args.seeds, "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "rows": rows}
    lines = ["| setting | split | clean | PGD-20 | AutoAttack (apgd) | robust (AND) | training s |", "|---|---|---|---|---|---|---|"]
    same = {}
    for split in ("val", "test"):
        for name in SETTINGS:
            mine = [r for r in rows if r["setting"] == name]

            def cell(key: str) -> str:
                values = [100 * r[split][key] for r in mine]
                return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 \
                    else f"{values[0]:.1f}"
            secs = statistics.mean(r["train_seconds"] for r in mine)
            lines.append(f"| {name} | {split} | {cell('clean')} | {cell('pgd20')} | {cell('autoattack')} | "
                         f"{cell('robust')} | {secs:.0f} |")
    for key in ("clean", "robust"):
        a = [r["val"][key] for r in rows if r["setting"] == "fp32"]
        b = [r["val"][key] for r in rows if r["setting"] == "bf16"]
        spread = (statistics.stdev(a) + statistics.stdev(b)) if len(a) > 1 else 0.0
        same[key] = abs(statistics.mean(a) - statistics.mean(b)) <= spread
    report["same_on_validation"] = same
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    text = "\n".join(lines) + f"\n\nsame within the spread on validation: {same}\n"
    (args.out / "precision_parity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
