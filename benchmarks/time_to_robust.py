"""Time to a robust model: training wall time until a model reaches a target AutoAttack accuracy.

Fashion-MNIST, small-cnn, Linf eps 0.1. Every contestant trains epoch by epoch; after each epoch its model is
attacked on the validation split by AutoAttack's APGD-CE + APGD-DLR (pyautoattack, advlab's version ``apgd``),
and the first epoch whose validation robust accuracy reaches ``--target`` stops it: its time is the training
time up to there (evaluations not counted), and that checkpoint's accuracy on the first ``--test-n`` test points
(clean, PGD-20, AutoAttack apgd) is what the table reports. Nothing is chosen on the test points.

Contestants (``CONTESTANTS``): advlab presets (``speedrun`` once it exists, ``fast-at``, ``n-fgsm``,
``grad-align``, ``pgd-at`` in fp32 and with the fast defaults ``precision: auto`` + ``channels_last: auto``), a
plain PGD-10 loop written as a paper's script is (fp32, eager, NCHW), and IBM ART 1.20's
``AdversarialTrainerMadryPGD`` (optional: skipped when ``art`` is not installed). The PGD-10 contestants (pgd-at,
plain, ART) share one recipe, ``ONE_CYCLE``: the pgd-at preset's own (lr 0.01, piecewise) does not reach 70% in
ten epochs (benchmarks/BASELINES.md: 57.4% AutoAttack), so racing it would measure a learning rate, not a way of
training. The single-step presets keep their own recipes. Every contestant's schedule is ``--epochs`` long.
All run in one process, alternating epoch by epoch over (contestant, seed), so a load that drifts over the run
hits every contestant alike. Peak memory: each contestant alone for one epoch in a fresh process
(``--memory``), its peak resident set size.

The speedrun is chosen on the validation split alone (``choose_speedrun``): among advlab's contestants and the
extra ``CANDIDATES`` (the demo's PGD-2 recipe at 2 and 3 epochs), the one whose every seed reaches the target
with the fewest mean training seconds. ``src/advlab/configs/speedrun.yaml`` is that choice written as a preset
(tests/test_speedrun.py checks it resolves to the chosen candidate's config).

    python benchmarks/time_to_robust.py --out runs/ttr --seeds 0 1                 # the table (about 1.5 h on 2 cores)
    python benchmarks/time_to_robust.py --out runs/ttr --contestants pgd-at-fp32 pgd-at-fast --seeds 0 1
    python benchmarks/time_to_robust.py --out runs/ttr --memory --train-size 5000  # peak memory, one epoch each
    python benchmarks/time_to_robust.py --smoke --out /tmp/ttr                     # about 10 s, to check it runs

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
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import advlab
from advlab import data as datasets
from advlab.config import ScheduleConfig, TrainConfig, load_config, preset_names
from advlab.data import DeviceLoader
from advlab.engine.loop import train_one_epoch
from advlab.engine.run import create_run
from advlab.engine.schedule import create_schedule
from advlab.models import create_model

EPS = 0.1
AA_VERSION = "apgd"  # APGD-CE + APGD-DLR, one restart each (advlab's reduced version, named wherever shown)
FAST_DEFAULTS = ["precision=auto", "channels_last=auto"]  # advlab.engine.fast_defaults: fp32 + channels-last on CPUs
ONE_CYCLE = {"lr": 0.2, "peak": 0.4}  # the demo's schedule (benchmarks/demo_sweep.py), for every PGD-10 contestant
ONE_CYCLE_OVERRIDES = ["schedule.name=one-cycle", f"schedule.peak={ONE_CYCLE['peak']}",
                       f"optimizer.lr={ONE_CYCLE['lr']}", "model.options.dropout=0.0"]


def one_cycle(epochs: int) -> Callable[[float], float]:
    """``rate(t)`` after t epochs: advlab's one-cycle schedule at ``ONE_CYCLE`` (what ``ONE_CYCLE_OVERRIDES`` give the
    presets), so the plain loop and ART train at exactly the advlab contestants' rate."""
    return create_schedule(ScheduleConfig(name="one-cycle", peak=ONE_CYCLE["peak"]), ONE_CYCLE["lr"], epochs)


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


