"""Class-wise fairness (FRL's natural, boundary and robust error) on hand-made flags, in the JSON, the table and
the training summary."""
import json
from pathlib import Path

import pytest
import torch

from advlab.evaluation import EvalResult
from advlab.evaluation.fairness import class_errors, error_summary
from advlab.evaluation.result import AttackOutcome

# 12 points, 3 classes of 4, 6 and 2 points (unequal, so a mean over points differs from the mean over classes).
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2]
CLEAN = [1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1]
PGD = [0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1]  # point 8 is wrong clean but right under pgd20: not robust
CW = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]  # points 8, 9 likewise; class 2: no point broken by either attack

# By hand, per class 0, 1, 2 (numerators: points counted; denominators: class sizes 4, 6, 2).
NATURAL = [1 / 4, 2 / 6, 0.0]  # clean mistakes: point 3; points 8, 9; none
EXPECTED = {
    # pgd20: correct clean, wrong under attack: points 0, 1 | 5, 6 | none; robust (clean AND pgd): 2 | 4, 7 | 10, 11
    "pgd20": {"boundary": [2 / 4, 2 / 6, 0.0], "robust": [3 / 4, 4 / 6, 0.0]},
    # cw20: broken 1, 2 | 5, 6, 7 | none; robust: 0 | 4 | 10, 11
    "cw20": {"boundary": [2 / 4, 3 / 6, 0.0], "robust": [3 / 4, 5 / 6, 0.0]},
    # AND of clean, pgd20, cw20: robust only 4 | 10, 11; broken 0, 1, 2 | 5, 6, 7
    "robust": {"boundary": [3 / 4, 3 / 6, 0.0], "robust": [4 / 4, 5 / 6, 0.0]},
}
SIZES = [4, 6, 2]
# worst class by hand (largest error; ties: smallest index): cw20 boundary ties 0.5 in classes 0 and 1 -> 0
WORST = {"pgd20": {"natural": 1, "boundary": 0, "robust": 0},
         "cw20": {"natural": 1, "boundary": 0, "robust": 1},
         "robust": {"natural": 1, "boundary": 0, "robust": 0}}


def flags(bits):
    return torch.tensor(bits, dtype=torch.bool)


def result() -> EvalResult:
    return EvalResult(eps=0.1, norm="linf", labels=torch.tensor(LABELS), num_classes=3,
                      clean=AttackOutcome("clean", flags(CLEAN), 0.0),
                      attacks={"pgd20": AttackOutcome("pgd20", flags(PGD), 0.0),
                               "cw20": AttackOutcome("cw20", flags(CW), 0.0)})


def expected(name, kind):
    return NATURAL if kind == "natural" else EXPECTED[name][kind]


@pytest.mark.parametrize("name", ["pgd20", "cw20", "robust"])
@pytest.mark.parametrize("kind", ["natural", "boundary", "robust"])
def test_errors_per_class_average_over_classes_and_worst_class_match_the_hand_computation(name, kind):
    fair = result().fairness()
    s = fair[name][kind]
    per_class = expected(name, kind)
    assert s["per_class"] == pytest.approx({str(c): e for c, e in enumerate(per_class)})
    assert s["average"] == pytest.approx(sum(per_class) / 3)  # mean over classes, not over points
    assert s["overall"] == pytest.approx(sum(e * k for e, k in zip(per_class, SIZES)) / 12)
    assert s["average"] != pytest.approx(s["overall"]) or s["average"] == 0
    assert s["worst_class"] == WORST[name][kind]
    assert s["worst"] == pytest.approx(max(per_class))


def test_robust_error_is_natural_plus_boundary_and_the_and_matches_the_json_robust_entry():
    r = result()
    fair, d = r.fairness(), r.to_dict()
    for name, entry in fair.items():
        for c in ["0", "1", "2"]:
            nat, bdy, rob = (entry[k]["per_class"][c] for k in ("natural", "boundary", "robust"))
            assert rob == pytest.approx(nat + bdy)
    # the AND entry's robust error is 1 - the robust accuracy already in the JSON
    assert fair["robust"]["robust"]["overall"] == pytest.approx(1 - d["robust"]["acc"])
    for c, acc in d["robust"]["per_class"].items():
        assert fair["robust"]["robust"]["per_class"][c] == pytest.approx(1 - acc)
    assert fair["robust"]["robust"]["worst_class"] == d["robust"]["worst_class"]["class"]


def test_ties_pick_the_smallest_class_index_as_numbers_not_strings():
    assert error_summary({"2": 0.1, "1": 0.5, "0": 0.5}, None)["worst_class"] == 0
    s = error_summary({"10": 0.3, "9": 0.3, "3": 0.2}, 0.25)
    assert s["worst_class"] == 9 and s["worst"] == 0.3 and s["overall"] == 0.25
    assert s["average"] == pytest.approx(0.8 / 3)


