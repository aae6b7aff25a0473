"""Robustness evaluation: JSON schema, the per-sample AND, threat-model verification, sanity checks, AutoAttack
through pyautoattack, on a tiny MLP trained for a moment on synthetic separable data."""
import json
import time

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.evaluation import EVAL_ATTACKS, EvalResult, eval_attack_names, evaluate
from advlab.evaluation.result import AttackOutcome
from advlab.evaluation.sanity import autoattack_le_pgd, black_box_gap, robust_le_clean

C, D = 4, 20


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(n, generator):
    """Four Gaussian clusters in [0, 1]^20, shaped as 1x4x5 images."""
    centers = torch.rand(C, D, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    y = torch.randint(0, C, (n,), generator=generator)
    x = (centers[y] + 0.1 * torch.randn(n, D, generator=generator)).clamp(0, 1)
    return x.reshape(n, 1, 4, 5), y


@pytest.fixture(scope="module")
def trained():
    """A standardly trained MLP (clean accuracy ~100%, no robustness beyond eps ~0.1) and held-out points."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = synthetic(400, g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, C))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(120):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    xt, yt = synthetic(200, g)
    return model, xt, yt


KEYS = {"n", "eps", "norm", "num_classes", "seed", "accuracy_unit", "clean", "attacks", "robust", "sanity",
        "per_sample", "version", "seconds"}


def test_report_schema_json_and_robust_is_the_per_sample_and(trained):
    model, x, y = trained
    model.train()
    x0 = x.clone()
    result = evaluate(model, x[:120], y[:120], eps=0.1, attacks=["pgd20", "cw20", "pgd20-scaled", "clean"],
                      batch_size=50, progress=False, sanity=False)
    assert model.training and torch.equal(x, x0)  # mode restored, inputs untouched
    d = json.loads(json.dumps(result.to_dict()))
    assert KEYS <= set(d)
    assert d["n"] == 120 and d["eps"] == 0.1 and d["norm"] == "linf" and d["accuracy_unit"] == "fraction"
    assert list(d["attacks"]) == ["pgd20", "cw20", "pgd20-scaled"]
    for name, entry in d["attacks"].items():
        assert {"acc", "per_class", "max_perturbation", "seconds", "steps", "step_size", "loss"} <= set(entry)
        assert 0 <= entry["acc"] <= d["clean"]["acc"] <= 1
        assert 0 < entry["max_perturbation"] <= 0.1 + 1e-6
        assert entry["steps"] == 20 and entry["step_size"] == pytest.approx(0.025)
    assert d["attacks"]["cw20"]["loss"] == "cw" and d["attacks"]["pgd20-scaled"]["logit_scale"] == 10
    assert set(d["clean"]["per_class"]) == {str(c) for c in y[:120].unique().tolist()}
    assert {"class", "acc"} <= set(d["robust"]["worst_class"])
    assert d["robust"]["worst_class"]["acc"] == min(d["robust"]["per_class"].values())
    assert {"advlab", "torch", "pyautoattack"} <= set(d["version"])
    flags = {k: torch.tensor(v, dtype=torch.bool) for k, v in d["per_sample"].items()}
    expected = flags["clean"] & flags["pgd20"] & flags["cw20"] & flags["pgd20-scaled"]
    assert torch.equal(flags["robust"], expected)
    assert d["robust"]["acc"] == pytest.approx(expected.float().mean().item())
    assert 0.2 < d["robust"]["acc"] < 0.95  # eps 0.1 breaks some points, not all
    names = [c["name"] for c in d["sanity"]]
    assert names == ["robust<=clean", "large-eps", "more-steps", "autoattack<=pgd", "black-box-gap"]
    assert all(c["status"] in ("passed", "failed", "not run") and "details" in c for c in d["sanity"])
    status = {c["name"]: c["status"] for c in d["sanity"]}
    assert status["robust<=clean"] == "passed" and status["large-eps"] == status["more-steps"] == "not run"
    table = result.table()
    assert table.splitlines()[0].startswith("120 points, eps 0.1")
    for name in ["clean", "pgd20", "cw20", "pgd20-scaled", "robust (AND)", "sanity checks"]:
        assert name in table


def test_standard_model_is_broken_at_large_eps_and_sanity_checks_pass(trained):
    model, x, y = trained
    images = (x * 255).round().to(torch.uint8)  # uint8 images are divided by 255
    result = evaluate(model, images[:100], y[:100], eps=0.3, attacks="pgd20", batch_size=64, progress=False)
    assert result.accuracy("clean") > 0.9
    assert result.accuracy("pgd20") < 0.05
    status = {c["name"]: c for c in result.sanity}
    for name in ["robust<=clean", "large-eps", "more-steps"]:
        assert status[name]["status"] == "passed", status[name]
    assert status["large-eps"]["details"]["eps"] == 0.5 and status["large-eps"]["details"]["acc"] <= 0.35
    assert status["autoattack<=pgd"]["status"] == status["black-box-gap"]["status"] == "not run"


class Masked(nn.Module):
    """Gradient masking by input quantisation: zero gradients almost everywhere, same decisions."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def test_gradient_masking_is_caught_by_large_eps_and_black_box_gap(trained):
    model, x, y = trained
    result = evaluate(Masked(model), x[:40], y[:40], eps=0.15, attacks=("pgd20", "square"), square_queries=200,
                      progress=False)
    status = {c["name"]: c for c in result.sanity}
    assert status["large-eps"]["status"] == "failed"
    assert status["black-box-gap"]["status"] == "failed"
    assert "likely gradient masking" in status["black-box-gap"]["message"]
    square = result.to_dict()["attacks"]["square"]
    assert square["attacks_run"] == ["square"] and square["square"]["queries"] == 200


def test_sanity_check_rules_on_given_numbers():
    def outcome(name, bits):
        return AttackOutcome(name, torch.tensor(bits, dtype=torch.bool), 0.0)

    clean = outcome("clean", [1] * 90 + [0] * 10)
    pgd = outcome("pgd20", [1] * 50 + [0] * 50)
    assert autoattack_le_pgd({"pgd20": pgd, "autoattack": outcome("autoattack", [1] * 55 + [0] * 45)})["status"] \
        == "passed"  # within 2 standard errors (10 points here)
    assert autoattack_le_pgd({"pgd20": pgd, "autoattack": outcome("autoattack", [1] * 70 + [0] * 30)})["status"] \
        == "failed"
    assert black_box_gap({"pgd20": pgd, "square": outcome("square", [1] * 45 + [0] * 55)})["status"] == "passed"
    gap = black_box_gap({"pgd20": pgd, "square": outcome("square", [1] * 20 + [0] * 80)})
    assert gap["status"] == "failed" and "likely gradient masking" in gap["message"]
    assert black_box_gap({"pgd20": pgd})["status"] == "not run"
    assert robust_le_clean(clean, {"pgd20": pgd})["status"] == "passed"
    assert robust_le_clean(clean, {"weird": outcome("weird", [1] * 95 + [0] * 5)})["status"] == "failed"


def test_an_attack_breaking_the_threat_model_is_refused(trained, monkeypatch):
    model, x, y = trained

    class Cheat:
        def __init__(self, setup, scale):
            self.eps, self.scale = setup.eps, scale

        def __call__(self, xb, yb):
            return (xb + self.scale * self.eps).clamp(0, 1) if self.scale < 3 else xb + 2

        def settings(self):
            return {}

    monkeypatch.setitem(EVAL_ATTACKS._items, "cheat", lambda s: Cheat(s, 2.0))
    with pytest.raises(AdvlabError, match="threat model"):
        evaluate(model, x[:8], y[:8], eps=0.1, attacks=["cheat"], progress=False, sanity=False)
    monkeypatch.setitem(EVAL_ATTACKS._items, "cheat", lambda s: Cheat(s, 3.0))
    with pytest.raises(AdvlabError, match=r"\[0, 1\]|threat model"):
        evaluate(model, x[:8], y[:8], eps=10.0, norm="l2", attacks=["cheat"], progress=False, sanity=False)
    monkeypatch.setitem(EVAL_ATTACKS._items, "cheat", lambda s: Cheat(s, 1.0))  # exactly eps: accepted
    result = evaluate(model, x[:8], y[:8], eps=0.1, attacks=["cheat"], progress=False, sanity=False)
    assert result.to_dict()["attacks"]["cheat"]["max_perturbation"] <= 0.1 + 1e-6


def test_bad_arguments_are_clear_errors(trained):
    model, x, y = trained
    with pytest.raises(AdvlabError, match="allowed: .*autoattack"):
        evaluate(model, x[:4], y[:4], eps=0.1, attacks=["pgd20", "fgsm7"], progress=False)
    for eps in (0, -0.1, 1.5):
        with pytest.raises(AdvlabError):
            evaluate(model, x[:4], y[:4], eps=eps, attacks=["pgd20"], progress=False)
    with pytest.raises(AdvlabError):
        evaluate(model, x[:4] * 2, y[:4], eps=0.1, attacks=["pgd20"], progress=False)
    with pytest.raises(AdvlabError):
        evaluate(model, x[:4], y[:4], eps=0.1, norm="l1", attacks=["pgd20"], progress=False)
    assert set(eval_attack_names()) >= {"clean", "pgd20", "cw20", "pgd20-scaled", "autoattack", "square"}


def test_l2_evaluation_respects_the_l2_ball(trained):
    model, x, y = trained
    result = evaluate(model, x[:32], y[:32], eps=0.5, norm="l2", attacks=["pgd20"], progress=False)
    d = result.to_dict()
    assert 0 < d["attacks"]["pgd20"]["max_perturbation"] <= 0.5 + 1e-6
    assert d["norm"] == "l2"
    large = {c["name"]: c for c in d["sanity"]}["large-eps"]
    assert large["status"] == "passed" and large["details"]["eps"] == pytest.approx(0.5 * D ** 0.5)


def test_autoattack_through_pyautoattack(trained):
    """Standard AutoAttack on a handful of points; eps large enough that APGD-CE breaks every point, so the
    remaining attacks are skipped (as AutoAttack does) and the test stays fast on a CPU."""
    model, x, y = trained
    rng = torch.get_rng_state()
    start = time.perf_counter()
    result = evaluate(model, x[:12], y[:12], eps=0.25, attacks=["pgd20", "autoattack"], batch_size=12,
                      progress=False, sanity=False)
    seconds = time.perf_counter() - start
    assert torch.equal(torch.get_rng_state(), rng)  # pyautoattack reseeds; the global RNG is restored
    aa = result.to_dict()["attacks"]["autoattack"]
    assert aa["version"] == "standard" and aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert aa["attacks_run"][0] == "apgd-ce"
    assert aa["acc"] <= result.accuracy("pgd20") + 0.1 and aa["acc"] < 0.1
    assert aa["apgd_t"]["target_classes"] == C - 1
    assert 0 < aa["max_perturbation"] <= 0.25 + 1e-6
    assert "version=standard" in result.table() or "AutoAttack standard" in result.table()
    assert seconds < 30


def test_autoattack_fast_version_runs_apgd_ce_and_apgd_t(trained):
    model, x, y = trained
    result = evaluate(model, x[:12], y[:12], eps=0.1, attacks=["autoattack", "pgd20"], batch_size=12,
                      progress=False, sanity=False, autoattack_version="fast")
    aa = result.to_dict()["attacks"]["autoattack"]
    assert aa["version"] == "fast" and aa["attacks"] == ["apgd-ce", "apgd-t"]
    assert aa["attacks_run"] == ["apgd-ce", "apgd-t"]  # some points survive APGD-CE at eps 0.1
    assert 0 < result.accuracy("autoattack") <= result.accuracy("pgd20") + 0.1
    check = {c["name"]: c for c in result.sanity}["autoattack<=pgd"]
    assert check["status"] == "passed"
    assert isinstance(result, EvalResult)


# ---------------------------------------------------------------------------------------------------------
# advlab eval (the CLI)

def write_checkpoint(path, model_spec, state=None, eps=0.1, norm="linf"):
    from advlab.runs import save_checkpoint

    save_checkpoint(path, {"model": state or {}, "model_spec": model_spec, "data": "fashion-mnist", "eps": eps,
                           "norm": norm, "epoch": 1})
    return path


def run_cli(args, capsys):
    from advlab.cli import main

    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err



SPEC = {"name": "small-cnn", "num_classes": 10, "in_channels": 1}


def test_cli_bad_path_and_bad_eps_exit_2_with_a_message(tmp_path, capsys):
    code, _, err = run_cli([tmp_path / "missing.pt"], capsys)
    assert code == 2 and "no such checkpoint" in err
    (tmp_path / "run").mkdir()
    code, _, err = run_cli([tmp_path / "run", "--checkpoint", "last"], capsys)
    assert code == 2 and "last.pt" in err
    ckpt = write_checkpoint(tmp_path / "c.pt", SPEC)  # eps is checked before the model is built
    for eps in ("0", "-0.1"):
        code, _, err = run_cli([ckpt, "--eps", eps], capsys)
        assert code == 2 and "eps must" in err, err
    code, _, err = run_cli([ckpt, "--eps", "1.5"], capsys)
    assert code == 2 and "eps is in pixel units in [0, 1]" in err, err
    code, _, err = run_cli([write_checkpoint(tmp_path / "big.pt", SPEC, eps=2.0)], capsys)
    assert code == 2 and "eps is in pixel units in [0, 1] (linf: in (0, 1]), got 2: did you mean 2/255" in err
    code, _, err = run_cli([ckpt, "--attacks", "pgd20,pgd1000"], capsys)
    assert code == 2 and "unknown attack 'pgd1000'" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli([tmp_path / "junk.pt"], capsys)
    assert code == 2 and "cannot read checkpoint" in err


def test_cli_checkpoint_that_does_not_match_its_model_exits_2(tmp_path, capsys):
    from advlab.models import create_model
    state = create_model(**SPEC).state_dict()
    ckpt = write_checkpoint(tmp_path / "c.pt", dict(SPEC, num_classes=5), state)
    code, _, err = run_cli([ckpt, "--device", "cpu"], capsys)
    assert code == 2 and "does not match" in err
    ckpt = write_checkpoint(tmp_path / "d.pt", {"name": "no-such-model"}, state)
    code, _, err = run_cli([ckpt, "--device", "cpu"], capsys)
    assert code == 2 and "no-such-model" in err


def test_cli_evaluates_a_run_directory_and_writes_json_and_table(tmp_path, capsys, monkeypatch):
    from advlab.models import create_model
    import advlab.data

    seen = {}

    def fake_split(settings, split, n=None):
        seen["args"] = (settings["dataset"], split)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=g)
        return advlab.data.LoadedSplit(images[:n], (torch.arange(20) % 10)[:n], 0, "none")

    monkeypatch.setattr(advlab.data, "run_split", fake_split)
    torch.manual_seed(0)
    write_checkpoint(tmp_path / "run" / "best.pt", SPEC, create_model(**SPEC).state_dict())
    code, out, err = run_cli([tmp_path / "run", "--n", 6, "--attacks", "pgd20,cw20", "--no-sanity", "--quiet",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    assert seen["args"] == ("fashion-mnist", "test")
    report = json.loads((tmp_path / "run" / "best-eval.json").read_text())
    assert report["n"] == 6 and report["eps"] == 0.1 and list(report["attacks"]) == ["pgd20", "cw20"]
    assert report["meta"]["dataset"] == "fashion-mnist" and report["meta"]["epoch"] == 1
    assert report["inputs"] == {"clamped": 0, "tolerance": 1e-6}  # uint8 images: nothing outside [0, 1]
    table = (tmp_path / "run" / "best-eval.txt").read_text()
    assert table.startswith("6 points, eps 0.1") and table.strip() == out.strip()
    out_path = tmp_path / "elsewhere" / "r.json"
    code, _, err = run_cli([tmp_path / "run" / "best.pt", "--n", 4, "--eps", "0.05", "--attacks", "pgd20",
                            "--no-sanity", "--quiet", "--device", "cpu", "--out", out_path], capsys)
    assert code == 0, err
    assert json.loads(out_path.read_text())["eps"] == 0.05 and out_path.with_suffix(".txt").exists()


# ---------------------------------------------------------------------------------------------------------
# labels of any integer dtype, models that do not return logits, evaluation under no_grad / inference_mode

def comparable(result):
    """The report without its timings."""
    d = result.to_dict()
    d.pop("seconds")
    for entry in [d["clean"], *d["attacks"].values()]:
        entry.pop("seconds")
    for check in d["sanity"]:
        check["details"].pop("seconds", None)
    return d


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8], ids=str)
def test_labels_of_every_integer_dtype_give_the_int64_report(trained, dtype):
    model, x, y = trained
    kwargs = dict(eps=0.1, attacks=["pgd20", "cw20"], progress=False, sanity=False)
    ref = evaluate(model, x[:16], y[:16], **kwargs)
    got = evaluate(model, x[:16], y[:16].to(dtype), **kwargs)
    assert comparable(got) == comparable(ref)
    assert 0 < ref.accuracy("pgd20") < 1