@dataclass(frozen=True)
class AdvlabRecipe:
    """An advlab preset with ``extra`` overrides, for ``epochs`` epochs (None: ``--epochs``); ``label``: the table's.
    Called with (args, seed) it is a contestant; ``config(args, seed)`` is the config it trains."""

    key: str
    label: str
    preset: str
    extra: Sequence[str] = ()
    epochs: int | None = None

    def config(self, args: argparse.Namespace, seed: int) -> TrainConfig:
        overrides = [f"seed={seed}", f"epochs={self.epochs or args.epochs}", f"eps={EPS}", "device=cpu",
                     f"data.train_size={args.train_size}" if args.train_size else "data.train_size=null",
                     f"validation.n={args.val_n}", *self.extra]
        return load_config(self.preset, overrides)

    def __call__(self, args: argparse.Namespace, seed: int) -> Contestant:
        run = create_run(self.config(args, seed), progress=False)
        return Contestant(self.key, self.label, seed, lambda e: train_one_epoch(run, e), lambda: run.model.eval(),
                          run.config.epochs)


def _train_images(args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    config = load_config("pgd-at", [f"seed={seed}", "device=cpu",
                                    f"data.train_size={args.train_size}" if args.train_size else "data.train_size=null"])
    split = datasets.run_training_split(config.data, seed)
    return split.images, split.labels


def plain_contestant(args: argparse.Namespace, seed: int) -> Contestant:
    """PGD-10 adversarial training as a paper's script writes it: fp32, eager, NCHW, model.eval() for the attack,
    SGD (momentum 0.9, weight decay 5e-4, batch 128) at ``ONE_CYCLE``'s rate, set before every batch."""
    torch.manual_seed(seed)
    images, labels = _train_images(args, seed)
    model = create_model("small-cnn", num_classes=10, in_channels=1, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=ONE_CYCLE["lr"], momentum=0.9, weight_decay=5e-4)
    steps, alpha = 10, 2.5 * EPS / 10
    loader = DeviceLoader(images, labels, 128, seed=seed, shuffle=True, crop_padding=0, flip=False)
    rate = one_cycle(args.epochs)

    def epoch(e: int) -> None:
        loader.set_epoch(e)
        for i, (x, y, _) in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = rate(e + i / len(loader))
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

    return Contestant("plain", "plain PGD-10 loop (fp32, eager)", seed, epoch, lambda: model.eval(), args.epochs)


def art_contestant(args: argparse.Namespace, seed: int) -> Contestant:
    """IBM ART's AdversarialTrainerMadryPGD (PGD-10, the same step, batch, SGD settings and ``ONE_CYCLE`` rate), one
    epoch per call. ART fits the classifier one batch at a time and steps the scheduler after each, so a LambdaLR
    over batches gives the same per-batch rate as the other contestants."""
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(seed)
    images, labels = _train_images(args, seed)
    model = create_model("small-cnn", num_classes=10, in_channels=1, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=ONE_CYCLE["lr"], momentum=0.9, weight_decay=5e-4)
    per_epoch, rate = -(-len(labels) // 128), one_cycle(args.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda batch: rate(batch / per_epoch) / ONE_CYCLE["lr"])
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                   nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu", optimizer=optimizer)
    trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=128, eps=EPS, eps_step=2.5 * EPS / 10,
                                         max_iter=10, num_random_init=1)
    trainer.attack.set_params(batch_size=128)  # ART attacks in sub-batches of 32 by default
    x, y = (images.float() / 255).numpy(), labels.numpy()

    def epoch(e: int) -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # ART's progress bars
            trainer.fit(x, y, scheduler=scheduler)

    return Contestant("art", f"ART {art_version()} AdversarialTrainerMadryPGD", seed, epoch, lambda: model.eval(),
                      args.epochs)


def art_version() -> str | None:
    try:
        import art
    except ImportError:
        return None
    return art.__version__


CONTESTANTS: dict[str, Callable[[argparse.Namespace, int], Contestant]] = {
    # the speedrun preset is the race's choice (choose_speedrun); before the race had been run there was none
    **({"speedrun": AdvlabRecipe("speedrun", "advlab speedrun", "speedrun", epochs=load_config("speedrun").epochs)}
       if "speedrun" in preset_names() else {}),
    "fast-at": AdvlabRecipe("fast-at", "advlab fast-at (FGSM-RS)", "fast-at", FAST_DEFAULTS),
    "n-fgsm": AdvlabRecipe("n-fgsm", "advlab n-fgsm", "n-fgsm", FAST_DEFAULTS),
    "grad-align": AdvlabRecipe("grad-align", "advlab grad-align (FGSM-RS + GradAlign)", "grad-align", FAST_DEFAULTS),
    "pgd-at-fp32": AdvlabRecipe("pgd-at-fp32", "advlab pgd-at, PGD-10, fp32", "pgd-at",
                                ["precision=fp32", "channels_last=false", *ONE_CYCLE_OVERRIDES]),
    "pgd-at-fast": AdvlabRecipe("pgd-at-fast", "advlab pgd-at, PGD-10, fast defaults", "pgd-at",
                                FAST_DEFAULTS + ONE_CYCLE_OVERRIDES),
    "plain": plain_contestant,
    "art": art_contestant,
}
PGD2 = ["perturbation.steps=2", "perturbation.step_size=0.05", *ONE_CYCLE_OVERRIDES]  # the demo's recipe
CANDIDATES: dict[str, Callable[[argparse.Namespace, int], Contestant]] = {
    f"pgd2-{epochs}ep": AdvlabRecipe(f"pgd2-{epochs}ep", f"advlab PGD-2, {epochs} epochs (candidate)", "pgd-at",
                                     FAST_DEFAULTS + PGD2, epochs)
    for epochs in (2, 3)
}
"""Recipes raced only as the speedrun's candidates, beside advlab's contestants (``choose_speedrun``)."""
ADVLAB_KEYS = tuple(k for k, make in {**CONTESTANTS, **CANDIDATES}.items() if isinstance(make, AdvlabRecipe))
"""The contestants that are advlab recipes: what the speedrun can be (not the plain loop, not ART)."""


def by_key(field_: list[Contestant]) -> dict[str, list[Contestant]]:
    """The field's runs grouped by contestant (its seeds), in the order they race."""
    groups: dict[str, list[Contestant]] = {}
    for c in field_:
        groups.setdefault(c.key, []).append(c)
    return groups


def choose_speedrun(field_: list[Contestant]) -> str | None:
    """The speedrun: among advlab's recipes whose every seed reached the target on the validation split, the
    fewest mean training seconds. Reads only validation rows (``reached``'s val_* and train_seconds)."""
    groups = by_key([c for c in field_ if c.key in ADVLAB_KEYS and c.reached is not None])
    eligible = {k: statistics.mean(c.reached["train_seconds"] for c in runs) for k, runs in groups.items()
                if all(c.reached["reached"] for c in runs)}
    return min(eligible, key=eligible.__getitem__) if eligible else None


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attacks: tuple[str, ...],
                    seed: int) -> advlab.evaluation.EvalResult:
    return advlab.evaluate(model, images, labels, EPS, "linf", attacks=attacks, autoattack_version=AA_VERSION,
                           sanity=False, progress=False, seed=seed, batch_size=500, device="cpu")


