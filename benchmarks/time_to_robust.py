"""Time to a robust model: training wall time until a model reaches a target AutoAttack accuracy.

Fashion-MNIST, small-cnn, Linf eps 0.1. Every contestant trains epoch by epoch; after each epoch its model is
attacked on the validation split by AutoAttack's APGD-CE + APGD-DLR (pyautoattack, advlab's version ``apgd``),
and the first epoch whose validation robust accuracy reaches ``--target`` stops it: its time is the training
time up to there (evaluations not counted), and that checkpoint's accuracy on the first ``--test-n`` test points
(clean, PGD-20, AutoAttack apgd) is what the table reports. Nothing is chosen on the test points.

Contestants (``CONTESTANTS``): advlab presets (each with its own config: ``speedrun``, ``fast-at``, ``n-fgsm``,
``grad-align``, ``pgd-at`` in fp32 and with the fast defaults bf16 + channels-last), a plain PGD-10 loop
written as a paper's script is (fp32, eager, the pgd-at preset's hyper-parameters), and IBM ART 1.20's
``AdversarialTrainerMadryPGD`` (optional: skipped when ``art`` is not installed). All run in one process,
alternating epoch by epoch over (contestant, seed), so a load that drifts over the run hits every contestant
alike. Peak memory: each contestant alone for one epoch in a fresh process (``--memory``), its peak resident
set size.

    python benchmarks/time_to_robust.py --out runs/ttr --seeds 0 1                 # the table (hours on 2 cores)
    python benchmarks/time_to_robust.py --out runs/ttr --contestants pgd-at-fp32 pgd-at-fast --seeds 0 1
    python benchmarks/time_to_robust.py --out runs/ttr-mem --memory                # peak memory, one epoch each
    python benchmarks/time_to_robust.py --smoke --out /tmp/ttr                     # a few seconds, for the tests

Writes ``<out>/time_to_robust.json`` (every epoch of every contestant), ``time_to_robust.md`` (the table) and
``time_to_robust.png`` (validation robust accuracy against training time).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import advlab
from advlab import data as datasets
from advlab.config import load_config, preset_names
from advlab.data import DeviceLoader
from advlab.engine.loop import train_one_epoch
from advlab.engine.run import create_run
from advlab.models import create_model

EPS = 0.1
AA_VERSION = "apgd"  # APGD-CE + APGD-DLR, one restart each (advlab's reduced version, named wherever shown)
PRESET_FAST = ["precision=bf16", "channels_last=true"]


@dataclass
class Contestant:
    """One way to train: ``epoch(e)`` trains epoch e; ``model()`` is the model to evaluate (eval mode)."""

    key: str  # the CONTESTANTS name
    name: str  # what it is, for the table
    seed: int
    epoch: Callable[[int], None]
    model: Callable[[], nn.Module]
    epochs: int  # its schedule's length: the most epochs it trains
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    reached: dict[str, Any] | None = None
    done: bool = False


def advlab_contestant(key: str, preset: str, extra: list[str], epochs: int | None = None
                      ) -> Callable[[argparse.Namespace, int], Contestant]:
    """An advlab preset with ``extra`` overrides, for ``epochs`` epochs (None: ``--epochs``)."""
    def make(args: argparse.Namespace, seed: int) -> Contestant:
        n = epochs or args.epochs
        overrides = [f"seed={seed}", f"epochs={n}", f"eps={EPS}", "device=cpu",
                     f"data.train_size={args.train_size}" if args.train_size else "data.train_size=null",
                     f"validation.n={args.val_n}", *extra]
        run = create_run(load_config(preset, overrides), progress=False)
        return Contestant(key, f"advlab {preset}{'' if not extra else ' ' + ' '.join(extra)}", seed,
                          lambda e: train_one_epoch(run, e), lambda: run.model.eval(), n)
    return make


def _train_images(args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    config = load_config("pgd-at", [f"seed={seed}", "device=cpu",
                                    f"data.train_size={args.train_size}" if args.train_size else "data.train_size=null"])
    split = datasets.run_training_split(config.data, seed)
    return split.images, split.labels


def plain_contestant(args: argparse.Namespace, seed: int) -> Contestant:
    """PGD-10 adversarial training as a paper's script writes it: fp32, eager, NCHW, model.eval() for the attack,
    SGD with the pgd-at preset's hyper-parameters and its piecewise schedule (decays at 50% and 75%)."""
    torch.manual_seed(seed)
    images, labels = _train_images(args, seed)
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    steps, alpha = 10, 2.5 * EPS / 10
    loader = DeviceLoader(images, labels, 128, seed=seed, shuffle=True, crop_padding=0, flip=False)

    def epoch(e: int) -> None:
        lr = 0.01 * (0.1 ** sum(e >= m * args.epochs for m in (0.5, 0.75)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader.set_epoch(e)
        for x, y, _ in loader:
            model.eval()
            x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp_(0, 1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), y)
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - EPS), x + EPS).clamp_(0, 1)
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return Contestant("plain", "plain PGD-10 loop (fp32)", seed, epoch, lambda: model.eval(), args.epochs)


