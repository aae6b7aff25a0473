"""Robust overfitting: PGD-AT and TRADES against the methods that fight it (NoiLIn, SGLR, self-adaptive training).

The regime: Fashion-MNIST, small-cnn without dropout or weight decay, 500 class-balanced training images without
augmentation, batch 32, SGD lr 0.02 on a long piecewise schedule (200 epochs, learning rate x0.1 at 50% and 75%),
PGD-10 training at eps 0.1. Here plain PGD-AT's validation robust accuracy peaks and then falls, so its best (validation-chosen)
checkpoint beats its last one. Every preset is trained once per seed with the same overrides; the table gives
clean, per-attack and robust (per-sample AND) test accuracy of best and last, the best-minus-last robust gap,
and each method's own diagnostics (NoiLIn's final noise rate and raises, the soft labels' mass on the given
class and the fraction whose top class moved). NoiLIn's window tau = 10 assumes 120 epochs; it is scaled to
``max(1, round(10 * epochs / 120))`` (``--tau`` sets it).

    python benchmarks/overfitting.py --device cuda                         # every preset, seeds 0 and 1
    python benchmarks/overfitting.py --presets pgd-at noilin --seeds 0     # the NoiLIn comparison only
    python benchmarks/overfitting.py --epochs 3 --train-size 100 --eval-n 20 --attacks pgd20 \\
        --seeds 0 --device cpu --out runs/overfitting-smoke                # a smoke run on CPU

Finished runs with the same config are reused, unfinished ones resumed (``--force`` retrains). Writes
``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>_curves.png`` (validation robust accuracy of every
run per epoch, and the noise rate of the NoiLIn runs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from advlab.config import load_config
from common import accuracy, cell, history, machine, run_one, sanity_cell

PRESETS = ["pgd-at", "noilin", "sglr", "self-adaptive", "trades", "trades-noilin", "trades-sglr",
           "trades-self-adaptive"]
# What makes PGD-AT overfit robustly on Fashion-MNIST (see benchmarks/OVERFITTING.md for the regimes tried).
REGIME = ["model.options.dropout=0", "data.crop_padding=0", "batch_size=32", "optimizer.lr=0.02",
          "optimizer.weight_decay=0", "validation.n=300"]
ATTACK_TITLES = {"pgd20": "PGD-20", "cw20": "CW-20", "pgd20-scaled": "PGD-20 scaled", "autoattack": "AA"}
OFFICIAL_TAU, OFFICIAL_EPOCHS = 10, 120
DIAGNOSTICS = {  # column -> (metrics.jsonl key of the last epoch, scale, digits)
    "final rate": ("noise_rate", 1.0, 3),
    "given mass": ("labels_given_mass", 1.0, 3),
    "flipped": ("labels_flipped", 1.0, 3),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS, help=f"presets to compare (default: {' '.join(PRESETS)})")
    p.add_argument("--train-size", type=int, default=500, help="class-balanced training subset (default 500)")
    p.add_argument("--epochs", type=int, default=200, help="epochs, LR x0.1 at 50%% and 75%% (default 200)")
    p.add_argument("--eval-n", type=int, default=1000, help="first N test images evaluated (default 1000)")
    p.add_argument("--attacks", default="pgd20,autoattack", help="comma-separated evaluation attacks")
    p.add_argument("--autoattack-version", default="standard",
                   choices=["standard", "fast", "apgd", "apgd-ce"], help="AutoAttack version (default standard)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--device", default="auto")
    p.add_argument("--tau", type=int, default=None, help="NoiLIn window; default max(1, round(10 * epochs / 120))")
    p.add_argument("--out", default="runs/overfitting")
    p.add_argument("--name", default="overfitting", help="base name of the JSON, markdown and plot files")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable), e.g. --set optimizer.lr=0.02")
    p.add_argument("--noise-set", dest="noise_extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for the NoiLIn runs only (repeatable), e.g. --noise-set labels.gamma=0.1")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p.parse_args(argv)


def tau_of(args: argparse.Namespace) -> int:
    """NoiLIn's window: ``--tau``, or 10 of 120 epochs scaled to ``--epochs`` (at least 1)."""
    return args.tau if args.tau is not None else max(1, round(OFFICIAL_TAU * args.epochs / OFFICIAL_EPOCHS))


