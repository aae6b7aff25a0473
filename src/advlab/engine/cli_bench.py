"""``advlab bench``: images per second, time per step, peak memory and FLOP utilisation of a training step."""
from __future__ import annotations

import argparse
import json

from .choices import flag_help

# command-line flag -> (dotted config key, type, help); the help's choices come from the key's registry
FLAGS = {
    "model": ("model.name", str, "model"),
    "batch_size": ("batch_size", int, "batch size"),
    "steps": ("perturbation.steps", int, "attack steps per training step"),
    "precision": ("precision", str, "training precision"),
    "attack_precision": ("attack_precision", str, "the attack's precision inside the step"),
    "compile": ("compile", str, "torch.compile mode of the step's model"),
    "device": ("device", str, "auto (default: cuda if available, else cpu), cpu, cuda or cuda:N"),
}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be CxHxW, e.g. 3x32x32, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be three positive sizes CxHxW, e.g. 3x32x32, got {text!r}")
    return shape


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure the speed and memory of a training step before a run",
        description="Time training steps of a preset (default pgd-at: PGD-10 adversarial training) on random "
                    "images of a shape, on the device: images per second, milliseconds per step, peak memory "
                    "and, on a GPU, model FLOP utilisation against a measured bf16 matrix-multiply rate. "
                    "Any config key can be set as key=value.")
    p.add_argument("--preset", default="pgd-at", help="preset name or YAML config (default: pgd-at)")
    p.add_argument("--shape", type=_shape, default=None,
                   help="input shape CxHxW (default: the preset's dataset's, e.g. 1x28x28 for fashion-mnist)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the dataset's)")
    for flag, (key, kind, text) in FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, help=flag_help(key, text))
    p.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last memory format")
    p.add_argument("--batches", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    p.add_argument("--flops", action="store_true", help="count FLOPs on CPU too (always on CUDA)")
    p.add_argument("--largest-batch", action="store_true",
                   help="also search the largest batch size whose step fits in GPU memory (CUDA)")
    p.add_argument("--largest-batch-limit", type=int, default=1 << 16, metavar="N",
                   help="stop the search at this batch size (default 65536); a result equal to it means 'at least'")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data import info
    from ..errors import AdvlabError
    from .bench import largest_batch, measure

    overrides = [f"{key}={getattr(args, flag)}" for flag, (key, _, _) in FLAGS.items()
                 if getattr(args, flag) is not None]
    if args.channels_last:
        overrides.append("channels_last=true")
    config = load_config(args.preset, overrides + list(args.overrides))
    dataset = info(config.data.dataset)
    shape = args.shape or dataset.shape
    classes = args.classes if args.classes is not None else dataset.num_classes
    if shape is None or classes is None:  # a user's dataset: its files say, and bench reads no files
        raise AdvlabError(f"dataset {dataset.name!r} takes its image shape and classes from its files: give "
                          "--shape and --classes")
    if config.data.image_size and not args.shape:
        shape = (shape[0], config.data.image_size, config.data.image_size)
    if classes < 2:
        raise AdvlabError(f"--classes must be >= 2, got {classes}")
    result = measure(config, shape, classes, batches=args.batches, warmup=args.warmup, flops=args.flops or None)
    out = result.to_dict()
    if args.largest_batch:
        out["largest_batch"] = largest_batch(config, shape, classes, start=min(config.batch_size, 64),
                                             limit=args.largest_batch_limit)
        out["largest_batch_limit"] = args.largest_batch_limit
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(result.lines()))
        if args.largest_batch:
            at_least = "at least " if out["largest_batch"] >= args.largest_batch_limit else ""
            print(f"largest batch {at_least}{out['largest_batch']:,} (fits in GPU memory)")
    return 0