@pytest.mark.parametrize("bad", [torch.bool, torch.float32], ids=str)
def test_bool_and_float_labels_are_refused(trained, bad):
    model, x, y = trained
    with pytest.raises(AdvlabError, match="integer"):
        evaluate(model, x[:8], (y[:8] % 2).to(bad), eps=0.1, attacks=["pgd20"], progress=False)


class Wrapped(nn.Module):
    """Returns the wrapped model's logits as a tuple, a dict, the first logit only (B,), or the logits of the
    first image only (1, C) whatever the batch (right for one image, silently broadcast against the labels
    of a batch if not caught)."""

    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        z = self.net(x)
        return {"tuple": (z, None), "dict": {"logits": z}, "vector": z[:, 0], "one-row": z[:1]}[self.kind]


@pytest.mark.parametrize("kind, named", [("tuple", "tuple"), ("dict", "dict"), ("vector", r"shape \(1,\)"),
                                         ("one-row", r"with B = 8, got a float32 tensor of shape \(1, 4\)")],
                         ids=["tuple", "dict", "vector", "one-row"])
def test_a_model_that_does_not_return_logits_is_one_clear_error(trained, kind, named):
    model, x, y = trained
    for attacks, sanity in (([], False), ([], True), (["pgd20"], False), (["autoattack"], False),
                            (["square"], False)):
        with pytest.raises(AdvlabError, match=named) as info:
            evaluate(Wrapped(model, kind), x[:8], y[:8], eps=0.1, attacks=attacks, progress=False, sanity=sanity,
                     autoattack_version="apgd-ce", square_queries=10)
        assert "returns the logits tensor" in str(info.value)


