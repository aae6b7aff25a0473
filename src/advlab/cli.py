"""The ``advlab`` command line: one subcommand per job, each with its own help text."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import AdvlabError

# name -> module with add_parser(subparsers) and run(args) -> int; imported on use to keep start-up fast
COMMANDS = {
    "train": "advlab.engine.cli_train",
    "presets": "advlab.engine.cli_presets",
    "eval": "advlab.evaluation.cli",
    "report": "advlab.reports.cli_report",
    "compare": "advlab.reports.cli_compare",
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="advlab",
        description="Adversarial training of image classifiers, and a robustness evaluation you can trust.",
    )
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after flags: `advlab train --preset x a=1 --epochs 3 b=2`
        if getattr(args, "command", None) != "train" or not all("=" in e and not e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except AdvlabError as exc:
        print(f"advlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
