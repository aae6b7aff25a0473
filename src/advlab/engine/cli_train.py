"""``advlab train``: train with a preset, or continue a run with --resume."""
from __future__ import annotations

import argparse
import sys

from ..config import PART_KINDS
from ..config.renamed import RENAMED_FLAGS, deprecated
from ..distributed import is_main_process
from ..errors import AdvlabError
from .choices import choices_text, flag_help
from .interrupt import RunStopped
from .train import resume, train

# command-line flag -> (dotted config key, type, help); the help's list of choices comes from the key's registry
FLAGS = {
    "dataset": ("data.dataset", str, "dataset"),
    "model": ("model.name", str, "model"),
    "activation": ("model.activation", str, "activation"),
    "epochs": ("epochs", int, "number of epochs"),
    "train_size": ("data.train_size", int, "train on the first N training images, class-balanced"),
    "evaluation_n": ("evaluation.n", int, "number of test points of the final evaluation"),
    "seed": ("seed", int, "random seed"),
    "device": ("device", str, "auto (default: cuda if available, else cpu), cpu, cuda or cuda:N"),
}
FLAG_KEYS = {flag: key for flag, (key, _, _) in FLAGS.items()}


class _Flag(argparse.Action):
    """Stores the value; when the flag was given by its old name (``RENAMED_FLAGS``), says so once."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in RENAMED_FLAGS:
            deprecated(f"{option_string} is now {RENAMED_FLAGS[option_string]}; {option_string} is read for this "
                       "release only")
        setattr(namespace, self.dest, values)


def flag_names(flag: str) -> list[str]:
    """The command-line spellings of ``flag`` (an attribute name): ``--evaluation-n``, then its old names."""
    name = f"--{flag.replace('_', '-')}"
    return [name, *(old for old, new in RENAMED_FLAGS.items() if new == name)]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="adversarially train a model with a preset",
        description="Train with a preset (see `advlab presets`), then evaluate best and last checkpoints on the "
                    "test split. Any config key can be overridden as key=value, e.g. perturbation.steps=5. "
                    "The whole run is checked before anything is written.",
    )
    p.add_argument("--preset", help="preset name or path to a YAML config (default: pgd-at)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    for flag, (key, kind, text) in FLAGS.items():
        p.add_argument(*flag_names(flag), dest=flag, type=kind, action=_Flag, help=flag_help(key, text))
    p.add_argument("--out", help="run directory (default: runs/<preset>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory (once the new run "
                                                            "is checked)")
    p.add_argument("--no-eval", action="store_true", help="skip the final test-set evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parts = "; ".join(f"{kind}.name: {choices_text(f'{kind}.name')}" for kind in PART_KINDS)
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, dotted keys ({parts})")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train or resume; a run stopped by SIGINT or SIGTERM ends with one line giving the command that continues
    it, and the exit code 128 + the signal's number."""
    try:
        return _train_or_resume(args)
    except RunStopped as stopped:
        if is_main_process():
            print(f"advlab train: {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_code


def _train_or_resume(args: argparse.Namespace) -> int:
    progress = not args.quiet
    if args.resume:
        given = [f for f in FLAGS if getattr(args, f) is not None] + (["preset"] if args.preset else [])
        if given or args.overrides:
            raise AdvlabError(f"--resume continues a run with its saved config; drop {', '.join(given) or 'overrides'}")
        resume(args.resume, progress=progress, evaluate=not args.no_eval)
        return 0
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    overrides += list(args.overrides)
    summary = train(args.preset or "pgd-at", args.out, overrides=overrides, overwrite=args.overwrite,
                    progress=progress, evaluate=not args.no_eval)
    if is_main_process():
        print(f"run written to {summary['run_dir']}")
    return 0
