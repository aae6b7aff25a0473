"""CAAT against its baselines on Fashion-MNIST in three scenarios: class-wise natural, boundary and robust error.

Trains ``pgd-at``, ``trades``, ``frl`` and ``caat`` (default) once per seed in each scenario (clean and balanced;
20% two-class label noise, the CAAT README's example; long-tailed with imbalance ratio 10), all with the same
overrides and the same training images (every preset gets ``data.meta_size=1000``, so the clean meta split
that FRL and CAAT learn from is held out of everyone's training set), evaluates the best (chosen on the
validation split) and the last checkpoint on the first ``--eval-n`` test points with PGD-20 and AutoAttack
(pyautoattack; the version is named in the table), and writes a markdown table of average and worst-class
errors (FRL's definitions, ``advlab.evaluation.fairness``) and the raw numbers as JSON.

    # the CPU run of benchmarks/CAAT.md, two workers of one thread sharing the job list:
    python benchmarks/caat.py --worker --threads 1 &  python benchmarks/caat.py --worker --threads 1; wait
    python benchmarks/caat.py                      # the table over the finished runs
    # the normalisation defect of the official code, on one finished run:
    python benchmarks/caat.py --normalisation runs/bench-caat/clean/caat-seed0

Jobs are claimed through lock files (``<run dir>.claim``), so any number of ``--worker`` processes can share
them; finished runs are reused when their resolved config equals the one asked for, an interrupted run is
resumed from its ``last.pt``. A claim left by a killed worker is cleared with ``--unclaim``.
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
from common import claim, history, machine, run_one, sanity_cell, unclaim

PRESETS = ["pgd-at", "trades", "frl", "caat"]
ROWS: dict[str, tuple[str, list[str]]] = {
    **{p: (p, []) for p in PRESETS},
    # the paper fine-tunes a TRADES model ("hot start"); here: 3 TRADES epochs (a = 1, b = 0) inside the same
    # budget, then CAAT, with a bi-level step every 10 steps (about the paper's meta steps per epoch)
    "caat-warmup": ("caat", ["weighting.warmup_epochs=3", "weighting.meta_every=10"]),
    # the meta-gradient advlab computed before issue 25 (the meta-net's input features detached from the model's
    # weights in the look-ahead), everything else as the two rows above
    "caat-detached": ("caat", ["weighting.meta_features=detached"]),
    "caat-warmup-detached": ("caat", ["weighting.warmup_epochs=3", "weighting.meta_every=10",
                                      "weighting.meta_features=detached"]),
}
"""Rows of the table: name -> (preset, overrides of that row)."""
SCENARIOS: dict[str, list[str]] = {
    "clean": [],
    "noise": ["data.label_noise.kind=two-class", "data.label_noise.rate=0.2"],
    "long-tail": ["data.imbalance.ratio=10"],
}
SCENARIO_TITLES = {
    "clean": "clean, balanced",
    "noise": "20% two-class label noise (`data.label_noise.kind=two-class data.label_noise.rate=0.2`)",
    "long-tail": "long-tailed, imbalance ratio 10 (`data.imbalance.ratio=10`)",
}
ATTACKS = ["pgd20", "autoattack"]
ERRORS = ("natural", "boundary", "robust")
# (attack, error) per column; natural error is the same under every attack
COLUMNS = [("pgd20", "natural"), ("pgd20", "boundary"), ("pgd20", "robust"), ("autoattack", "boundary"),
           ("autoattack", "robust"), ("robust", "robust")]


def overrides_for(args: argparse.Namespace, scenario: str, seed: int) -> list[str]:
    """The overrides every preset of one scenario and seed gets."""
    return [f"device={args.device}", f"seed={seed}", f"epochs={args.epochs}", f"data.train_size={args.train_size}",
            "data.meta_size=1000", f"evaluation.n={args.eval_n}", f"evaluation.attacks=[{','.join(ATTACKS)}]",
            f"evaluation.autoattack_version={args.autoattack_version}", f"validation.n={args.val_n}",
            *SCENARIOS[scenario], *args.set]


def overrides_of(args: argparse.Namespace, scenario: str, seed: int, row: str) -> list[str]:
    """The overrides of one row (its preset's): the scenario's and the row's own."""
    return overrides_for(args, scenario, seed) + ROWS[row][1]


def jobs(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(scenario, seed, preset), the most expensive presets first so that workers finish together."""
    order = sorted(args.presets, key=lambda p: -list(ROWS).index(p))
    return [(s, seed, p) for p in order for seed in args.seeds for s in args.scenarios]


def run_dir_of(out: Path, scenario: str, seed: int, preset: str) -> Path:
    return out / scenario / f"{preset}-seed{seed}"



def work(args: argparse.Namespace) -> None:
    """Train and evaluate every job nobody has claimed yet."""
    out = Path(args.out)
    for scenario, seed, preset in jobs(args):
        run_dir = run_dir_of(out, scenario, seed, preset)
        if (run_dir / "summary.json").exists() and not args.fresh:
            run_one(ROWS[preset][0], run_dir, overrides_of(args, scenario, seed, preset))  # reuses, or retrains
            continue
        if not claim(run_dir):
            continue
        try:
            run_one(ROWS[preset][0], run_dir, overrides_of(args, scenario, seed, preset), force=args.fresh,
                    progress=args.progress)
        finally:
            run_dir.with_name(run_dir.name + ".claim").unlink(missing_ok=True)


def record(scenario: str, seed: int, preset: str, run_dir: Path) -> dict[str, Any]:
    """The numbers of one finished run: per checkpoint its errors (fractions), plus seconds per epoch."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = history(run_dir)
    seconds = [r["train_seconds"] for r in rows if r.get("train_seconds") is not None]
    out: dict[str, Any] = {"scenario": scenario, "seed": seed, "preset": preset, "run_dir": str(run_dir),
                           "seconds_per_epoch": statistics.median(seconds) if seconds else None, "checkpoints": {}}
    for which in ("best", "last"):
        entry = summary.get(which)
        if not isinstance(entry, dict):
            continue
        fair = entry.get("fairness") or {}
        errors = {}
        for name in (*ATTACKS, "robust"):
            if name in fair:
                errors[name] = {e: {"average": fair[name][e]["average"], "worst": fair[name][e]["worst"]}
                                for e in ERRORS}
        out["checkpoints"][which] = {"epoch": entry["epoch"], "errors": errors, "sanity": entry.get("sanity") or [],
                                     "clean": entry["clean"]["acc"]}
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    text = f"{100 * statistics.fmean(values):.1f}"
    return text + (f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def table(records: list[dict[str, Any]], scenario: str, presets: list[str]) -> list[str]:
    """Markdown lines of one scenario: a row per preset and checkpoint, errors in % (mean ± std over seeds)."""
    head = ["preset", "ckpt", "epoch", "natural", "PGD-20 boundary", "PGD-20 robust", "AA boundary", "AA robust",
            "AND robust"]
    head += ["s/epoch vs trades", "sanity checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    runs_of = {p: [r for r in records if r["scenario"] == scenario and r["preset"] == p] for p in presets}
    trades_seconds = [r["seconds_per_epoch"] for r in runs_of.get("trades", []) if r["seconds_per_epoch"]]
    for preset in presets:
        runs = runs_of[preset]
        for which in ("best", "last"):
            entries = [r["checkpoints"][which] for r in runs if which in r["checkpoints"]]
            if not entries:
                continue
            cells = [preset, which, ",".join(str(e["epoch"]) for e in entries)]
            for attack, error in COLUMNS:
                avg = [e["errors"][attack][error]["average"] for e in entries if attack in e["errors"]]
                worst = [e["errors"][attack][error]["worst"] for e in entries if attack in e["errors"]]
                cells.append(f"{_cell(avg)} / {_cell(worst)}")
            seconds = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"]]
            ratio = (statistics.fmean(seconds) / statistics.fmean(trades_seconds)
                     if seconds and trades_seconds else None)
            cells.append(f"{ratio:.2f}x" if ratio else "–")
            cells.append(sanity_cell(entries))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(args: argparse.Namespace, records: list[dict[str, Any]], command: str) -> str:
    config = load_config(ROWS[args.presets[0]][0], overrides_for(args, args.scenarios[0], args.seeds[0]))
    lines = [
        "# CAAT and its baselines on Fashion-MNIST",
        "",
        f"- command: `{command}` (after the workers: see the script's docstring)",
        f"- machine: {machine(args.device)}; pyautoattack {_aa_version()}",
        f"- date: {datetime.date.today().isoformat()}",
        f"- seeds: {', '.join(map(str, args.seeds))}; cells are mean ± sample standard deviation over seeds, errors in %",
        f"- budget: {config.model.name}, {config.epochs} epochs (the presets' optimiser and schedule), "
        f"{config.data.train_size} training images before imbalance, meta split {config.data.meta_size} "
        f"(held out for every preset), eps {config.eps} ({config.norm}), first {config.evaluation.n} test points, "
        f"AutoAttack `{config.evaluation.autoattack_version}`",
        f"- best = highest validation robust accuracy under {config.validation.attack} "
        f"({config.validation.n} validation points); AND = per-sample AND of clean and every attack",
        "- errors (FRL's definitions): natural = misclassified clean; boundary = correct clean, wrong under "
        "attack; robust = natural + boundary; each cell avg / worst: the mean over classes / the worst class; "
        "AA = AutoAttack",
    ]
    for scenario in args.scenarios:
        lines += ["", f"## {SCENARIO_TITLES[scenario]}", "", *table(records, scenario, args.presets)]
    return "\n".join(lines) + "\n"


def _aa_version() -> str:
    try:
        from importlib.metadata import version
        return version("pyautoattack")
    except Exception:  # noqa: BLE001 - the package may be missing from a table-only environment
        return "not installed"


def weights(args: argparse.Namespace) -> str:
    """Markdown: the meta-net's mean weight a of the adversarial terms per class (``caat_a_per_class`` of
    metrics.jsonl) in the first epoch CAAT is active and in the last, the meta steps taken, and the three classes
    with the highest natural error on the test points (last checkpoint), for each CAAT run asked for."""
    out = Path(args.out)
    lines = []
    for scenario in args.scenarios:
        lines += ["", f"### {SCENARIO_TITLES[scenario]}", "",
                  "| row | seed | epoch | meta steps so far | " + " | ".join(f"a{c}" for c in range(10))
                  + " | hardest classes (test natural error, last) |", "|" + "---|" * 15]
        for preset in args.presets:
            for seed in args.seeds:
                run_dir = run_dir_of(out, scenario, seed, preset)
                rows = history(run_dir) if (run_dir / "metrics.jsonl").exists() else []
                active = [r for r in rows if r.get("caat_active")]
                if not active:
                    continue
                summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() \
                    else {}
                natural = (((summary.get("last") or {}).get("fairness") or {}).get("pgd20") or {}).get("natural", {})
                per_class = natural.get("per_class", {})
                hardest = sorted(per_class, key=lambda k: -per_class[k])[:3]
                hard = ", ".join(f"{k} ({per_class[k]:.2f})" for k in hardest) or "–"
                steps = 0
                for r in rows:
                    steps += r.get("caat_meta_steps") or 0
                    if r is active[0] or r is active[-1]:
                        a = r.get("caat_a_per_class") or []
                        lines.append(f"| {preset} | {seed} | {r['epoch']} | {steps} | "
                                     + " | ".join(f"{v:.2f}" for v in a)
                                     + f" | {hard if r is active[-1] else ''} |")
    return "\n".join(lines)


def meta_net_weights(run_dir: Path, device: str) -> str:
    """Markdown: per class, the mean weight a that the run's FINAL meta-net (its last.pt) and a freshly
    initialised one (the part's own seeded initialisation, before any meta step) give the samples of the run's
    training split, on the features of the last model's clean logits (eval mode: small-cnn's dropout off), in
    batches of the run's batch size (the meta-net's batch norm takes batch statistics, as in training); and the
    last model's error per class on that split. Tells what the meta-learning changed from the initial mapping."""
    from advlab.data import run_training_split
    from advlab.engine.optimizers import create_optimizer
    from advlab.recipes import RecipeEnv, create_recipe
    from advlab.runs import load_model

    config = read_config(run_dir / "config.yaml")
    model, ckpt = load_model(run_dir, "last", device=device)
    split = run_training_split(config.data, config.seed)
    c = int(split.labels.max()) + 1

    def part():
        env = RecipeEnv(num_train=len(split.labels), num_classes=c, epochs=config.epochs, eps=config.eps,
                        norm=config.norm, device=torch.device(device), seed=config.seed,
                        class_counts=torch.bincount(split.labels, minlength=c).tolist(),
                        meta_images=split.meta_images, meta_labels=split.meta_labels, model=model,
                        optimizer=create_optimizer(model.parameters(), config.optimizer))
        return create_recipe(config.recipe_spec(), env).weighting

    final, initial = part(), part()
    final.load_state_dict(ckpt["parts"]["weighting"])
    initial.class_loss = final.class_loss.clone()  # the same features: only the meta-net differs
    sums = {"final": torch.zeros(c, dtype=torch.float64), "initial": torch.zeros(c, dtype=torch.float64)}
    wrong = torch.zeros(c, dtype=torch.float64)
    for s0 in range(0, len(split.labels), config.batch_size):
        x = split.images[s0:s0 + config.batch_size].to(device).float().div(255)
        y = split.labels[s0:s0 + config.batch_size].to(device)
        with torch.no_grad():
            logits = model(x)
            wrong.index_add_(0, y.cpu(), (logits.argmax(1) != y).double().cpu())
            for name, w in (("final", final), ("initial", initial)):
                a = w.meta_net(w.features(logits, y))[:, 0]
                sums[name].index_add_(0, y.cpu(), a.double().cpu())
    count = torch.bincount(split.labels, minlength=c).double().clamp_min(1)
    lines = [f"`{run_dir}` (last.pt, epoch {ckpt['epoch']}), its training split ({len(split.labels)} images):", "",
             "| class | " + " | ".join(str(k) for k in range(c)) + " |", "|" + "---|" * (c + 1)]
    for name in ("final", "initial"):
        lines.append(f"| a, {name} meta-net | " + " | ".join(f"{v:.2f}" for v in (sums[name] / count).tolist()) + " |")
    lines.append("| training error of the last model | " + " | ".join(f"{v:.2f}" for v in (wrong / count).tolist())
                 + " |")
    return "\n".join(lines)


def normalisation(run_dir: Path, device: str, n: int) -> str:
    """PGD-20 on one run's best checkpoint with eps in pixel units and with the same eps in normalised units.

    The official CAAT code normalises in the data pipeline and measures eps in normalised units (methods.md B
    2.7, pitfall 1): its bound eps_norm is eps_norm * std in pixels. This evaluates advlab's PGD-20 at
    ``eps`` (pixels) and at ``eps * std`` (what the same number means in normalised units) and returns a
    markdown table.
    """
    import advlab
    from advlab.data import info, load
    from advlab.runs import load_model

    config = read_config(run_dir / "config.yaml")
    std = info(config.data.dataset).std
    if len(set(std)) != 1:
        raise SystemExit(f"{config.data.dataset}: per-channel std {std}; this measurement takes one std")
    model, _ = load_model(run_dir, "best", device=device)
    images, labels = load(config.data.dataset, "test")
    images, labels = images[:n], labels[:n]
    lines = [f"PGD-20 on `{run_dir}` (best checkpoint), first {n} test points, "
             f"{config.data.dataset} std {std[0]:.4f}:", "",
             "| eps as written | eps in pixels | clean | PGD-20 |", "|---|---|---|---|"]
    for label, eps in (("pixel units", config.eps), ("normalised units", config.eps * std[0])):
        result = advlab.evaluate(model, images, labels, eps, attacks="pgd20", device=device, progress=False,
                                 sanity=False)
        lines.append(f"| {config.eps} in {label} | {eps:.4f} | {100 * result.accuracy('clean'):.1f} | "
                     f"{100 * result.accuracy('pgd20'):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help="train and evaluate unclaimed jobs, then exit")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    p.add_argument("--presets", nargs="+", default=PRESETS, choices=list(ROWS),
                   help=f"rows of the table (default {' '.join(PRESETS)})")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-size", type=int, default=5000, help="training images before imbalance")
    p.add_argument("--eval-n", type=int, default=1000, help="first N test points")
    p.add_argument("--val-n", type=int, default=1000, help="validation points per epoch")
    p.add_argument("--autoattack-version", default="apgd", help="advlab.evaluation.AA_VERSIONS")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--out", default="runs/bench-caat")
    p.add_argument("--md", default=None, help="markdown output (default <out>/caat.md)")
    p.add_argument("--fresh", action="store_true", help="retrain even when a finished run is there")
    p.add_argument("--unclaim", action="store_true", help="remove claims left by killed workers, then exit")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--weights", action="store_true",
                   help="print the meta-net's per-class weights of the finished CAAT runs and exit")
    p.add_argument("--meta-net", metavar="RUN_DIR", default=None,
                   help="per-class weights of the run's final meta-net against a freshly initialised one, and exit")
    p.add_argument("--normalisation", metavar="RUN_DIR", default=None,
                   help="measure PGD-20 with eps in pixel vs normalised units on this run and exit")
    args = p.parse_args(argv)
    command = "python benchmarks/caat.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.unclaim:
        unclaim(out)
        return
    if args.weights:
        print(f"command: {command}")
        print(weights(args))
        return
    if args.meta_net:
        print(f"command: {command}")
        print(meta_net_weights(Path(args.meta_net), args.device))
        return
    if args.normalisation:
        print(normalisation(Path(args.normalisation), args.device, args.eval_n))
        return
    if args.worker:
        work(args)
        return
    records = []
    for scenario, seed, preset in jobs(args):
        run_dir = run_dir_of(out, scenario, seed, preset)
        if not (run_dir / "summary.json").exists():
            print(f"missing: {run_dir}", file=sys.stderr)
            continue
        if read_config(run_dir / "config.yaml").to_dict() != load_config(
                ROWS[preset][0], overrides_of(args, scenario, seed, preset)).to_dict():
            print(f"skipped (other config): {run_dir}", file=sys.stderr)
            continue
        records.append(record(scenario, seed, preset, run_dir))
    text = report(args, records, command)
    md = Path(args.md) if args.md else out / "caat.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    (out / "caat.json").write_text(json.dumps({"command": command, "machine": machine(args.device),
                                               "records": records}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
