"""Self-supervised adversarial training (Chen et al., ICASSP 2020) against supervised training, classified by
their linear head and by k nearest neighbours, on Fashion-MNIST at eps 0.1: benchmarks/SSAT.md.

Runs per seed (each a normal advlab run under ``--out``/seed<N>/):

- ``standard``, ``pgd-at``: the supervised presets, evaluated with their linear head and with kNN on their
  penultimate features;
- ``simclr``: SimCLR pre-training, kNN;
- ``ssat``: the paper's SSAT, fine-tuning the ``simclr`` run's encoder (``init.from``), kNN;
- ``ssat-instance``: the label-free form (contrastive adversarial pre-training), kNN, and its linear evaluations
  ``advlab probe`` SLF / ALF / AFF (linear heads).

Every row's best checkpoint (chosen on the validation split by the run itself) is evaluated the same way on the
first ``--eval-n`` test points: clean, PGD-20 (on a kNN: through its soft vote), ``knn-guide`` (the guide attack,
kNN rows only), AutoAttack (pyautoattack, version named in the table), Square on the scores (on a kNN: the hard
vote plus the soft tie-break, so no gradient is used), the per-sample AND, and the paper's defence success rate
(DSR: of the points right clean, the fraction still right under knn-guide).

    # two workers of one thread share the jobs (a job waits for the run it starts from):
    python benchmarks/ssat.py --worker --threads 1 &  python benchmarks/ssat.py --worker --threads 1; wait
    python benchmarks/ssat.py                     # the table over what is finished

Jobs are claimed through lock files (``<run dir>.claim``); finished runs and evaluations are reused when their
config equals the one asked for; ``--unclaim`` clears claims left by killed workers.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import advlab
from advlab import data as datasets
from advlab.config import load_config, read_config
from advlab.evaluation import as_classifier, describe_classifier
from advlab.runs import load_model
from common import cell, claim, machine, sanity_cell, unclaim


@dataclass(frozen=True)
class RunSpec:
    """One training run of a seed: a preset (or a probe of another run) and its overrides."""

    preset: str
    overrides: tuple[str, ...] = ()
    after: str | None = None  # the run this one starts from (init.from, or the run a probe reads)
    probe: str | None = None  # advlab probe mode (slf, alf, aff) of ``after``


RUNS: dict[str, RunSpec] = {
    "standard": RunSpec("standard"),
    "pgd-at": RunSpec("pgd-at"),
    "simclr": RunSpec("simclr"),
    "ssat": RunSpec("ssat", after="simclr"),
    "ssat-instance": RunSpec("ssat-instance"),
    "ssat-instance-slf": RunSpec("standard", after="ssat-instance", probe="slf"),
    "ssat-instance-alf": RunSpec("pgd-at", after="ssat-instance", probe="alf"),
    "ssat-instance-aff": RunSpec("trades", after="ssat-instance", probe="aff"),
}
ROWS: dict[str, tuple[str, str]] = {  # row -> (run, classifier)
    "standard (linear)": ("standard", "linear"),
    "standard (kNN)": ("standard", "knn"),
    "pgd-at (linear)": ("pgd-at", "linear"),
    "pgd-at (kNN)": ("pgd-at", "knn"),
    "simclr + kNN": ("simclr", "knn"),
    "ssat + kNN": ("ssat", "knn"),
    "ssat-instance + kNN": ("ssat-instance", "knn"),
    "ssat-instance + SLF": ("ssat-instance-slf", "linear"),
    "ssat-instance + ALF": ("ssat-instance-alf", "linear"),
    "ssat-instance + AFF": ("ssat-instance-aff", "linear"),
}
COLUMNS = [("clean", "clean"), ("pgd20", "PGD-20"), ("knn-guide", "knn-guide"), ("autoattack", "AutoAttack"),
           ("square", "Square"), ("robust", "robust (AND)"), ("dsr", "DSR (knn-guide)")]


def common_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    return [f"device={args.device}", f"seed={seed}", f"data.train_size={args.train_size}", f"validation.n={args.val_n}",
            "evaluation.checkpoints=[best]", *args.set]


def epochs_of(args: argparse.Namespace, run: str) -> int:
    return {"simclr": args.ssl_epochs, "ssat-instance": args.ssl_epochs, "ssat": args.ssat_epochs}.get(
        run, args.epochs)


def run_dir_of(args: argparse.Namespace, seed: int, run: str) -> Path:
    return Path(args.out) / f"seed{seed}" / run


def overrides_of(args: argparse.Namespace, seed: int, run: str) -> list[str]:
    spec = RUNS[run]
    out = common_overrides(args, seed) + [f"epochs={epochs_of(args, run)}", *spec.overrides]
    if spec.after and not spec.probe:  # the pre-training's last checkpoint: the paper fine-tunes a pre-trained encoder
        out.append(f"init.from={run_dir_of(args, seed, spec.after) / 'last.pt'}")
    return out


def finished(run_dir: Path) -> bool:
    return (run_dir / "best.pt").exists() and (run_dir / "train-done").exists()



def train_run(args: argparse.Namespace, seed: int, run: str) -> None:
    """Train one run (reused when finished with the same config), without its own final evaluation."""
    spec, run_dir = RUNS[run], run_dir_of(args, seed, run)
    overrides = overrides_of(args, seed, run)
    if spec.probe:
        # the probe's own budget (advlab probe's mode defaults: the robust SSL benchmark's), not --epochs
        probe_overrides = [o for o in overrides if not o.startswith(("init.from=", "epochs="))]
        if args.probe_epochs:
            probe_overrides.append(f"epochs={args.probe_epochs}")
        if not finished(run_dir):
            start = time.perf_counter()
            advlab.probe(run_dir_of(args, seed, spec.after), spec.probe, out=run_dir, overrides=probe_overrides,
                         overwrite=True, progress=args.progress, evaluate=False)
            print(f"[{run} seed {seed}] probe trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    else:
        wanted = load_config(spec.preset, overrides).to_dict()
        if finished(run_dir) and read_config(run_dir / "config.yaml").to_dict() == wanted:
            return
        start = time.perf_counter()
        advlab.train(spec.preset, run_dir, overrides=overrides, overwrite=True, progress=args.progress, evaluate=False)
        print(f"[{run} seed {seed}] trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    (run_dir / "train-done").write_text(datetime.datetime.now().isoformat())


def eval_settings(args: argparse.Namespace, classifier: str) -> dict[str, Any]:
    attacks = ["pgd20", *(["knn-guide"] if classifier == "knn" else []), "autoattack", "square"]
    return {"classifier": classifier, "n": args.eval_n, "attacks": attacks, "autoattack_version": args.autoattack_version,
            "square_queries": args.square_queries, "seed": 0}


def evaluate_row(args: argparse.Namespace, seed: int, run: str, classifier: str) -> dict[str, Any]:
    """Evaluate a run's best checkpoint with ``classifier`` (the bank: that run's training split); reused when the
    same settings were evaluated before."""
    run_dir = run_dir_of(args, seed, run)
    settings = eval_settings(args, classifier)
    path = run_dir / f"bench-eval-{classifier}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            return saved
    config = read_config(run_dir / "config.yaml")
    device = torch.device(args.device)
    model, ckpt = load_model(run_dir, "best", device=device)
    split = datasets.run_training_split(config.data, config.seed)  # the bank: the split the run trained on
    meta = datasets.info(config.data.dataset)
    module = as_classifier(model, classifier, split.images, split.labels, meta.num_classes,
                           dataclasses.asdict(config.knn), device=device)
    images, labels = datasets.load(config.data.dataset, "test", root=config.data.root)
    start = time.perf_counter()
    result = advlab.evaluate(module, images[: args.eval_n], labels[: args.eval_n], config.eps, config.norm,
                             attacks=settings["attacks"], device=device, seed=settings["seed"], progress=args.progress,
                             autoattack_version=args.autoattack_version, square_queries=args.square_queries,
                             num_classes=meta.num_classes)
    out = {"settings": settings, "run": run, "seed": seed, "epoch": ckpt.get("epoch"),
           "classifier": describe_classifier(module), "result": result.to_dict(),
           "seconds": time.perf_counter() - start}
    path.write_text(json.dumps(out))
    print(f"[{run} seed {seed} {classifier}] evaluated in {out['seconds']:.0f} s", file=sys.stderr)
    return out


def jobs(args: argparse.Namespace) -> list[tuple[int, str]]:
    return [(seed, run) for seed in args.seeds for run in args.runs]


def work(args: argparse.Namespace) -> None:
    """Train and evaluate every job nobody has claimed, waiting for the runs a job starts from."""
    pending = jobs(args)
    while pending:
        progressed = False
        for seed, run in list(pending):
            after = RUNS[run].after
            if after and not finished(run_dir_of(args, seed, after)):
                continue
            run_dir = run_dir_of(args, seed, run)
            if not claim(run_dir):
                pending.remove((seed, run))  # another worker has it
                continue
            try:
                train_run(args, seed, run)
                for row, (row_run, classifier) in ROWS.items():
                    if row_run == run and not args.train_only:
                        evaluate_row(args, seed, run, classifier)
            finally:
                run_dir.with_name(run_dir.name + ".claim").unlink(missing_ok=True)
            pending.remove((seed, run))
            progressed = True
        if pending and not progressed:
            time.sleep(20)  # a dependency is being trained by another worker


def value(entry: dict[str, Any], column: str) -> float | None:
    result = entry["result"]
    if column == "clean":
        return result["clean"]["acc"]
    if column == "robust":
        return result["robust"]["acc"]
    if column == "dsr":
        clean, knn = result["clean"]["acc"], (result["attacks"].get("knn-guide") or {}).get("acc")
        return None if knn is None or not clean else knn / clean
    attack = result["attacks"].get(column)
    return None if attack is None else attack["acc"]


def report(args: argparse.Namespace, command: str) -> tuple[str, list[dict[str, Any]]]:
    entries = []
    for seed in args.seeds:
        for row, (run, classifier) in ROWS.items():
            path = run_dir_of(args, seed, run) / f"bench-eval-{classifier}.json"
            if path.exists() and json.loads(path.read_text()).get("settings") == eval_settings(args, classifier):
                entries.append({"row": row, **json.loads(path.read_text())})
            else:
                print(f"missing: {row} seed {seed}", file=sys.stderr)
    head = ["row", "epoch (best)", *[title for _, title in COLUMNS], "sanity checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        mine = [e for e in entries if e["row"] == row]
        if not mine:
            continue
        cells = [row, ",".join(str(e["epoch"]) for e in mine)]
        cells += [cell([value(e, column) for e in mine]) for column, _ in COLUMNS]
        cells.append(sanity_cell([e["result"] for e in mine]))
        lines.append("| " + " | ".join(cells) + " |")
    aa = "not run"
    for e in entries:
        aa = e["result"]["attacks"]["autoattack"].get("package", aa)
        break
    config = load_config("ssat", common_overrides(args, args.seeds[0]))
    text = "\n".join([
        f"- command: `{command}` (after the workers: see the script's docstring)",
        f"- machine: {machine(args.device)}; AutoAttack: {aa}, version `{args.autoattack_version}`; Square "
        f"{args.square_queries} queries",
        f"- date: {datetime.date.today().isoformat()}; seeds: {', '.join(map(str, args.seeds))}; cells: mean ± sample "
        "standard deviation over seeds, accuracies in %",
        f"- data: {config.data.dataset}, {args.train_size} training images (the kNN bank), best checkpoint by validation "
        f"robust accuracy ({args.val_n} validation points); first {args.eval_n} test points; eps {config.eps} "
        f"({config.norm}); epochs: supervised and probes {args.epochs}, simclr / ssat-instance {args.ssl_epochs}, "
        f"ssat {args.ssat_epochs} (from the simclr run); probes: "
        + (f"{args.probe_epochs} epochs, otherwise `advlab probe`'s defaults per mode" if args.probe_epochs
           else "`advlab probe`'s defaults per mode"),
        "", *lines]) + "\n"
    return text, entries


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help="train and evaluate unclaimed jobs, then exit")
    p.add_argument("--train-only", action="store_true", help="with --worker: train, do not evaluate")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="runs of each seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=10, help="epochs of the supervised runs (probes: their mode's)")
    p.add_argument("--ssl-epochs", type=int, default=30, help="epochs of simclr and ssat-instance")
    p.add_argument("--probe-epochs", type=int, default=None,
                   help="epochs of the probes (default: advlab probe's per mode: slf/alf 25, aff trades')")
    p.add_argument("--ssat-epochs", type=int, default=8, help="epochs of ssat (fine-tuning from simclr)")
    p.add_argument("--train-size", type=int, default=5000, help="training images (and the kNN bank)")
    p.add_argument("--val-n", type=int, default=500, help="validation points per epoch")
    p.add_argument("--eval-n", type=int, default=500, help="first N test points")
    p.add_argument("--autoattack-version", default="apgd", help="advlab.evaluation.AA_VERSIONS")
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs="*", default=[], help="more overrides for every run")
    p.add_argument("--out", default="runs/bench-ssat")
    p.add_argument("--md", default=None, help="markdown output (default <out>/ssat.md)")
    p.add_argument("--unclaim", action="store_true", help="remove claims left by killed workers, then exit")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    command = "python benchmarks/ssat.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.unclaim:
        unclaim(out)
        return
    if args.worker:
        work(args)
        return
    text, entries = report(args, command)
    md = Path(args.md) if args.md else out / "ssat.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    (out / "ssat.json").write_text(json.dumps({"command": command, "machine": machine(args.device),
                                               "entries": entries}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
