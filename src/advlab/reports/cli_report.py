"""``advlab report``: registered in ``advlab.cli.COMMANDS`` (see :mod:`advlab.reports.cli`)."""
from .cli import add_report_parser as add_parser, run_report as run

__all__ = ["add_parser", "run"]
