"""The fault table of scripts/plant_faults.py stays true: every fault's text is found exactly once in the tree.

(The planting itself takes minutes and is run by hand: see docs/TESTING.md.)"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("plant_faults", ROOT / "scripts" / "plant_faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_fault_text_is_found_exactly_once():
    script = _script()
    assert len(script.FAULTS) >= 20
    assert script.check_table(ROOT) == []


def test_the_check_refuses_a_text_found_twice_or_not_at_all(tmp_path):
    script = _script()
    (tmp_path / "a.py").write_text("x = 1\nx = 1\ny = 2\n")
    twice = script.Fault("twice", "a.py", "x = 1", "x = 2", ("tests",), "")
    absent = script.Fault("absent", "a.py", "z = 3", "z = 4", ("tests",), "")
    once = script.Fault("once", "a.py", "y = 2", "y = 3", ("tests",), "")
    problems = script.check_table(tmp_path, (twice, absent, once))
    assert problems == ["twice: its text is found 2 times in a.py, not exactly once",
                        "absent: its text is found 0 times in a.py, not exactly once"]
