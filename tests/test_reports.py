"""`advlab report`, `advlab compare`, `advlab eval --model-card` and the optional TensorBoard log, on a tiny
real run (GAIRAT, so a part logs its own metrics, list-valued ones included) made once for the module."""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
import sys
import types

import matplotlib.image
import numpy as np
import pytest

from advlab.cli import main
from advlab.config import load_config
from advlab.errors import ConfigError
from advlab.evaluation.model_card import ROBUSTBENCH_FIELDS, model_card
from advlab.reports import SECTIONS, compare_runs, not_significant, part_groups, write_comparison, write_report
from advlab.reports.compare import Stat
from advlab.runs import SUMMARY, TENSORBOARD, RunDir

TINY = ["data.train_size=200", "batch_size=50", "epochs=2", "perturbation.steps=2", "validation.n=50",
        "evaluation.n=50", "evaluation.attacks=[pgd20]", "evaluation.sanity=true", "device=cpu"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    from advlab.engine.train import train

    path = tmp_path_factory.mktemp("reports") / "gairat"
    train("gairat", path, overrides=TINY + ["weighting.burn_in=0"], progress=False)
    return path


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a PNG (matplotlib's own reader), after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def assert_drawn(data: bytes) -> None:
    pixels = decode_png(data)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].std()) > 0.02, "blank figure"


# ---------------------------------------------------------------------------------------------------------
# report


def test_report_writes_every_section_figures_and_an_html_with_only_embedded_images(tiny_run):
    files = write_report(tiny_run)
    assert files.problems == []
    names = sorted(p.stem for p in files.figures)
    assert names == ["part-gair", "per-class", "training"]
    for figure in files.figures:
        assert_drawn(figure.read_bytes())

    md = files.markdown.read_text()
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings == list(SECTIONS)
    for link in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (tiny_run / link).is_file(), link
    summary = json.loads((tiny_run / SUMMARY).read_text())
    best = summary["best"]
    # the evaluation table and per-class table hold the summary's numbers, in %
    assert f"| best | {best['epoch']} | 50 | {100 * best['clean']['acc']:.1f} | " \
           f"{100 * best['attacks']['pgd20']['acc']:.1f} | {100 * best['robust']['acc']:.1f} |" in md
    worst = best["robust"]["worst_class"]["class"]
    assert re.search(rf"^\| {worst} \| [0-9.]+ \| [0-9.]+ \(worst\) \|", md, flags=re.M)
    for check in best["sanity"]:
        assert f"| best | {check['name']} | {check['status']} |" in md
    assert "gair_kappa_hist" in md
    assert f"| best | torch | {best['version']['torch']} |" in md

    page = files.html.read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert len(sources) == 3
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:60]
        assert_drawn(base64.b64decode(source.split(",", 1)[1]))
    assert "url(" not in page and "<link" not in page and "<script" not in page