def race(args: argparse.Namespace, names: list[str], save: Callable[[list[Contestant]], None]) -> list[Contestant]:
    """Every (contestant, seed), alternating epoch by epoch, until each reaches the target or its last epoch;
    ``save(field)`` after every epoch, so a crash loses at most one epoch's row."""
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
            # accuracies are float32 fractions: 350/500 reads 0.69999999, which must count as 0.70
            reached = row["val_autoattack"] >= args.target - 1e-6
            if reached or e + 1 == c.epochs:
                c.reached = {"epoch": e + 1, "train_seconds": c.seconds, "reached": reached,
                             "val_autoattack": row["val_autoattack"]}
                if not args.no_test:
                    test = robust_accuracy(c.model(), test_x, test_y, ("pgd20", "autoattack"), seed=args.eval_seed)
                    c.reached.update(test_clean=test.accuracy("clean"), test_pgd20=test.accuracy("pgd20"),
                                     test_autoattack=test.accuracy("autoattack"))
                c.done = True
            save(field_)
    return field_


def peak_memory(args: argparse.Namespace, name: str) -> float:
    """Peak resident memory (MiB) of a fresh process training ``name`` for one epoch."""
    command = [sys.executable, __file__, "--one", name, "--train-size", str(args.train_size or 0),
               "--epochs", str(args.epochs), "--val-n", str(args.val_n), "--out", str(args.out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"peak memory of {name} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def table(field_: list[Contestant], args: argparse.Namespace, memory: dict[str, float]) -> str:
    plain_runs = [c.reached for c in field_ if c.key == "plain"]
    plain_mean = statistics.mean(r["train_seconds"] for r in plain_runs) if plain_runs else None
    plain_reached = bool(plain_runs) and all(r["reached"] for r in plain_runs)
    lines = ["| contestant | seeds reaching the target | epochs | training time (s) | vs plain loop | test clean | "
             "test PGD-20 | test AutoAttack | peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for key, runs in by_key(field_).items():
        hit = [c.reached for c in runs if c.reached["reached"]]
        secs = [c.reached["train_seconds"] for c in runs]

        def cell(key: str, scale: float = 100.0, digits: int = 1) -> str:
            values = [r.reached[key] * scale for r in runs if key in r.reached]
            if not values:
                return "–"
            return f"{statistics.mean(values):.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}"
                                                              if len(values) > 1 else "")
        # a plain loop that never reached the target took longer than its whole schedule: the ratio is a bound
        ratio = (("" if plain_reached else "< ") + f"{statistics.mean(secs) / plain_mean:.2f}x"
                 if plain_mean and len(hit) == len(runs) else "–")
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
    p.add_argument("--contestants", nargs="+", choices=[*CONTESTANTS, *CANDIDATES],
                   default=[*CONTESTANTS, *([] if "speedrun" in CONTESTANTS else CANDIDATES)],
                   help="who races (default: every contestant; the candidates too while there is no speedrun preset)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=3, help="the most epochs a contestant trains (its schedule's length)")
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

    def save(field_: list[Contestant]) -> None:
        report = {"started": started, "saved": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                  "pyautoattack": _pyautoattack(), "art": art_version(), "speedrun_choice": choose_speedrun(field_),
                  "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "contestants": [{"key": c.key, "name": c.name, "seed": c.seed, "rows": c.rows, "reached": c.reached}
                                  for c in field_]}
        (args.out / "time_to_robust.json").write_text(json.dumps(report, indent=2) + "\n")

    field_ = race(args, names, save)
    memory_file = args.out / "peak_memory.json"
    memory = json.loads(memory_file.read_text()) if memory_file.exists() else {}
    text = table(field_, args, memory) + f"\n\nspeedrun (chosen on validation): {choose_speedrun(field_)}"
    (args.out / "time_to_robust.md").write_text(text + "\n")
    plot(field_, args.out / "time_to_robust.png", args.target)
    print(text)
    return 0


def _pyautoattack() -> str:
    import pyautoattack

    return getattr(pyautoattack, "__version__", "unknown")


if __name__ == "__main__":
    raise SystemExit(main())
