"""Speed: images/s of the same PGD-10 adversarial training in advlab's engine, a plain PyTorch loop and IBM's ART.

One process, alternating rounds. Every contestant trains the same model (same initial weights) on the same
images, batch by batch: PGD-10 under Linf eps 0.1 (pixels in [0, 1]), step 0.025, one uniform random start,
cross-entropy, the attack with the model in eval mode, then one SGD step (lr 0.01, momentum 0.9, weight decay
5e-4) on the adversarial batch in train mode; no augmentation. The contestants:

- ``engine <variant>``: advlab's ``train_one_epoch`` (``advlab.engine.loop``, preset ``pgd-at``) over the first ``--batches``
  batches, for each variant of :data:`VARIANTS` (config overrides: precision, attack precision,
  ``torch.compile``, channels-last);
- ``plain``: the hand-written fp32 eager NCHW loop of a paper's script (``plain-bf16``: the same loop with the
  whole step under bf16 autocast, with ``--plain-bf16``);
- ``ART``: ``art.defences.trainer.AdversarialTrainerMadryPGD`` on an ``art.estimators.classification
  .PyTorchClassifier`` (``pip install adversarial-robustness-toolbox``; optional: without it the ART column
  says "not installed"), set to PGD-10 at eps 0.1, step 0.025, one random start, ratio 1.0 (every example
  adversarial), the same batch size, one epoch over ``batches * batch_size`` examples.

small-cnn trains on Fashion-MNIST (1x28x28) when advlab finds it, else on random images of that shape;
preact-resnet18 on random uint8 3x32x32 images with 10 classes (content does not change speed). Random data is
written as a temporary dataset in the real file format, so the engine builds its run exactly as for real data.

Each round runs every contestant once (the order rotates from round to round) after ``--warmup`` untimed
batches each (which also compile the ``compile`` variants); reported: the median images/s over rounds, each
round's number, and the ratios of medians to ``plain`` and to ``ART``. The clock is read after a CUDA
synchronisation. ``--mfu`` (CUDA only) counts the FLOPs of one engine training step (attack and training pass,
backward included) with torch's FLOP formulas (``advlab.engine.bench.FlopCount``), measures a bf16 8192^3 matrix product,
and reports the FLOP rate and utilisation of each engine variant.

What ART does differently, and is measured with it (ART 1.20, read from its source):

- the data live in host numpy arrays (float32, converted from uint8 once, before timing); every batch goes
  numpy -> torch -> device and back several times: the attack's DataLoader (a per-sample collate), the default
  ``preprocessing=(0, 1)`` standardisation (a device round trip in ``fit``), ``predict``, ``fit``'s own
  DataLoader (which also reshuffles the batch);
- every attack step is ``loss_gradient``: ``loss.backward()`` through the whole model, so the weight gradients
  are computed too (the engine and the plain loop take the gradient of the input only), after
  ``model.zero_grad()``; the model is in eval mode for the attack (``training_mode=False``) as here;
- the random start is drawn by numpy on the host; the Linf projection broadcasts eps to a float64 array of the
  batch's size on the host, copies it to the device and projects in float64; each step checks the gradient for
  NaN (``torch.any``, a device sync) and masks NaN in the step (boolean indexing, another sync);
- after the attack, ``generate`` computes the attack's success rate for a log message even when logging is off:
  two more eval-mode forward passes per batch (adversarial and clean) through ``predict``;
- the attack's own batch size defaults to 32 (``ProjectedGradientDescent``); it is set to ``--batch-size`` here.

CPU (2 cores, small-cnn and preact-resnet18, the default CPU variants)::

    python benchmarks/speed.py --device cpu

GPU::

    python benchmarks/speed.py --device cuda --mfu --plain-bf16
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import pickle
import shlex
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab.config import load_config
from advlab.data import DeviceLoader, load
from advlab.devices import pick_device
from advlab.engine.bench import FlopCount, matmul_rate
from advlab.engine.loop import train_one_epoch
from advlab.engine.run import Run as EngineRun, create_run
from advlab.errors import DataError
from advlab.models import create_model
from common import machine

EPS, STEP, STEPS = 0.1, 0.025, 10
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "channels-last": ["channels_last=true"],
    "compile": ["compile=default"],
    "compile+channels-last": ["compile=default", "channels_last=true"],
    "bf16": ["precision=bf16"],
    "bf16+fp32-attack": ["precision=bf16", "attack_precision=fp32"],
    "bf16+channels-last": ["precision=bf16", "channels_last=true"],
    "bf16+channels-last+compile": ["precision=bf16", "channels_last=true", "compile=default"],
    "bf16+channels-last+cuda-graphs": ["precision=bf16", "channels_last=true", "compile=reduce-overhead"],
    "cuda-graphs": ["compile=reduce-overhead"],
}
"""Engine variants: advlab config overrides added to the preset ``pgd-at``."""

DEFAULT_VARIANTS = {"cpu": ["default", "compile", "channels-last", "compile+channels-last"],
                    "cuda": ["default", "bf16", "bf16+channels-last+compile"]}

MODELS = {"small-cnn": ("fashion-mnist", (1, 28, 28)), "preact-resnet18": ("cifar10", (3, 32, 32))}
"""Each model's dataset (in whose file format random data is written) and image shape."""

