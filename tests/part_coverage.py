"""What the suite requires of every registered part beside its code (docs/ADDING.md, section 4), as functions
that return the problems of one part: empty when it is documented, contract-tested and checked under torchrun.

tests/test_part_coverage.py runs them over every registry, and over a toy part registered without any of them.
"""
from __future__ import annotations

import re
from pathlib import Path

from advlab.recipes import part_class

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
METHODS = ROOT / "docs" / "methods"


def options_table_names(kind: str) -> set[str]:
    """The names in backticks in the ``kind`` row of docs/ARCHITECTURE.md's options table (its last column)."""
    for line in ARCHITECTURE.read_text().splitlines():
        if line.startswith(f"| `{kind}` |"):
            return set(re.findall(r"`([^`]+)`", line.split("|")[-2]))
    return set()


def documentation_problems(kind: str, name: str) -> list[str]:
    """A row of ARCHITECTURE.md's options table names the part, and a page of docs/methods/ names it."""
    problems = []
    if name not in options_table_names(kind):
        problems.append(f"{kind} {name!r} has no entry in docs/ARCHITECTURE.md's options table (row `{kind}`)")
    if not any(f"`{name}`" in page.read_text() for page in METHODS.glob("*.md")):
        problems.append(f"{kind} {name!r} is named by no page of docs/methods/ (its options, defaults and "
                        "differences from the official code)")
    return problems


def torchrun_problems(kind: str, name: str) -> list[str]:
    """A part that trains under torchrun (``distributed = True``) names the test of tests/test_distributed.py that
    shows it over 2 processes equal to one (``TORCHRUN_CHECKS``), unless it only pairs with a part that is refused
    under torchrun (then it never runs there)."""
    import test_distributed

    cls = part_class(kind, name)
    if not cls.distributed:
        return []
    refused = [f"{k} {n!r}" for k, n in cls.pairs_with.items() if not part_class(k, n).distributed]
    if refused:
        return []
    test = test_distributed.TORCHRUN_CHECKS.get((kind, name))
    if test is None:
        return [f"{kind} {name!r} trains under torchrun (distributed = True) but names no test in "
                "tests/test_distributed.py's TORCHRUN_CHECKS; add one, or set distributed = False"]
    if not callable(getattr(test_distributed, test, None)):
        return [f"{kind} {name!r}: TORCHRUN_CHECKS names {test!r}, which is not a test of tests/test_distributed.py"]
    return []


def contract_problems(kind: str, name: str) -> list[str]:
    """The contract of tests/test_part_contracts.py (build with its ``pairs_with`` parts, steps, JSON metrics, an
    exact state round trip) run on the part; its failure, in one line, as the problem."""
    import test_part_contracts

    try:
        test_part_contracts.check_contract(kind, name)
    except Exception as exc:  # the contract's own assertion, or the part failing to build or step
        return [f"{kind} {name!r} fails the part contract: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    return []
