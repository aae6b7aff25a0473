"""The ``advlab`` command line: one subcommand per job, each with its own help text.

Every error a user can cause ends the command with exit code 2 and one line on stderr,
``advlab <command>: error: <what is wrong and what is allowed>``: bad flags (argparse), and every
AdvlabError (bad config, data, checkpoint, argument) or OSError (a file or folder that cannot be read or
written). Anything else is a bug in advlab and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import NoReturn

from . import __version__
from .distributed import rank_note
from .errors import AdvlabDeprecationWarning, AdvlabError

# name -> module with add_parser(subparsers) and run(args) -> int; imported on use to keep start-up fast
COMMANDS = {
    "train": "advlab.engine.cli_train",
    "presets": "advlab.engine.cli_presets",
    "eval": "advlab.evaluation.cli",
    "report": "advlab.reports.cli_report",
    "compare": "advlab.reports.cli_compare",
    "bench": "advlab.engine.cli_bench",
    "probe": "advlab.engine.cli_probe",
}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): ``<prog>: error: <message>``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    """``text`` with its lines joined by ``; ``: what the CLI prints must stay on one line."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def create_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(
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


def _show_deprecation(message, category, filename, lineno, file=None, line=None) -> None:
    """A renamed key, value or flag that was read: one line, ``advlab: deprecated: ...``; other warnings as
    Python shows them."""
    if issubclass(category, AdvlabDeprecationWarning):
        print(f"advlab: deprecated: {_one_line(message)}", file=sys.stderr if file is None else file)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_deprecation
    parser = create_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after flags: `advlab train --preset x a=1 --epochs 3 b=2`
        takes_overrides = isinstance(getattr(args, "overrides", None), list)  # train, bench, probe
        if not takes_overrides or not all("=" in e and not e.startswith("-") for e in extra):
            command = getattr(args, "command", None)
            prog = f"advlab {command}" if command else "advlab"
            OneLineParser(prog=prog).error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except AdvlabError as exc:  # the user's input: bad config, data file, checkpoint, argument
        print(f"advlab {args.command}: error{rank_note()}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's files and folders: missing, unreadable, not writable, disk full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"advlab {args.command}: error{rank_note()}: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"advlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