Run = Callable[[int], None]  # trains one contestant on the first n images


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------------
# data


def write_random_dataset(root: Path, name: str, shape: tuple[int, int, int], n: int) -> None:
    """``n`` random uint8 images of ``shape`` with balanced labels 0..9, in ``name``'s file format under
    ``root/name`` (IDX for fashion-mnist, python batches for cifar10), train and test files alike."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    if name == "fashion-mnist":
        folder = root / name
        folder.mkdir(parents=True)
        for prefix in ("train", "t10k"):
            (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, n, *shape[1:])
                                                                 + images.tobytes())
            (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 0x801, n) + labels.tobytes())
    else:
        folder = root / name / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        parts = zip(np.array_split(images, 5), np.array_split(labels, 5))
        for i, (x, y) in enumerate(parts, 1):
            batch = {"data": x.reshape(len(x), -1), "labels": y.tolist()}
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
        (folder / "test_batch").write_bytes(pickle.dumps({"data": images.reshape(n, -1), "labels": labels.tolist()}))


def dataset_for(model: str, n_train: int, tmp: Path) -> tuple[str, str | None, str]:
    """(data.dataset, data.root, description) of ``model``'s data: Fashion-MNIST for small-cnn when advlab finds
    it, else random images written under ``tmp`` (n_train training images plus the validation split)."""
    name, shape = MODELS[model]
    if model == "small-cnn":
        try:
            load(name, "train")
            return name, None, "Fashion-MNIST"
        except DataError:
            pass
    write_random_dataset(tmp, name, shape, n_train + 1000)  # 1,000: the validation split advlab carves out
    return name, str(tmp), "random " + "x".join(map(str, shape))


# ------------------------------------------------------------------------------------------------------
# contestants


def build_engine(model: str, data: str, root: str | None, variant: str, batch_size: int, device: str) -> EngineRun:
    """advlab's run (``create_run``) of preset ``pgd-at`` with the benchmark's settings and ``variant``'s
    overrides."""
    overrides = [f"model.name={model}", f"data.dataset={data}", f"batch_size={batch_size}", f"device={device}",
                 f"eps={EPS}", f"perturbation.steps={STEPS}", f"perturbation.step_size={STEP}",
                 "perturbation.random_start=uniform", "perturbation.model_mode=eval", f"optimizer.lr={LR}",
                 f"optimizer.momentum={MOMENTUM}", f"optimizer.weight_decay={WEIGHT_DECAY}",
                 "data.crop_padding=0", "data.flip=false", "validation.n=10", *VARIANTS[variant]]
    if root is not None:
        overrides.append(f"data.root={root}")
    return create_run(load_config("pgd-at", overrides), progress=False)


def engine_run(engine: EngineRun, images: torch.Tensor, labels: torch.Tensor) -> Run:
    def run(n: int) -> None:
        engine.data.loader.images, engine.data.loader.labels = images[:n], labels[:n]
        train_one_epoch(engine, 0)
    return run


def plain_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
              precision: str = "fp32") -> Run:
    """The official-style loop of a paper's script, fp32 eager NCHW (or the whole step under bf16 autocast),
    over the same batches as the engine (a DeviceLoader with the engine's seed)."""
    device = images.device
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def cast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(n: int) -> None:
        for x, y, _ in DeviceLoader(images[:n], labels[:n], batch_size, device=device, seed=0):
            model.eval()
            x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp_(0, 1)
            for _ in range(STEPS):
                x_adv.requires_grad_(True)
                with cast():
                    loss = F.cross_entropy(model(x_adv), y)
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), x - EPS), x + EPS).clamp_(0, 1)
            model.train()
            with cast():
                loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