def overrides(preset: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The config overrides of one run: the regime, the budget, then ``--set`` (and ``--noise-set``)."""
    items = [*REGIME, f"data.train_size={args.train_size}", f"epochs={args.epochs}",
             f"evaluation.n={args.eval_n}", f"evaluation.attacks=[{args.attacks}]",
             f"evaluation.autoattack_version={args.autoattack_version}", "evaluation.checkpoints=[best,last]",
             f"device={args.device}", f"seed={seed}", *args.extra]
    if load_config(preset).labels.name == "noilin":
        items += [f"labels.tau={tau_of(args)}", *args.noise_extra]
    return items


def run_dir_of(preset: str, seed: int, out: Path) -> Path:
    return out / Path(preset).stem / f"seed{seed}"


def measures(attacks: list[str]) -> list[str]:
    return ["clean", *attacks, "robust"]


def run_record(preset: str, seed: int, summary: dict[str, Any], attacks: list[str], run_dir: Path) -> dict[str, Any]:
    """One run's numbers: best and last accuracies, the gap, the per-epoch curves, the last epoch's diagnostics."""
    record: dict[str, Any] = {"preset": Path(preset).stem, "seed": seed, "run_dir": str(run_dir),
                              "best_epoch": summary.get("best_epoch"), "last_epoch": summary.get("last_epoch")}
    for which in ("best", "last"):
        record[which] = {m: accuracy(summary.get(which), m) for m in measures(attacks)}
        record[which]["sanity"] = (summary.get(which) or {}).get("sanity") or []
    b, l = record["best"]["robust"], record["last"]["robust"]
    record["gap"] = None if b is None or l is None else b - l
    rows = history(run_dir)
    keys = ("epoch", "train_acc", "val_clean", "val_robust", "noise_rate", "noise_flipped", "noise_raised")
    record["curves"] = {k: [r.get(k) for r in rows] for k in keys}
    record["noise_raises"] = sum(x or 0 for x in record["curves"]["noise_raised"]) if rows and "noise_rate" in rows[0] else None
    record["diagnostics"] = {key: rows[-1].get(key) for key, _, _ in DIAGNOSTICS.values()} if rows else {}
    return record


def markdown(records: list[dict[str, Any]], attacks: list[str], meta: dict[str, Any]) -> str:
    """One row per preset, mean ± std over seeds, accuracy in %."""
    cols = measures(attacks)
    titles = [ATTACK_TITLES.get(c, c) for c in cols]
    head = (["preset", "best ep."] + [f"best {t}" for t in titles] + [f"last {t}" for t in titles]
            + ["gap", *DIAGNOSTICS, "raises", "sanity checks (best, last)"])
    lines = [f"Fashion-MNIST, small-cnn, {meta['train_size']} training images, {meta['epochs']} epochs, overrides "
             f"`{' '.join(meta['regime'] + meta['extra'])}`, NoiLIn tau {meta['tau']}, evaluation on the first "
             f"{meta['eval_n']} test images (AutoAttack {meta['autoattack_version']}), seeds {meta['seeds']}; "
             f"{meta['machine']}; {meta['date']}.",
             "Accuracy in %, mean ± std over seeds; robust = per-sample AND of clean and the attacks; gap = best "
             "robust - last robust (points); final rate = NoiLIn's noise rate in the last epoch, raises = its "
             "schedule's raises; given mass / flipped = the last epoch's soft labels (mean weight on the given "
             "class, fraction whose top class is another).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset in dict.fromkeys(r["preset"] for r in records):
        rows = [r for r in records if r["preset"] == preset]
        cells = [preset, cell([r["best_epoch"] for r in rows], scale=1.0, digits=0)]
        cells += [cell([r["best"][c] for r in rows]) for c in cols]
        cells += [cell([r["last"][c] for r in rows]) for c in cols]
        cells.append(cell([r["gap"] for r in rows]))
        cells += [cell([r["diagnostics"].get(key) for r in rows], scale, digits)
                  for key, scale, digits in DIAGNOSTICS.values()]
        cells.append(cell([r["noise_raises"] for r in rows], 1.0, 0))
        cells.append(f"{sanity_cell([r['best'] for r in rows])}, {sanity_cell([r['last'] for r in rows])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Validation robust accuracy of every run (top) and the noise rate of the NoiLIn runs (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy = [r for r in records if r["noise_raises"] is not None]
    fig, axes = plt.subplots(2 if noisy else 1, 1, figsize=(8, 6.5 if noisy else 4), sharex=True, squeeze=False)
    top = axes[0][0]
    for r in records:
        c = r["curves"]
        top.plot(c["epoch"], c["val_robust"], label=f"{r['preset']} seed {r['seed']}")
    top.set_ylabel("validation PGD-10 accuracy")
    if noisy:
        bottom = axes[1][0]
        for r in noisy:
            c, label = r["curves"], f"{r['preset']} seed {r['seed']}"
            (line,) = bottom.plot(c["epoch"], c["noise_rate"], label=f"{label}: rate")
            bottom.plot(c["epoch"], c["noise_flipped"], linestyle=":", color=line.get_color(), label=f"{label}: realised")
        bottom.set_ylabel("noise rate")
    axes[-1][0].set_xlabel("epoch")
    for (ax,) in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/overfitting.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "train_size": args.train_size, "epochs": args.epochs, "eval_n": args.eval_n, "attacks": attacks,
            "autoattack_version": args.autoattack_version, "seeds": args.seeds, "presets": args.presets,
            "regime": REGIME, "extra": args.extra, "noise_extra": args.noise_extra, "tau": tau_of(args),
            "machine": machine(args.device), "date": datetime.date.today().isoformat()}
    records: list[dict[str, Any]] = []
    for seed in args.seeds:
        for preset in args.presets:
            run_dir = run_dir_of(preset, seed, out)
            summary = run_one(preset, run_dir, overrides(preset, seed, args), force=args.force, progress=args.progress)
            records.append(run_record(preset, seed, summary, attacks, run_dir))
            (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2))
            (out / f"{args.name}.md").write_text(markdown(records, attacks, meta))
            plot_curves(records, out / f"{args.name}_curves.png")
    print(markdown(records, attacks, meta))
    return {"meta": meta, "runs": records}


if __name__ == "__main__":
    main()
