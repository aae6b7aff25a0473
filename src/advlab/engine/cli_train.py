"""``advlab train``: train with a preset, or continue a run with --resume."""
from __future__ import annotations

import argparse

# command-line flag -> dotted config key
FLAG_KEYS = {
    "dataset": "data.name", "model": "model.name", "activation": "model.activation", "epochs": "epochs",
    "train_size": "data.train_size", "eval_n": "evaluation.n", "seed": "seed", "device": "device",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="adversarially train a model with a preset",
        description="Train with a preset (see `advlab presets`), then evaluate best and last checkpoints on the "
                    "test split. Any config key can be overridden as key=value, e.g. perturbation.steps=5.",
    )
    p.add_argument("--preset", help="preset name or path to a YAML config (default: pgd-at)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--dataset", help="dataset name: fashion-mnist, mnist, cifar10, cifar100, svhn")
    p.add_argument("--model", help="model name, see advlab.models.list_models()")
    p.add_argument("--activation", help="activation: relu, softplus, silu, gelu, elu, parametric-softplus")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--train-size", type=int, help="train on the first N training images, class-balanced")
    p.add_argument("--eval-n", type=int, help="number of test points of the final evaluation")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--out", help="run directory (default: runs/<preset>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import AdvlabError
    from .trainer import resume, train

    progress = not args.quiet
    if args.resume:
        given = [f for f in FLAG_KEYS if getattr(args, f) is not None] + (["preset"] if args.preset else [])
        if given or args.overrides:
            raise AdvlabError(f"--resume continues a run with its saved config; drop {', '.join(given) or 'overrides'}")
        resume(args.resume, progress=progress, evaluate=not args.no_eval)
        return 0
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    overrides += list(args.overrides)
    summary = train(args.preset or "pgd-at", args.out, overrides=overrides, overwrite=args.overwrite,
                    progress=progress, evaluate=not args.no_eval)
    print(f"run written to {summary['run_dir']}")
    return 0
