"""NoiLIn against robust overfitting: PGD-AT with and without noisy-label injection on Fashion-MNIST.

The regime where plain PGD-AT overfits robustly: small-cnn on a small class-balanced training subset, a
long piecewise schedule (learning rate x0.1 at 50% and 75% of the epochs), PGD-10 training at eps 0.1.
Each preset is trained once per seed with ``advlab.engine.trainer.train``; its ``summary.json`` gives the
clean, per-attack and per-sample-AND robust test accuracy of the best (validation-selected) and the last
checkpoint. NoiLIn's window tau = 10 assumes 120 epochs; for other lengths the script scales it to
``max(1, round(10 * epochs / 120))`` (``--tau`` sets it). The half cap on the rate already scales (3/4 of
the epochs).

    python benchmarks/noilin.py                                   # the full comparison (GPU)
    python benchmarks/noilin.py --epochs 3 --train-size 300 --eval-n 50 --attacks pgd20 \\
        --seeds 0 --device cpu --out runs/noilin-smoke              # a smoke test on CPU

Finished runs with the same config are reused, unfinished ones resumed (``--force`` retrains). Writes
``<out>/noilin.json``, ``<out>/noilin.md`` and ``<out>/noilin_curves.png`` (validation robust accuracy of
every run and the noise rate of the NoiLIn runs, per epoch).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from advlab.config import load_config, read_config
from advlab.engine.trainer import resume, train

PRESETS = ["pgd-at", "noilin"]
ATTACK_TITLES = {"pgd20": "PGD-20", "cw20": "CW-20", "autoattack": "AA"}
OFFICIAL_TAU, OFFICIAL_EPOCHS = 10, 120


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS,
                   help="presets (names or YAML paths) to compare (default: pgd-at noilin)")
    p.add_argument("--train-size", type=int, default=2000, help="class-balanced training subset")
    p.add_argument("--epochs", type=int, default=100, help="epochs (LR x0.1 at 50%% and 75%%)")
    p.add_argument("--eval-n", type=int, default=1000, help="first N test images evaluated")
    p.add_argument("--attacks", default="pgd20,autoattack", help="comma-separated evaluation attacks")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--device", default="auto")
    p.add_argument("--tau", type=int, default=None,
                   help="NoiLIn window; default max(1, round(10 * epochs / 120))")
    p.add_argument("--out", default="runs/noilin")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable), e.g. --set validation.n=500")
    p.add_argument("--noise-set", dest="noise_extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for the NoiLIn runs only (repeatable), e.g. --noise-set labels.gamma=0.1")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p.parse_args(argv)


def scaled_tau(epochs: int) -> int:
    """NoiLIn's window scaled from 10 of 120 epochs to ``epochs`` (at least 1)."""
    return max(1, round(OFFICIAL_TAU * epochs / OFFICIAL_EPOCHS))


def uses_noilin(preset: str) -> bool:
    return load_config(preset).labels.name == "noilin"