def art_version() -> str | None:
    try:
        import art
    except ImportError:
        return None
    return art.__version__


def art_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Run:
    """ART's Madry PGD trainer on a PyTorchClassifier, fed host numpy arrays as ART expects."""
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    device = images.device
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]), nb_classes=10,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY),
        clip_values=(0.0, 1.0), device_type="cpu" if device.type == "cpu" else "gpu")
    trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=batch_size, eps=EPS, eps_step=STEP,
                                         max_iter=STEPS, num_random_init=1)
    trainer.attack.set_params(batch_size=batch_size)  # ART's PGD attacks in sub-batches of 32 by default
    x = (images.float() / 255).cpu().numpy()
    y = labels.cpu().numpy()

    def run(n: int) -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # ART's progress bars
            trainer.fit(x[:n], y[:n])
    return run


# ------------------------------------------------------------------------------------------------------
# measuring


def images_per_second(run: Run, n: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run(n)
    synchronize(device)
    return n / (time.perf_counter() - start)


def step_flops_per_image(engine: EngineRun, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """FLOPs of one engine training step (PGD attack and training pass, backward ops included) per image,
    counted by advlab's :class:`~advlab.engine.bench.FlopCount` (torch's FLOP formulas)."""
    counter = FlopCount()
    with counter:
        engine_run(engine, images, labels)(batch_size)
    return counter.flops / batch_size


def bench_model(model: str, args: argparse.Namespace, device: torch.device, art: str | None,
                peak: float | None) -> dict[str, Any]:
    """Every contestant on ``model``: warm-up, then ``args.rounds`` rounds in rotating order."""
    b = args.batch_size
    n_max = max(args.batches, args.warmup) * b
    with tempfile.TemporaryDirectory() as tmp:
        data, root, described = dataset_for(model, n_max, Path(tmp))
        engines = {v: build_engine(model, data, root, v, b, str(device)) for v in args.variants}
        first = next(iter(engines.values()))
        images, labels = first.data.loader.images[:n_max], first.data.loader.labels[:n_max]
        if len(labels) < n_max:
            raise SystemExit(f"{model}: {data} has {len(labels)} training images, fewer than the {n_max} asked for")

        def same_model() -> nn.Module:
            spec = dict(first.model_spec)
            fresh = create_model(spec.pop("name"), **spec).to(device)
            fresh.load_state_dict(first.model.state_dict())
            return fresh

        runs: dict[str, Run] = {"plain": plain_run(same_model(), images, labels, b)}
        if args.plain_bf16:
            runs["plain-bf16"] = plain_run(same_model(), images, labels, b, "bf16")
        runs.update({f"engine {v}": engine_run(t, images, labels) for v, t in engines.items()})
        if art is not None:
            runs["ART"] = art_run(same_model(), images, labels, b)

        if args.warmup:
            for run in runs.values():
                run(args.warmup * b)
        per_round: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                per_round[name].append(images_per_second(runs[name], args.batches * b, device))

        medians = {name: statistics.median(v) for name, v in per_round.items()}
        contestants = {name: {"rounds": per_round[name], "median": medians[name],
                              "vs_plain": medians[name] / medians["plain"],
                              "vs_art": medians[name] / medians["ART"] if "ART" in medians else None}
                       for name in names}
        result: dict[str, Any] = {"data": described, "contestants": contestants, "mfu": None,
                                  "compile_check": {v: t.compile_check for v, t in engines.items() if t.compile_check}}
        if peak is not None:
            counting = engines.get("default") or build_engine(model, data, root, "default", b, str(device))
            flops = step_flops_per_image(counting, images, labels, b)
            engines = [n for n in names if n.startswith("engine ")]
            best = max(engines, key=medians.get)
            result["mfu"] = {
                "flops_per_image": flops, "bf16_matmul_flops_per_second": peak, "best": best,
                "achieved_flops_per_second": flops * medians[best], "utilisation": flops * medians[best] / peak,
                "per_contestant": {n: flops * medians[n] / peak for n in names}}
    return result


# ------------------------------------------------------------------------------------------------------
# report


def _rate(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def table(result: dict[str, Any]) -> str:
    """One markdown row per model and contestant."""
    lines = ["| model | contestant | img/s (median) | rounds | vs plain | vs ART |", "|---|---|---|---|---|---|"]
    for model, m in result["models"].items():
        for name, c in m["contestants"].items():
            vs_art = f"{c['vs_art']:.2f}" if c["vs_art"] is not None else result["art"]
            lines.append(f"| {model} | {name} | {_rate(c['median'])} | {', '.join(map(_rate, c['rounds']))} | "
                         f"{c['vs_plain']:.2f} | {vs_art} |")
    return "\n".join(lines)


def mfu_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for model, m in result["models"].items():
        u = m["mfu"]
        if u is None:
            continue
        lines.append(f"{model} ({m['data']}): {u['flops_per_image'] / 1e9:.2f} GFLOP per training image (one engine "
                     f"step, torch's FLOP formulas); best engine variant `{u['best'].removeprefix('engine ')}`: "
                     f"{u['achieved_flops_per_second'] / 1e12:.1f} TFLOP/s, {100 * u['utilisation']:.1f}% of the "
                     f"{u['bf16_matmul_flops_per_second'] / 1e12:.0f} TFLOP/s of a bf16 8192^3 matmul")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with the command-line arguments ``argv`` (default: sys.argv); print the table last and
    return the result (per model and contestant: each round's images/s, the median, the ratios)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=10, help="timed batches per round and contestant")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per contestant first (compiles too)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help=f"engine variants (default on CPU: {' '.join(DEFAULT_VARIANTS['cpu'])}; on CUDA: "
                        f"{' '.join(DEFAULT_VARIANTS['cuda'])})")
    p.add_argument("--plain-bf16", action="store_true", help="also the plain loop under bf16 autocast")
    p.add_argument("--no-art", action="store_true", help="leave ART out even when it is installed")
    p.add_argument("--mfu", action="store_true", help="FLOPs per image and utilisation (CUDA only)")
    p.add_argument("--out", type=Path, help="write the result as JSON here")
    p.add_argument("--md", type=Path, help="append the command, machine and table to this markdown file")
    args = p.parse_args(argv)
    if min(args.batch_size, args.batches, args.rounds) < 1 or args.warmup < 0:
        p.error("--batch-size, --batches and --rounds must be >= 1, --warmup >= 0")

    device = pick_device(args.device)
    args.variants = args.variants or DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "cpu"]
    art = art_version()
    art_state = "not run (--no-art)" if args.no_art else "installed" if art else "not installed"
    peak = matmul_rate(device) if args.mfu and device.type == "cuda" else None
    command = shlex.join(["python", "benchmarks/speed.py", *(sys.argv[1:] if argv is None else argv)])
    result: dict[str, Any] = {
        "command": command, "machine": machine(str(device)), "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "art": art_state, "art_version": art, "batch_size": args.batch_size,
        "batches": args.batches, "rounds": args.rounds, "warmup": args.warmup, "variants": args.variants,
        "models": {m: bench_model(m, args, device, None if args.no_art else art, peak) for m in args.models},
    }
    result["table"] = table(result)
    header = [f"`{command}`", "", f"{result['machine']}; batch {args.batch_size}, {args.batches} timed batches per "
              f"round, {args.rounds} rounds, {args.warmup} warm-up batches; ART: "
              f"{art_state}{f' {art}' if art and not args.no_art else ''}"]
    if args.mfu and device.type != "cuda":
        header.append("(--mfu skipped: CUDA only)")
    header += mfu_lines(result)
    text = "\n".join(header) + "\n\n" + result["table"]
    print(text, flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        with args.md.open("a") as f:
            f.write(text + "\n\n")
    return result


if __name__ == "__main__":
    main()