def art_contestant(args: argparse.Namespace, seed: int) -> Contestant:
    """IBM ART's AdversarialTrainerMadryPGD (PGD-10, the same step, batch and SGD settings), one epoch per call."""
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(seed)
    images, labels = _train_images(args, seed)
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                                             weight_decay=5e-4))
    trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=128, eps=EPS, eps_step=2.5 * EPS / 10,
                                         max_iter=10, num_random_init=1)
    trainer.attack.set_params(batch_size=128)  # ART attacks in sub-batches of 32 by default
    x, y = (images.float() / 255).numpy(), labels.numpy()

    def epoch(e: int) -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # ART's progress bars
            trainer.fit(x, y)

    return Contestant("art", f"ART {art_version()} AdversarialTrainerMadryPGD", seed, epoch, lambda: model.eval(),
                      args.epochs)


def art_version() -> str | None:
    try:
        import art
    except ImportError:
        return None
    return art.__version__


CONTESTANTS: dict[str, Callable[[argparse.Namespace, int], Contestant]] = {
    # the speedrun preset is the winner of the candidates' race (below); until that race has been run there is none
    **({"speedrun": advlab_contestant("speedrun", "speedrun", [])} if "speedrun" in preset_names() else {}),
    "fast-at": advlab_contestant("fast-at", "fast-at", PRESET_FAST),
    "n-fgsm": advlab_contestant("n-fgsm", "n-fgsm", PRESET_FAST),
    "grad-align": advlab_contestant("grad-align", "grad-align", PRESET_FAST),
    "pgd-at-fp32": advlab_contestant("pgd-at-fp32", "pgd-at", ["precision=fp32", "channels_last=false"]),
    "pgd-at-fast": advlab_contestant("pgd-at-fast", "pgd-at", PRESET_FAST),
    "plain": plain_contestant,
    "art": art_contestant,
}
PGD2 = ["perturbation.steps=2", "perturbation.step_size=0.05", "schedule.name=one-cycle", "schedule.peak=0.4",
        "optimizer.lr=0.2", "model.options.dropout=0.0"]  # the demo's recipe (benchmarks/demo_sweep.py)
CANDIDATES: dict[str, Callable[[argparse.Namespace, int], Contestant]] = {
    f"{name}-{epochs}ep": advlab_contestant(f"{name}-{epochs}ep", preset, PRESET_FAST + extra, epochs)
    for name, preset, extra in (("fast-at", "fast-at", []), ("n-fgsm", "n-fgsm", []), ("pgd2", "pgd-at", PGD2))
    for epochs in (2, 3)
}
"""The speedrun's candidates, raced on the validation split alone (``--candidates``): the winner, the fewest
training seconds to the target, becomes the ``speedrun`` preset."""


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attacks: tuple[str, ...],
                    seed: int) -> advlab.evaluation.EvalResult:
    return advlab.evaluate(model, images, labels, EPS, "linf", attacks=attacks, autoattack_version=AA_VERSION,
                           sanity=False, progress=False, seed=seed, batch_size=500, device="cpu")


def race(args: argparse.Namespace, names: list[str]) -> list[Contestant]:
    """Every (contestant, seed), alternating epoch by epoch, until each reaches the target or its last epoch."""
    val_x, val_y = datasets.load("fashion-mnist", "val")
    val_x, val_y = val_x[: args.val_n], val_y[: args.val_n]
    test_x, test_y = datasets.load("fashion-mnist", "test")
    test_x, test_y = test_x[: args.test_n], test_y[: args.test_n]
    field_ = [{**CONTESTANTS, **CANDIDATES}[n](args, s) for n in names for s in args.seeds]
    for e in range(max(c.epochs for c in field_)):
        for c in [c for c in field_ if not c.done]:
            start = time.perf_counter()
            c.epoch(e)
            c.seconds += time.perf_counter() - start
            val = robust_accuracy(c.model(), val_x, val_y, ("autoattack",), seed=args.eval_seed)
            row = {"epoch": e + 1, "train_seconds": c.seconds, "val_clean": val.accuracy("clean"),
                   "val_autoattack": val.accuracy("robust")}
            c.rows.append(row)
            print(f"{c.name} seed {c.seed} epoch {e + 1}: {c.seconds:.0f} s, validation AutoAttack "
                  f"{row['val_autoattack']:.3f}", file=sys.stderr, flush=True)
            if row["val_autoattack"] >= args.target or e + 1 == c.epochs:
                c.reached = {"epoch": e + 1, "train_seconds": c.seconds, "reached": row["val_autoattack"] >= args.target,
                             "val_autoattack": row["val_autoattack"]}
                if not args.no_test:
                    test = robust_accuracy(c.model(), test_x, test_y, ("pgd20", "autoattack"), seed=args.eval_seed)
                    c.reached.update(test_clean=test.accuracy("clean"), test_pgd20=test.accuracy("pgd20"),
                                     test_autoattack=test.accuracy("autoattack"))
                c.done = True
    return field_