def overrides(preset: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The config overrides of one run."""
    items = [f"data.train_size={args.train_size}", f"epochs={args.epochs}", f"evaluation.n={args.eval_n}",
             f"evaluation.attacks=[{args.attacks}]", "evaluation.checkpoints=[best,last]",
             f"device={args.device}", f"seed={seed}", *args.extra]
    if uses_noilin(preset):
        tau = args.tau if args.tau is not None else scaled_tau(args.epochs)
        items += [f"labels.tau={tau}", *args.noise_extra]
    return items


def run_dir_of(preset: str, seed: int, out: Path) -> Path:
    return out / Path(preset).stem / f"seed{seed}"


def run_one(preset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse, or resume) one run; return its summary."""
    config = load_config(preset, overrides(preset, seed, args))
    run_dir = run_dir_of(preset, seed, Path(args.out))
    tag = f"[{Path(preset).stem} seed {seed}]"
    same = (run_dir / "config.yaml").exists() and read_config(run_dir / "config.yaml").to_dict() == config.to_dict()
    if same and not args.force and (run_dir / "summary.json").exists():
        print(f"{tag} reusing {run_dir}", file=sys.stderr, flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    if same and not args.force and (run_dir / "last.pt").exists():
        print(f"{tag} resuming {run_dir}", file=sys.stderr, flush=True)
        return resume(run_dir, progress=not args.quiet)
    print(f"{tag} training into {run_dir}", file=sys.stderr, flush=True)
    return train(config, run_dir, overwrite=True, progress=not args.quiet)


# --------------------------------------------------------------------------------------------------
# numbers


def accuracy(result: dict[str, Any], what: str) -> float | None:
    """``clean``, ``robust`` or an attack's accuracy from one checkpoint's entry of summary.json."""
    entry = result.get(what) if what in ("clean", "robust") else (result.get("attacks") or {}).get(what)
    if isinstance(entry, dict):
        entry = entry.get("acc")
    return float(entry) if isinstance(entry, (int, float)) else None


def curves(run_dir: Path) -> dict[str, list]:
    """Per-epoch validation accuracy and (NoiLIn runs) noise rate and realised flip fraction."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    out: dict[str, list] = {k: [r.get(k) for r in rows] for k in ("epoch", "val_clean", "val_robust")}
    if rows and "noise_rate" in rows[0]:
        for k in ("noise_rate", "noise_flipped", "noise_raised"):
            out[k] = [r.get(k) for r in rows]
    return out


def measures(attacks: list[str]) -> list[str]:
    return ["clean", *attacks, "robust"]


def run_record(preset: str, seed: int, summary: dict[str, Any], attacks: list[str], run_dir: Path) -> dict[str, Any]:
    """One run's numbers: accuracy of best and last, the best-last gap, and the per-epoch curves."""
    record: dict[str, Any] = {"preset": Path(preset).stem, "seed": seed, "run_dir": str(run_dir),
                              "best_epoch": summary.get("best_epoch"), "last_epoch": summary.get("last_epoch")}
    for which in ("best", "last"):
        record[which] = {m: accuracy(summary.get(which, {}), m) for m in measures(attacks)}
    b, l = record["best"]["robust"], record["last"]["robust"]
    record["gap"] = None if b is None or l is None else b - l
    record["curves"] = curves(run_dir)
    rates = record["curves"].get("noise_rate")
    record["final_noise_rate"] = rates[-1] if rates else None
    record["noise_raises"] = sum(record["curves"].get("noise_raised") or [])
    return record


def cell(values: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    """Mean ± std of the values present, or a dash."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    text = f"{statistics.fmean(vals) * scale:.{digits}f}"
    return text + (f" ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else "")


def markdown(records: list[dict[str, Any]], attacks: list[str], meta: dict[str, Any]) -> str:
    """A markdown table: one row per preset, mean ± std over seeds, accuracy in %."""
    cols = measures(attacks)
    titles = [ATTACK_TITLES.get(c, c) for c in cols]
    head = (["preset", "best ep."] + [f"best {t}" for t in titles] + [f"last {t}" for t in titles]
            + ["gap", "final rate", "raises"])
    lines = [f"Fashion-MNIST, small-cnn, {meta['train_size']} training images, {meta['epochs']} epochs, "
             f"NoiLIn tau {meta['tau']}, eval on {meta['eval_n']} test images, seeds {meta['seeds']}; "
             f"{meta['device']}; {meta['date']}.",
             "Accuracy in %, mean ± std over seeds; robust = per-sample AND of clean and the attacks; "
             "gap = best robust - last robust; final rate: noise rate of the last epoch; raises: schedule raises.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset in dict.fromkeys(r["preset"] for r in records):
        rows = [r for r in records if r["preset"] == preset]
        cells = [preset, cell([r["best_epoch"] for r in rows], scale=1.0, digits=0)]
        cells += [cell([r["best"][c] for r in rows]) for c in cols]
        cells += [cell([r["last"][c] for r in rows]) for c in cols]
        cells += [cell([r["gap"] for r in rows]), cell([r["final_noise_rate"] for r in rows], 1.0, 3),
                  cell([r["noise_raises"] if r["final_noise_rate"] is not None else None for r in rows], 1.0, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Validation robust accuracy of every run (top) and the noise rate of the NoiLIn runs (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for r in records:
        c, label = r["curves"], f"{r['preset']} seed {r['seed']}"
        if c["epoch"]:
            top.plot(c["epoch"], c["val_robust"], label=label)
        if c.get("noise_rate"):
            (line,) = bottom.plot(c["epoch"], c["noise_rate"], label=f"{label}: rate")
            bottom.plot(c["epoch"], c["noise_flipped"], linestyle=":", color=line.get_color(),
                        label=f"{label}: realised")
    top.set_ylabel("validation PGD-10 accuracy")
    bottom.set_ylabel("noise rate")
    bottom.set_xlabel("epoch")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "train_size": args.train_size, "epochs": args.epochs, "eval_n": args.eval_n, "attacks": attacks,
            "seeds": args.seeds, "presets": args.presets, "extra": args.extra, "noise_extra": args.noise_extra,
            "tau": args.tau if args.tau is not None else scaled_tau(args.epochs),
            "device": machine(args.device), "date": datetime.date.today().isoformat()}
    records: list[dict[str, Any]] = []
    for preset in args.presets:
        for seed in args.seeds:
            summary = run_one(preset, seed, args)
            records.append(run_record(preset, seed, summary, attacks, run_dir_of(preset, seed, out)))
            (out / "noilin.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=2))
            (out / "noilin.md").write_text(markdown(records, attacks, meta))
            plot_curves(records, out / "noilin_curves.png")
    print(markdown(records, attacks, meta))
    return {"meta": meta, "runs": records}


if __name__ == "__main__":
    main()
