"""Label refinement against robust overfitting: PGD-AT and TRADES with and without SGLR / self-adaptive labels.

Fashion-MNIST in the overfitting regime: small-cnn on a small class-balanced training subset, a long
piecewise schedule (decays at 50% and 75% of the epochs), PGD-10 training. Every preset is trained
once per seed with ``advlab.engine.trainer.train``; its ``summary.json`` gives clean and robust test
accuracy of the best (validation-selected) and the last checkpoint. The table reports mean and spread
over seeds and the best-minus-last robust gap (the robust-overfitting figure).

    python benchmarks/label_refinement.py                       # the full comparison (GPU)
    python benchmarks/label_refinement.py --epochs 3 --train-size 300 --eval-n 50 --attacks pgd20 \\
        --seeds 0 --device cpu --out runs/label-refinement-smoke  # a smoke test on CPU

Runs already finished with the same config are reused, unfinished ones resumed (``--force`` retrains).
Writes ``<out>/label_refinement.json`` and ``<out>/label_refinement.md``.
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

PRESETS = ["pgd-at", "sglr", "self-adaptive", "trades", "trades-sglr", "trades-self-adaptive"]
ATTACK_TITLES = {"pgd20": "PGD-20", "cw20": "CW-20", "autoattack": "AA"}
DRIFT_KEYS = ("labels_given_mass", "labels_flipped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=PRESETS, help="presets to compare (default: all six)")
    p.add_argument("--train-size", type=int, default=2000, help="class-balanced training subset")
    p.add_argument("--epochs", type=int, default=100, help="epochs (LR x0.1 at 50%% and 75%%)")
    p.add_argument("--eval-n", type=int, default=1000, help="first N test images evaluated")
    p.add_argument("--attacks", default="pgd20,autoattack", help="comma-separated evaluation attacks")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/label-refinement")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (repeatable), e.g. --set validation.n=500")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """The config overrides of one run."""
    return [f"data.train_size={args.train_size}", f"epochs={args.epochs}", f"evaluation.n={args.eval_n}",
            f"evaluation.attacks=[{args.attacks}]", "evaluation.checkpoints=[best,last]",
            f"device={args.device}", f"seed={seed}", *args.extra]


def run_one(preset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse, or resume) one run; return its summary."""
    config = load_config(preset, overrides(args, seed))
    run_dir = Path(args.out) / preset / f"seed{seed}"
    same = (run_dir / "config.yaml").exists() and read_config(run_dir / "config.yaml").to_dict() == config.to_dict()
    progress = not args.quiet
    if same and not args.force and (run_dir / "summary.json").exists():
        print(f"[{preset} seed {seed}] reusing {run_dir}", file=sys.stderr, flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    if same and not args.force and (run_dir / "last.pt").exists():
        print(f"[{preset} seed {seed}] resuming {run_dir}", file=sys.stderr, flush=True)
        return resume(run_dir, progress=progress)
    print(f"[{preset} seed {seed}] training into {run_dir}", file=sys.stderr, flush=True)
    return train(config, run_dir, overwrite=True, progress=progress)


def accuracy(result: dict[str, Any], what: str) -> float | None:
    """``clean``, ``robust`` or an attack's accuracy from one checkpoint's entry of summary.json."""
    if what in ("clean", "robust"):
        entry = result.get(what)
    else:
        entry = (result.get("attacks") or {}).get(what)
    if isinstance(entry, dict):
        entry = entry.get("acc")
    return float(entry) if isinstance(entry, (int, float)) else None


def last_drift(run_dir: Path) -> dict[str, float]:
    """The soft-label diagnostics of the last epoch (empty for hard-label presets)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    row = json.loads(lines[-1]) if lines else {}
    return {k: row[k] for k in DRIFT_KEYS if k in row}


def measures(attacks: list[str]) -> list[str]:
    return ["clean", *attacks, "robust"]


def run_record(preset: str, seed: int, summary: dict[str, Any], attacks: list[str], run_dir: Path) -> dict[str, Any]:
    """One run's numbers: accuracy of best and last, epochs, gap, label drift."""
    record: dict[str, Any] = {"preset": preset, "seed": seed, "run_dir": str(run_dir),
                              "best_epoch": summary.get("best_epoch"), "last_epoch": summary.get("last_epoch")}
    for which in ("best", "last"):
        record[which] = {m: accuracy(summary.get(which, {}), m) for m in measures(attacks)}
    b, l = record["best"]["robust"], record["last"]["robust"]
    record["gap"] = None if b is None or l is None else b - l
    record.update(last_drift(run_dir))
    return record


def mean_spread(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def cell(values: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_spread(values)
    if m is None:
        return "–"
    return f"{m * scale:.{digits}f}" + (f" ± {s * scale:.{digits}f}" if s is not None else "")


def markdown(records: list[dict[str, Any]], presets: list[str], attacks: list[str], meta: dict[str, Any]) -> str:
    """A markdown table: one row per preset, mean ± std over seeds, accuracy in %."""
    cols = measures(attacks)
    titles = [ATTACK_TITLES.get(c, c) if c not in ("clean", "robust") else c for c in cols]
    head = (["preset", "best ep."] + [f"best {t}" for t in titles] + [f"last {t}" for t in titles]
            + ["gap", "given mass", "flipped"])
    lines = [f"Fashion-MNIST, small-cnn, {meta['train_size']} training images, {meta['epochs']} epochs, "
             f"eval on {meta['eval_n']} test images, seeds {meta['seeds']}; {meta['device']}; {meta['date']}.",
             "Accuracy in %, mean ± std over seeds; robust = per-sample AND over the attacks; "
             "gap = best robust - last robust; given mass / flipped: last epoch's soft labels.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset in presets:
        rows = [r for r in records if r["preset"] == preset]
        if not rows:
            continue
        cells = [preset, cell([r["best_epoch"] for r in rows], scale=1.0, digits=0)]
        cells += [cell([r["best"][c] for r in rows]) for c in cols]
        cells += [cell([r["last"][c] for r in rows]) for c in cols]
        cells += [cell([r["gap"] for r in rows])]
        cells += [cell([r.get(k) for r in rows], scale=1.0, digits=3) for k in DRIFT_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
            "seeds": args.seeds, "presets": args.presets, "extra": args.extra, "device": machine(args.device),
            "date": datetime.date.today().isoformat()}
    records = []
    for preset in args.presets:
        for seed in args.seeds:
            summary = run_one(preset, seed, args)
            records.append(run_record(preset, seed, summary, attacks, out / preset / f"seed{seed}"))
            report = {"meta": meta, "runs": records}
            (out / "label_refinement.json").write_text(json.dumps(report, indent=2))
            (out / "label_refinement.md").write_text(markdown(records, args.presets, attacks, meta))
    table = markdown(records, args.presets, attacks, meta)
    print(table)
    return {"meta": meta, "runs": records}


if __name__ == "__main__":
    main()
