"""A run directory made before this release's renames resumes and evaluates after them, to the old code's numbers.

tests/fixtures/run-format-1 was written by advlab at commit 480f9a3 (tests/fixtures/make_run_format_1.py): a
``fast-at`` run of 2 epochs stopped after epoch 1, whose config.yaml is format 1 (``data.name``,
``perturbation.bn_mode``, FGSM's ``step_size: 1.25`` in units of eps, no ``version``) and whose checkpoints call
the dataset ``data``; ``run-format-1-uninterrupted-metrics.jsonl`` is the same run trained whole by that code.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from advlab.cli import main
from advlab.config import read_config
from advlab.engine.train import resume
from advlab.errors import AdvlabDeprecationWarning

pytestmark = pytest.mark.usefixtures("fashion_mnist")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD_RUN = FIXTURES / "run-format-1"
UNINTERRUPTED = FIXTURES / "run-format-1-uninterrupted-metrics.jsonl"
TIMING = {"seconds", "train_seconds", "images_per_second"}


def _read_saying(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = read_config(path)
    return config, [str(w.message) for w in caught if issubclass(w.category, AdvlabDeprecationWarning)]


def test_a_format_1_config_is_read_in_the_current_format_with_one_line_per_renamed_word(tmp_path):
    config, said = _read_saying(OLD_RUN / "config.yaml")
    assert config.data.dataset == "fashion-mnist" and config.version == 2
    assert config.perturbation.options["step_size"] == pytest.approx(1.25 * 0.1)  # eps units -> pixels
    assert any("data.name is now data.dataset" in m for m in said)
    assert any("multiple of eps" in m and "0.125" in m for m in said)
    # the other renamed words, in a format-1 file of another preset
    old = tmp_path / "old.yaml"
    old.write_text("preset: x\ndata: {name: mnist}\nperturbation: {name: pgd, steps: 3, bn_mode: train}\n"
                   "evaluation: {classifier: softmax, attacks: [pgd20, pgd-knn]}\nvalidation: {attack: pgd-knn}\n")
    config, said = _read_saying(old)
    assert config.data.dataset == "mnist" and config.perturbation.options == {"steps": 3, "model_mode": "train"}
    assert config.evaluation.classifier == "linear" and config.evaluation.attacks == ["pgd20", "knn-guide"]
    assert config.validation.attack == "knn-guide"
    assert len(said) == 5 and any("perturbation.bn_mode is now perturbation.model_mode" in m for m in said)
    # the same file of the current format (version 2) reads nothing as old
    current = tmp_path / "current.yaml"
    current.write_text("version: 2\nperturbation: {name: fgsm, step_size: 0.05}\n")
    config, said = _read_saying(current)
    assert config.perturbation.options["step_size"] == 0.05 and said == []


def test_a_format_1_run_resumes_to_the_old_codes_uninterrupted_result(tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvlabDeprecationWarning)
        summary = resume(run, progress=False)
    got = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in UNINTERRUPTED.read_text().splitlines()]
    assert [r["epoch"] for r in got] == [1, 2]
    for row, old in zip(got, expected):
        for key in set(old) - TIMING:
            assert row[key] == pytest.approx(old[key], rel=1e-6, abs=1e-9), (row["epoch"], key)
    assert summary["best_epoch"] == expected[-1]["best_epoch"] and "clean" in summary["best"]


def test_advlab_eval_reads_a_format_1_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    code = main(["eval", str(run), "--checkpoint", "last", "--n", "20", "--attacks", "pgd20", "--no-sanity",
                 "--quiet", "--device", "cpu", "--out", str(tmp_path / "eval.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["meta"]["dataset"] == "fashion-mnist" and report["n"] == 20  # from the checkpoint's old key
