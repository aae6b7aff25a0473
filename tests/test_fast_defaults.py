"""precision: auto and channels_last: auto (advlab.engine.fast_defaults): the choice follows the measured table,
falls back to fp32 where bf16 has no kernels, and is written in the run (config.yaml, summary.json)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from advlab.config import load_config
from advlab.engine import fast_defaults
from advlab.engine.fast_defaults import Measured, resolve_fast_defaults
from advlab.engine.train import resume, train
from advlab.errors import ConfigError
from advlab.recipes import PRECISIONS

CPU = torch.device("cpu")
TINY = ["epochs=1", "data.train_size=60", "batch_size=30", "perturbation.steps=1", "validation.n=20",
        "evaluation.n=20", "evaluation.attacks=[pgd20]", "evaluation.sanity=false", "device=cpu"]


@pytest.mark.parametrize("kernels", [True, False])
def test_auto_takes_bf16_only_where_measured_and_the_cpu_has_bf16_kernels(monkeypatch, kernels):
    monkeypatch.setitem(fast_defaults.MEASURED, "cpu", Measured("bf16", True, "a parity measurement"))
    monkeypatch.setattr(fast_defaults, "cpu_has_bf16_kernels", lambda: kernels)
    config, why = resolve_fast_defaults(load_config("pgd-at", ["precision=auto", "channels_last=auto"]), CPU)
    assert (config.precision, config.channels_last) == ("bf16" if kernels else "fp32", True)
    assert ("a parity measurement" in why) == kernels and ("no bf16 kernels" in why) != kernels


def test_auto_is_fp32_where_nothing_is_measured_and_given_values_are_kept(monkeypatch):
    monkeypatch.delitem(fast_defaults.MEASURED, "cpu")
    config, why = resolve_fast_defaults(load_config("pgd-at", ["precision=auto", "channels_last=auto"]), CPU)
    assert (config.precision, config.channels_last) == ("fp32", False) and "nothing measured on cpu" in why
    given = load_config("pgd-at", ["precision=bf16", "channels_last=false"])
    assert resolve_fast_defaults(given, CPU) == (given, None)


def test_channels_last_takes_true_false_or_auto():
    with pytest.raises(ConfigError, match="channels_last: expected true, false or auto"):
        train("pgd-at", None, overrides=[*TINY, "channels_last=fast"], progress=False)


@pytest.mark.slow
def test_a_run_with_auto_records_its_choice_and_reason_and_resumes_with_them(tmp_path, one_thread):
    out = tmp_path / "run"
    summary = train("pgd-at", out, overrides=[*TINY, "precision=auto", "channels_last=auto"], progress=False)
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["precision"] in PRECISIONS and isinstance(written["channels_last"], bool)  # the choice, not auto
    assert summary["fast_defaults"].startswith("auto on cpu: ")
    assert f"precision {written['precision']}" in summary["fast_defaults"]
    assert f"channels_last {str(written['channels_last']).lower()}" in summary["fast_defaults"]
    assert json.loads((out / "summary.json").read_text())["fast_defaults"] == summary["fast_defaults"]
    again = resume(out, progress=False)  # config.yaml holds the choice: nothing is chosen again
    assert "fast_defaults" not in again
