"""Presets against each other on Fashion-MNIST: one training budget, best and last checkpoints, several attacks.

Trains each preset (default ``pgd-at``, ``gairat``, ``gair-fat``: the GAIRAT comparison) once per seed through
``advlab.engine.train.train``, with the same overrides for all of them, evaluates the best (validation-chosen)
and the last checkpoint with clean, PGD-20, CW-20, logit-scaled PGD-20 and AutoAttack, and writes a markdown
table (mean and spread over seeds) and the raw numbers as JSON.

    # the GPU run (full test set):
    python benchmarks/compare.py --device cuda --seeds 0 1 --eval-n 10000 --out runs/bench-gairat
    # a CPU smoke run:
    python benchmarks/compare.py --epochs 2 --train-size 500 --eval-n 50 --attacks pgd20,cw20,pgd20-scaled

Finished runs are reused (their ``summary.json``) when their resolved config equals the one asked for; an
interrupted run is resumed from its ``last.pt``; ``--fresh`` retrains everything.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from advlab.config import load_config, read_config
from common import history, machine, run_one, sanity_cell

ATTACKS = ["pgd20", "cw20", "pgd20-scaled", "autoattack"]
PRESETS = ["pgd-at", "gairat", "gair-fat"]


def overrides_for(args: argparse.Namespace, seed: int) -> list[str]:
    """The overrides every preset of the benchmark gets."""
    device = args.device
    eval_n = args.eval_n if args.eval_n is not None else (10000 if _is_cuda(device) else 1000)
    out = [f"device={device}", f"seed={seed}", f"evaluation.n={eval_n}",
           f"evaluation.attacks=[{','.join(args.attacks)}]"]
    if args.epochs is not None:
        out.append(f"epochs={args.epochs}")
    if args.train_size is not None:
        out.append(f"data.train_size={args.train_size}")
    if args.autoattack_version is not None:
        out.append(f"evaluation.autoattack_version={args.autoattack_version}")
    return out + list(args.set)


def _is_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def run_dir_of(preset: str, seed: int, out: Path) -> Path:
    return out / f"{preset}-seed{seed}"


def record(preset: str, seed: int, summary: dict[str, Any], run_dir: Path, attacks: list[str]) -> dict[str, Any]:
    """The numbers of one run: per checkpoint the accuracies, plus training cost and GAIR diagnostics."""
    rows = history(run_dir)
    config = read_config(run_dir / "config.yaml")
    fat_steps = [r["fat_mean_steps"] for r in rows if r.get("fat_mean_steps") is not None]
    steps = {"fgsm": 1, "none": 0}.get(config.perturbation.name, config.perturbation.options.get("steps", 10))
    out: dict[str, Any] = {
        "preset": preset, "seed": seed, "run_dir": str(run_dir), "epochs": config.epochs,
        "train_minutes": sum(r.get("train_seconds", 0.0) for r in rows) / 60,
        "attack_steps_per_example": statistics.mean(fat_steps) if fat_steps else float(steps),
        "last_gair_ess": next((r["gair_ess"] for r in reversed(rows) if r.get("gair_ess") is not None), None),
        "checkpoints": {},
    }
    for which in ("best", "last"):
        entry = summary.get(which)
        if not isinstance(entry, dict):
            continue
        accs = {"clean": entry["clean"]["acc"]}
        accs.update({a: entry["attacks"][a]["acc"] for a in attacks if a in entry.get("attacks", {})})
        accs["robust"] = entry["robust"]["acc"]
        out["checkpoints"][which] = {"epoch": entry["epoch"], **accs, "sanity": entry.get("sanity") or []}
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def table(records: list[dict[str, Any]], presets: list[str], attacks: list[str]) -> str:
    """Markdown: one row per preset and checkpoint, accuracies in % as mean ± sample std over seeds."""
    columns = ["clean", *attacks, "robust"]
    head = ["preset", "ckpt", "epoch", *columns, "sanity checks", "attack steps/ex.", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset in presets:
        runs = [r for r in records if r["preset"] == preset]
        for which in ("best", "last"):
            entries = [r["checkpoints"][which] for r in runs if which in r["checkpoints"]]
            if not entries:
                continue
            cells = [preset, which, ",".join(str(e["epoch"]) for e in entries)]
            cells += [_cell([e[c] for e in entries if c in e]) for c in columns]
            cells.append(sanity_cell(entries))
            cells.append(f"{statistics.mean(r['attack_steps_per_example'] for r in runs):.2f}")
            cells.append(f"{statistics.mean(r['train_minutes'] for r in runs):.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args: argparse.Namespace, records: list[dict[str, Any]], command: str) -> str:
    seeds = ", ".join(map(str, args.seeds))
    config = load_config(args.presets[0], overrides_for(args, args.seeds[0]))
    return "\n".join([
        f"# {args.title}",
        "",
        f"- command: `{command}`",
        f"- machine: {machine(args.device)}",
        f"- date: {datetime.date.today().isoformat()}",
        f"- seeds: {seeds}; cells are mean ± sample standard deviation over seeds, accuracies in %",
        f"- budget: {config.model.name}, {config.epochs} epochs, train size "
        f"{config.data.train_size or 'all'}, eps {config.eps} ({config.norm}), test points {config.evaluation.n}, "
        f"AutoAttack {config.evaluation.autoattack_version}",
        f"- robust = per-sample AND of clean and every attack; best = highest validation robust accuracy under "
        f"{config.validation.attack} ({config.validation.n} validation points)",
        "",
        table(records, args.presets, args.attacks),
        "",
    ])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train and evaluate every preset and seed (reusing finished runs), write the markdown and JSON reports;
    return the records (one per preset and seed)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--epochs", type=int, default=None, help="default: each preset's own")
    p.add_argument("--train-size", type=int, default=None, help="default: the whole training split")
    p.add_argument("--eval-n", type=int, default=None, help="test points; default 10000 on CUDA, else 1000")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--attacks", type=lambda s: [a.strip() for a in s.split(",") if a.strip()], default=ATTACKS,
                   help=f"comma-separated evaluation attacks (default {','.join(ATTACKS)})")
    p.add_argument("--autoattack-version", choices=["standard", "fast", "apgd", "apgd-ce"], default=None)
    p.add_argument("--set", nargs="*", default=[], help="more overrides for every preset, e.g. batch_size=256")
    p.add_argument("--out", default="runs/bench-gairat")
    p.add_argument("--md", default=None, help="markdown output (default <out>/<name>.md)")
    p.add_argument("--title", default="GAIRAT on Fashion-MNIST", help="heading of the markdown report")
    p.add_argument("--name", default="gairat", help="base name of the JSON and markdown files")
    p.add_argument("--fresh", action="store_true", help="retrain even when a finished run is there")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    args = p.parse_args(argv)
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in args.seeds:
        for preset in args.presets:
            run_dir = run_dir_of(preset, seed, out)
            summary = run_one(preset, run_dir, overrides_for(args, seed), force=args.fresh, progress=args.progress)
            records.append(record(preset, seed, summary, run_dir, args.attacks))
            (out / f"{args.name}.json").write_text(json.dumps({"command": command, "machine": machine(args.device),
                                                          "records": records}, indent=2))
    text = report(args, records, command)
    md = Path(args.md) if args.md else out / f"{args.name}.md"
    md.write_text(text)
    print(text)
    print(f"wrote {md} and {out / (args.name + '.json')}", file=sys.stderr)
    return records


if __name__ == "__main__":
    main()