def test_evaluation_under_no_grad_and_inference_mode_matches(trained):
    model, x, y = trained
    kwargs = dict(eps=0.1, attacks=["pgd20", "autoattack"], autoattack_version="apgd-ce", progress=False,
                  batch_size=8)
    ref = comparable(evaluate(model, x[:16], y[:16], **kwargs))
    with torch.no_grad():
        assert comparable(evaluate(model, x[:16], y[:16], **kwargs)) == ref
    with torch.inference_mode():
        xi, yi = x[:16].clone(), y[:16].clone()
        assert comparable(evaluate(model, xi, yi, **kwargs)) == ref
    assert all(c["status"] == "passed" for c in ref["sanity"] if c["name"] != "black-box-gap")


def test_a_model_without_input_gradients_is_refused_by_white_box_attacks_only(trained):
    model, x, y = trained

    class Argmax(nn.Module):
        def forward(self, xb):
            return nn.functional.one_hot(model(xb).argmax(1), C).float()

    for attacks in (["pgd20"], ["cw20"], ["autoattack"]):
        with pytest.raises(AdvlabError, match="does not depend on its input through autograd"):
            evaluate(Argmax(), x[:8], y[:8], eps=0.1, attacks=attacks, progress=False, sanity=False,
                     autoattack_version="apgd-ce")
    result = evaluate(Argmax(), x[:8], y[:8], eps=0.3, attacks=["square"], progress=False, sanity=False,
                      square_queries=50)
    assert result.accuracy("square") < result.accuracy("clean")  # the black-box attack still works
