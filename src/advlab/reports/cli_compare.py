"""``advlab compare``: registered in ``advlab.cli.COMMANDS`` (see :mod:`advlab.reports.cli`)."""
from .cli import add_compare_parser as add_parser, run_compare as run

__all__ = ["add_parser", "run"]