def test_absent_classes_have_no_entry_and_no_points_give_none():
    labels = torch.tensor([0, 0, 2, 2])  # class 1 absent
    out = class_errors(flags([1, 0, 1, 1]), flags([1, 0, 0, 1]), labels)
    assert out["natural"]["per_class"] == {"0": 0.5, "2": 0.0}
    assert out["boundary"]["per_class"] == {"0": 0.0, "2": 0.5}
    assert out["boundary"]["average"] == pytest.approx(0.25) and out["boundary"]["worst_class"] == 2
    empty = class_errors(flags([]), flags([]), torch.tensor([], dtype=torch.long))
    assert empty["robust"] == {"average": None, "worst": None, "worst_class": None, "overall": None,
                               "per_class": {}}
    with pytest.raises(ValueError):
        class_errors(flags([1, 0]), flags([1]), torch.tensor([0, 1]))


def test_json_schema_keeps_the_old_keys_and_adds_fairness_per_attack_and_for_the_and():
    d = json.loads(json.dumps(result().to_dict()))
    assert {"n", "eps", "norm", "num_classes", "seed", "accuracy_unit", "clean", "attacks", "robust", "sanity",
            "per_sample", "version", "seconds", "fairness", "defence_success_rate", "inputs"} == set(d)
    assert list(d["fairness"]) == ["pgd20", "cw20", "robust"]
    assert d["fairness"]["pgd20"]["over"] == ["clean", "pgd20"]
    assert d["fairness"]["robust"]["over"] == d["robust"]["over"] == ["clean", "pgd20", "cw20"]
    for entry in d["fairness"].values():
        assert set(entry) == {"over", "natural", "boundary", "robust"}
        for kind in ("natural", "boundary", "robust"):
            assert set(entry[kind]) == {"average", "worst", "worst_class", "overall", "per_class"}
            assert all(0 <= v <= 1 for v in entry[kind]["per_class"].values())


def fairness_rows(table: str) -> dict[str, str]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class-wise error in %"))
    assert "average over the 3 classes / worst class" in lines[start]
    assert lines[start + 2].split() == ["attack", "natural", "boundary", "robust"]
    rows = {}
    for line in lines[start + 4:]:
        if not line.strip():
            break
        name = "robust (AND)" if line.startswith("robust (AND)") else line.split()[0]
        rows[name] = line[len(name):]
    return rows


def cell(values, worst):
    return f"{100 * sum(values) / len(values):.2f} / {100 * max(values):.2f} ({worst})"


def test_table_has_a_fairness_row_per_attack_and_for_the_and_in_percent():
    rows = fairness_rows(result().table())
    assert list(rows) == ["pgd20", "cw20", "robust (AND)"]
    for name, row_name in [("pgd20", "pgd20"), ("cw20", "cw20"), ("robust", "robust (AND)")]:
        cells = [cell(expected(name, kind), WORST[name][kind]) for kind in ("natural", "boundary", "robust")]
        assert rows[row_name].split() == " ".join(cells).split()
    # the AND's robust cell written out: (4/4 + 5/6 + 0) / 3 = 61.11%, worst class 0 at 100%
    assert rows["robust (AND)"].split()[-4:] == ["61.11", "/", "100.00", "(0)"]
    assert "61.11" not in rows["pgd20"] + rows["cw20"]


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed")
def test_training_summary_stores_fairness_per_checkpoint_and_prints_the_block(tmp_path):
    from advlab.engine.train import train
    from advlab.runs import summary_table

    summary = train("pgd-at", tmp_path / "run", overrides=[
        "data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=50", "device=cpu",
        "epochs=1", "evaluation.n=40", "evaluation.attacks=[pgd20]", "evaluation.sanity=false"],
        progress=False, evaluate=True)
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    for which in ("best", "last"):
        fair = stored[which]["fairness"]
        assert list(fair) == ["pgd20", "robust"]
        clean, pgd = stored[which]["per_sample"]["clean"], stored[which]["per_sample"]["pgd20"]
        assert fair["pgd20"]["boundary"]["overall"] == pytest.approx(
            sum(c and not p for c, p in zip(clean, pgd)) / len(clean))
        assert fair["pgd20"]["natural"]["per_class"] == pytest.approx(
            {c: 1 - acc for c, acc in stored[which]["clean"]["per_class"].items()})
    text = summary_table(summary)
    assert text.count("class-wise error in %") == 1 + (stored["best"]["epoch"] != stored["last"]["epoch"])
    assert "robust (AND)" in text.split("class-wise error in %")[1]