def test_report_command_line(tiny_run, capsys):
    (tiny_run / "report.md").unlink(missing_ok=True)
    assert main(["report", str(tiny_run), "--quiet"]) == 0
    assert (tiny_run / "report.md").is_file() and (tiny_run / "report.html").is_file()
    assert main(["report", str(tiny_run / "nope"), "--quiet"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_part_metrics_are_found_by_prefix_not_by_method_name(tiny_run):
    rows = RunDir(tiny_run).read_metrics()
    groups = part_groups(rows)
    assert list(groups) == ["gair"]
    assert "gair_kappa_hist" in groups["gair"]["lists"] and "gair_kappa_mean" in groups["gair"]["scalars"]
    made_up = [{"epoch": 1, "lr": 0.1, "val_robust": 0.3, "zeta_rate": 0.5, "zeta_hist": [1, 2, 3],
                "zeta_note": "text", "omega": True, "labels_given_mass": None},
               {"epoch": 2, "lr": 0.1, "val_robust": 0.4, "zeta_rate": 0.25, "labels_given_mass": 0.9}]
    assert part_groups(made_up) == {"zeta": {"scalars": ["zeta_rate"], "lists": ["zeta_hist"]},
                                    "omega": {"scalars": ["omega"], "lists": []},
                                    "labels": {"scalars": ["labels_given_mass"], "lists": []}}


def test_a_run_killed_mid_way_still_reports_what_exists(tmp_path, one_thread, monkeypatch, stopped_run):
    written = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((self.log_dir, tag, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    config = load_config("gairat", TINY + ["weighting.burn_in=0", "logging.tensorboard=true"])
    run = RunDir.create(tmp_path / "killed", overwrite=False)
    run.write_config(config)
    stopped_run(config, run, 1)  # a 2-epoch run stopped after epoch 1: no summary
    # the TensorBoard hook wrote epoch 1's numbers, bools as 0/1, lists left out
    row = run.read_metrics()[0]
    tags = {tag: (value, step, log_dir) for log_dir, tag, value, step in written}
    assert tags["val_robust"] == (row["val_robust"], 1, str(run.file(TENSORBOARD)))
    assert tags["gair_active"][0] in (0.0, 1.0) and "gair_kappa_hist" not in tags and "epoch" not in tags

    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # killed while appending epoch 2
    files = write_report(run.path)
    problems = "\n".join(files.problems)
    assert "summary.json is missing" in problems and "data.json is missing" in problems
    assert "1 torn or unreadable line" in problems and "stopped after epoch 1 of 2" in problems
    assert sorted(p.stem for p in files.figures) == ["part-gair", "training"]
    for figure in files.figures:
        assert_drawn(figure.read_bytes())
    md = files.markdown.read_text()
    assert re.findall(r"^## (.+)$", md, flags=re.M) == list(SECTIONS)
    assert "summary.json is missing" in md and "Not evaluated" in md

    bare = tmp_path / "bare"
    bare.mkdir()
    files = write_report(bare)  # nothing at all: still a report, saying so
    assert "config.yaml is missing" in "\n".join(files.problems) and files.figures == []
    (bare / "config.yaml").write_text("epochs: [")  # torn
    (bare / "summary.json").write_text('{"best": ')
    files = write_report(bare)
    assert "config.yaml cannot be read" in "\n".join(files.problems)
    assert "summary.json cannot be read" in "\n".join(files.problems)


# ---------------------------------------------------------------------------------------------------------
# compare

def _fake_run(source, target, preset, seed, clean, robust_best, robust_last):
    """A copy of the tiny run with its config's preset and seed and its summary's accuracies replaced."""
    shutil.copytree(source, target)
    run = RunDir(target)
    run.write_config(load_config("gairat", TINY + [f"preset={preset}", f"seed={seed}"]))
    summary = run.read_json(SUMMARY)
    for which, robust in (("best", robust_best), ("last", robust_last)):
        summary[which]["clean"]["acc"] = clean
        summary[which]["attacks"]["pgd20"]["acc"] = robust + 0.01
        summary[which]["robust"]["acc"] = robust
    run.write_json(SUMMARY, summary)
    return target


def test_compare_gives_mean_and_spread_over_seeds_and_marks_small_differences(tiny_run, tmp_path, capsys):
    runs = [_fake_run(tiny_run, tmp_path / "a0", "alpha", 0, 0.80, 0.40, 0.30),
            _fake_run(tiny_run, tmp_path / "b0", "beta", 0, 0.81, 0.50, 0.44),
            _fake_run(tiny_run, tmp_path / "a1", "alpha", 1, 0.84, 0.42, 0.36),
            _fake_run(tiny_run, tmp_path / "b1", "beta", 1, 0.79, 0.52, 0.40)]
    comparison = compare_runs(runs, group_by="preset")
    alpha, beta = comparison.groups
    assert (alpha.name, beta.name) == ("alpha", "beta") and alpha.seeds == [0, 1]
    # by hand: mean (a + b) / 2, sample standard deviation |a - b| / sqrt(2)
    expected = {("best", "clean"): ((0.80, 0.84), (0.81, 0.79)), ("best", "robust"): ((0.40, 0.42), (0.50, 0.52)),
                ("last", "robust"): ((0.30, 0.36), (0.44, 0.40)),
                ("gap", "robust"): ((0.10, 0.06), (0.06, 0.12))}
    for column, (a, b) in expected.items():
        for group, (x, y) in ((alpha, a), (beta, b)):
            stat = group.stats[column]
            assert stat.mean == pytest.approx((x + y) / 2, abs=1e-12)
            assert stat.sd == pytest.approx(abs(x - y) / math.sqrt(2), abs=1e-12)

    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--group-by", "preset", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "compare.csv")))
    by = {(r["group"], r["checkpoint"], r["metric"]): r for r in rows}
    clean = by[("beta", "best", "clean")]
    assert float(clean["mean"]) == pytest.approx(0.80) and float(clean["sd"]) == pytest.approx(0.02 / math.sqrt(2))
    # clean: |0.80 - 0.82| = 0.02 < 0.0283 + 0.0141 -> not significant; best robust: 0.10 > 0.0141 + 0.0141
    assert clean["not_significant"] == "true"
    assert by[("beta", "best", "robust")]["not_significant"] == "false"
    assert float(by[("beta", "best", "robust")]["diff_vs_reference"]) == pytest.approx(0.10)
    assert by[("alpha", "best", "robust")]["not_significant"] == ""  # the reference
    md = (out / "compare.md").read_text()
    assert "| beta | 2 | 0, 1 | 80.0 ± 1.4 (-2.0, n.s.) |" in md
    assert "| 51.0 ± 1.4 (+10.0) |" in md
    assert_drawn((out / "compare-curves.png").read_bytes())


def test_compare_without_groups_and_with_an_unevaluated_run(tiny_run, tmp_path):
    lone = tmp_path / "lone"
    shutil.copytree(tiny_run, lone)
    (lone / SUMMARY).unlink()
    written = write_comparison([tiny_run, lone], tmp_path / "out")
    md = written["md"].read_text()
    assert f"{lone}: not evaluated (no summary.json)" in md
    table = [line for line in md.splitlines() if line.startswith(f"| {lone} |")]
    assert len(table) == 1 and set(table[0].split(" | ")[3:]) == {"-", "- |"}
    assert_drawn(written["png"].read_bytes())
    assert main(["compare", str(tiny_run), f"{tiny_run}/", "--out", str(tmp_path / "twice"), "--quiet"]) == 2


def test_compare_groups_only_runs_that_differ_in_their_seed_and_compares_only_like_evaluations(tmp_path, one_thread):
    """Real tiny runs: two seeds of pgd-at, one with 40% label noise, one with SiLU, PGD-1 training and a second
    evaluation attack. Before: one group 'pgd-at' of four "seeds" with a spread, robust accuracies compared
    across different sets of attacks."""
    from advlab.engine.train import train

    tiny = [o for o in TINY if not o.startswith("epochs=")] + ["epochs=1", "data.train_size=100"]
    settings = {"s0": ["seed=0"], "s1": ["seed=1"], "noisy": ["seed=0", "data.label_noise.rate=0.4"],
                "silu": ["seed=1", "model.activation=silu", "perturbation.steps=1",
                         "evaluation.attacks=[pgd20, cw20]"]}
    runs = []
    for name, extra in settings.items():
        train("pgd-at", tmp_path / name, overrides=tiny + extra, progress=False)
        runs.append(tmp_path / name)
    comparison = compare_runs(runs, group_by="preset")
    groups = {g.name: g for g in comparison.groups}
    assert len(groups) == 3 and [len(g.records) for g in comparison.groups] == [2, 1, 1]
    seeds, noisy, silu = comparison.groups
    assert seeds.seeds == [0, 1] and seeds.stats[("best", "robust")].sd is not None
    for key in ("data.label_noise.rate", "model.activation", "perturbation.steps", "evaluation.attacks"):
        assert all(key in g.name for g in comparison.groups)
    assert "data.label_noise.rate=0.4" in noisy.name and "model.activation=silu" in silu.name
    line = [n for n in comparison.notes if n.startswith("pgd-at: its runs differ in")]
    assert len(line) == 1 and "seed" not in line[0].split("differ in")[1].split("besides")[0]
    # like evaluations: the noisy run is compared everywhere, the SiLU run (pgd20 + cw20) not on robust accuracy
    for column in [("best", "clean"), ("best", "pgd20"), ("best", "robust")]:
        assert comparison.comparable(noisy, column)
    assert comparison.comparable(silu, ("best", "clean")) and comparison.comparable(silu, ("best", "pgd20"))
    assert not comparison.comparable(silu, ("best", "robust")) and not comparison.comparable(silu, ("gap", "robust"))
    note = [n for n in comparison.notes if n.startswith(f"{silu.name} is not compared")]
    assert len(note) == 1 and "best robust" in note[0] and "attacks pgd20, cw20 against pgd20" in note[0]

    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--group-by", "preset", "--out", str(out), "--quiet"]) == 0
    rows = {(r["group"], r["checkpoint"], r["metric"]): r for r in csv.DictReader(open(out / "compare.csv"))}
    assert rows[(silu.name, "best", "robust")]["comparable"] == "false"
    assert rows[(silu.name, "best", "robust")]["diff_vs_reference"] == ""
    assert rows[(silu.name, "best", "pgd20")]["comparable"] == "true"
    assert rows[(noisy.name, "best", "robust")]["diff_vs_reference"] != ""
    md = (out / "compare.md").read_text()
    assert "(not compared: evaluated differently)" in md and "Like with like:" in md

    # a run whose evaluation was made otherwise (another pgd20 budget), in the group of the two seeds: its
    # accuracies under pgd20 and robust are not averaged with theirs
    other = tmp_path / "s2"
    shutil.copytree(tmp_path / "s1", other)
    run = RunDir(other)
    run.write_config(load_config("pgd-at", tiny + ["seed=2"]))
    summary = run.read_json(SUMMARY)
    for which in ("best", "last"):
        summary[which]["attacks"]["pgd20"]["steps"] = 10
    run.write_json(SUMMARY, summary)
    mixed = compare_runs([tmp_path / "s0", tmp_path / "s1", other], group_by="preset")
    (group,) = mixed.groups
    assert ("best", "robust") not in group.stats and ("best", "clean") in group.stats
    assert mixed.evaluations[(group.name, ("best", "robust"))] == "mixed"
    assert any("not averaged" in n for n in mixed.notes)


def test_the_significance_rule():
    assert not_significant(Stat([0.5, 0.7]), Stat([0.6, 0.62])) is True  # |0.6 - 0.61| < 0.141 + 0.014
    assert not_significant(Stat([0.5, 0.52]), Stat([0.6, 0.62])) is False  # 0.1 > 0.014 + 0.014
    assert not_significant(Stat([0.5, 0.52]), Stat([0.52, 0.54])) is True  # 0.02 < 0.014 + 0.014 (the sum)
    assert not_significant(Stat([0.5, 0.5]), Stat([0.5, 0.5])) is True  # equal, no spread: nothing to tell apart
    assert not_significant(Stat([0.5]), Stat([0.6, 0.62])) is None


# ---------------------------------------------------------------------------------------------------------
# model card


def test_eval_model_card_names_the_reduced_autoattack(tiny_run, tmp_path, capsys):
    out = tmp_path / "best-eval.json"
    assert main(["eval", str(tiny_run), "--n", "20", "--attacks", "pgd20,autoattack", "--autoattack-version",
                 "apgd-ce", "--no-sanity", "--quiet", "--device", "cpu", "--out", str(out), "--model-card"]) == 0
    result = json.loads(out.read_text())
    card = json.loads((tmp_path / "best-eval-model-card.json").read_text())
    assert list(card)[:12] == list(ROBUSTBENCH_FIELDS)  # RobustBench's model_info fields, in their order
    assert card["advlab"]["threat_model"] == "Linf" and card["eps"] == "0.1"
    assert card["dataset"] == "fashion-mnist" and card["architecture"].startswith("small-cnn")
    assert card["advlab"]["number_of_points"] == 20
    assert card["clean_acc"] == f"{100 * result['clean']['acc']:.2f}"
    # a reduced AutoAttack is never called autoattack_acc: its number stays with advlab's extras, the footnote says why
    assert card["autoattack_acc"] is None
    assert card["advlab"]["autoattack_version_acc"] == f"{100 * result['attacks']['autoattack']['acc']:.2f}"
    assert card["advlab"]["autoattack"]["version"] == "apgd-ce"
    assert card["advlab"]["autoattack"]["package"] == result["attacks"]["autoattack"]["package"]
    assert result["attacks"]["autoattack"]["package"].startswith("pyautoattack ")
    assert "not an autoattack_acc" in card["footnote"] and "reduced" in card["footnote"]
    assert "apgd-ce" in card["footnote"] and "first 20 of the 10000 test points" in card["footnote"]

    assert main(["eval", str(tiny_run), "--n", "20", "--attacks", "pgd20", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "x.json"), "--model-card"]) == 2
    assert "--model-card reports AutoAttack accuracy" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_model_card_of_the_standard_version_has_no_reduction_note():
    result = {"n": 10000, "eps": 8 / 255, "norm": "linf", "clean": {"acc": 0.9},
              "attacks": {"autoattack": {"acc": 0.5, "version": "standard", "package": "pyautoattack 0.2.0",
                                         "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"],
                                         "attacks_run": ["apgd-ce", "apgd-t", "fab-t", "square"]}},
              "meta": {"model_spec": {"name": "wrn-28-10", "num_classes": 10}, "dataset": "cifar10"}}
    card = model_card(result)
    assert "footnote" not in card and card["clean_acc"] == "90.00" and card["autoattack_acc"] == "50.00"
    assert card["eps"] == "8/255" and card["architecture"] == "wrn-28-10"
    assert card["additional_data"] is False and card["number_forward_passes"] == 1 and card["reported"] == ""
    assert set(card) == {*ROBUSTBENCH_FIELDS, "advlab"}
    result["attacks"]["autoattack"]["attacks_run"] = ["apgd-ce", "apgd-t"]
    assert "not run because no robust point was left: fab-t, square" in model_card(result)["footnote"]
    assert "classifier" not in card["advlab"]
    result["n"] = 1000
    assert "first 1000 of the 10000 test points" in model_card(result)["footnote"]


def test_model_card_names_a_knn_classifier():
    result = {"n": 100, "eps": 0.1, "norm": "linf", "clean": {"acc": 0.7},
              "attacks": {"autoattack": {"acc": 0.3, "version": "standard", "package": "pyautoattack 0.2.0",
                                         "attacks": ["apgd-ce"], "attacks_run": ["apgd-ce"]}},
              "meta": {"classifier": {"kind": "knn", "k": 75, "metric": "cosine", "vote": "majority", "bank": 5000}}}
    card = model_card(result)
    assert card["advlab"]["classifier"] == ("k nearest neighbours (k=75, cosine, majority vote) over 5000 training "
                                            "features")
    assert "classified by k nearest neighbours" in card["footnote"]


# ---------------------------------------------------------------------------------------------------------
# TensorBoard


def test_tensorboard_is_off_by_default_and_a_missing_package_stops_the_run_before_it_writes(tmp_path, monkeypatch):
    from advlab.engine.train import train

    assert load_config("pgd-at").logging.tensorboard is False
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        train("pgd-at", tmp_path / "tb", overrides=TINY + ["logging.tensorboard=true"], progress=False)
    assert not (tmp_path / "tb").exists()
