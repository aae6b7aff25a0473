"""The speedrun preset is the time-to-robust race's choice, and the race chooses on the validation split alone.

benchmarks/time_to_robust.py races advlab's recipes and ``CANDIDATES`` to a validation AutoAttack accuracy;
``choose_speedrun`` takes the fewest mean training seconds among the recipes whose every seed got there, and
``src/advlab/configs/speedrun.yaml`` writes that recipe as a preset (benchmarks/TIME_TO_ROBUST.md).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from advlab.config import load_config

ROOT = Path(__file__).resolve().parents[1]
WINNER = "pgd2-2ep"  # the race of benchmarks/TIME_TO_ROBUST.md


@pytest.fixture(scope="module")
def ttr():
    spec = importlib.util.spec_from_file_location("time_to_robust", ROOT / "benchmarks" / "time_to_robust.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_robust"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("time_to_robust", None)


def _without_description(config) -> dict:
    data = config.to_dict()
    for key in ("description", "preset"):  # what the config is called, not what it trains
        data.pop(key, None)
    return data


def test_the_speedrun_preset_is_the_chosen_candidate(ttr):
    chosen = {**ttr.CONTESTANTS, **ttr.CANDIDATES}[WINNER]
    as_raced = load_config(chosen.preset, [*chosen.extra, f"epochs={chosen.epochs}"])
    assert _without_description(load_config("speedrun")) == _without_description(as_raced)
    assert "speedrun" in ttr.CONTESTANTS  # the race includes the preset from now on


def _runs(ttr, key: str, seconds: list[float], reached: list[bool], test_autoattack: float = 0.5):
    return [ttr.Contestant(key, key, seed, lambda e: None, lambda: None, 3,
                           reached={"epoch": 2, "train_seconds": s, "reached": r, "val_autoattack": 0.7 if r else 0.6,
                                    "test_autoattack": test_autoattack})
            for seed, (s, r) in enumerate(zip(seconds, reached))]


def test_choose_speedrun_takes_the_fewest_seconds_among_recipes_whose_every_seed_reached(ttr):
    field_ = (_runs(ttr, "fast-at", [10, 12], [True, False])          # fastest, but one seed missed
              + _runs(ttr, "pgd2-2ep", [40, 50], [True, True])        # mean 45: the choice
              + _runs(ttr, "pgd2-3ep", [30, 70], [True, True], 0.9)   # mean 50, best on the test points
              + _runs(ttr, "plain", [5, 5], [True, True]))            # not advlab's: never the speedrun
    assert ttr.choose_speedrun(field_) == "pgd2-2ep"
    assert ttr.choose_speedrun(_runs(ttr, "n-fgsm", [1, 1], [False, False])) is None