def peak_memory(args: argparse.Namespace, name: str) -> float:
    """Peak resident memory (MiB) of a fresh process training ``name`` for one epoch."""
    command = [sys.executable, __file__, "--one", name, "--train-size", str(args.train_size or 0),
               "--epochs", str(args.epochs), "--val-n", str(args.val_n)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def table(field_: list[Contestant], args: argparse.Namespace, memory: dict[str, float]) -> str:
    plain = [c.reached["train_seconds"] for c in field_ if c.key == "plain" and c.reached["reached"]]
    plain_mean = statistics.mean(plain) if plain else None
    by_key: dict[str, list[Contestant]] = {}
    for c in field_:
        by_key.setdefault(c.key, []).append(c)
    lines = ["| contestant | seeds reaching the target | epochs | training time (s) | vs plain loop | test clean | "
             "test PGD-20 | test AutoAttack | peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for key, runs in by_key.items():
        hit = [c.reached for c in runs if c.reached["reached"]]
        secs = [c.reached["train_seconds"] for c in runs]

        def cell(key: str, scale: float = 100.0, digits: int = 1) -> str:
            values = [r.reached[key] * scale for r in runs if key in r.reached]
            if not values:
                return "–"
            return f"{statistics.mean(values):.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}"
                                                              if len(values) > 1 else "")
        ratio = (f"{statistics.mean(secs) / plain_mean:.2f}x" if plain_mean and len(hit) == len(runs) else "–")
        lines.append(f"| {runs[0].name} | {len(hit)}/{len(runs)} | {', '.join(str(c.reached['epoch']) for c in runs)} | "
                     f"{cell('train_seconds', 1.0, 0)} | {ratio} | {cell('test_clean')} | {cell('test_pgd20')} | "
                     f"{cell('test_autoattack')} | {memory.get(key, float('nan')):.0f} |")
    return "\n".join(lines)


def plot(field_: list[Contestant], path: Path, target: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, Any] = {}
    for c in field_:
        colour = colours.setdefault(c.key, f"C{len(colours)}")
        ax.plot([0] + [r["train_seconds"] for r in c.rows], [0] + [100 * r["val_autoattack"] for r in c.rows],
                marker="o", color=colour, label=c.name if c.seed == min(x.seed for x in field_ if x.key == c.key)
                else None, alpha=0.8)
    ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("training wall time (s), 2 CPU cores")
    ax.set_ylabel(f"validation AutoAttack ({AA_VERSION}) accuracy, %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contestants", nargs="+", default=list(CONTESTANTS), choices=[*CONTESTANTS, *CANDIDATES])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=5, help="the most epochs a contestant trains (its schedule's length)")
    p.add_argument("--target", type=float, default=0.70, help="validation AutoAttack accuracy that stops a contestant")
    p.add_argument("--train-size", type=int, default=0, help="training images (0: the whole training split)")
    p.add_argument("--val-n", type=int, default=500, help="validation points of the stopping rule")
    p.add_argument("--test-n", type=int, default=1000, help="test points of the reported accuracies")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-test", action="store_true", help="validation only: the speedrun's candidates are chosen "
                   "without the test points (--contestants among CANDIDATES)")
    p.add_argument("--memory", action="store_true", help="measure each contestant's peak memory (one epoch alone)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    if args.smoke:
        args.train_size, args.val_n, args.test_n, args.epochs, args.seeds = 100, 20, 20, 1, [0]
        args.contestants = [c for c in args.contestants if c != "art" or art_version()]
    if args.one:  # --memory's child: one epoch of one contestant, then its peak RSS in MiB
        contestant = {**CONTESTANTS, **CANDIDATES}[args.one](args, 0)
        contestant.epoch(0)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return 0
    names = [n for n in args.contestants if n != "art" or art_version()]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.memory:
        memory = {n: peak_memory(args, n) for n in names}
        (args.out / "peak_memory.json").write_text(json.dumps(memory, indent=2) + "\n")
        print(json.dumps(memory, indent=2))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    field_ = race(args, names)
    memory_file = args.out / "peak_memory.json"
    memory = json.loads(memory_file.read_text()) if memory_file.exists() else {}
    report = {"started": started, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}", "pyautoattack": _pyautoattack(), "art": art_version(),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "contestants": [{"key": c.key, "name": c.name, "seed": c.seed, "rows": c.rows, "reached": c.reached} for c in field_]}
    (args.out / "time_to_robust.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(field_, args, memory)
    (args.out / "time_to_robust.md").write_text(text + "\n")
    plot(field_, args.out / "time_to_robust.png", args.target)
    print(text)
    return 0


def _pyautoattack() -> str:
    import pyautoattack

    return getattr(pyautoattack, "__version__", "unknown")


if __name__ == "__main__":
    raise SystemExit(main())
