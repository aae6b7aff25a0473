"""Models from beside the registry (timm, torchvision, the user's own file), weights made elsewhere, and any
model evaluated from the command line with its pitfalls checked before it is attacked (docs/MODELS.md)."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import advlab
from advlab.cli import main
from advlab.config import load_config
from advlab.errors import AdvlabError, CheckpointError, ConfigError
from advlab.evaluation import check_model
from advlab.evaluation.attack_registry import AttackSetup
from advlab.evaluation.autoattack import AutoAttackEval
from advlab.evaluation.estimate import PassTimes, estimate_evaluation
from advlab.models import ExternalModel, bare_network, create_model, feature_extractor, strip_head

pytestmark = pytest.mark.usefixtures("fashion_mnist", "one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"

MYNETS = '''
"""A user's own networks, as a researcher would write them (written by tests/test_model_sources.py)."""
import torch
from torch import nn


def build(num_classes, in_channels, width=8):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


class _Outputs(nn.Module):
    def __init__(self, num_classes, in_channels, kind):
        super().__init__()
        self.net, self.kind = build(num_classes, in_channels), kind
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "dict":
            return {"features": x.flatten(1)[:, :4], "logits": logits}
        if self.kind == "probabilities":
            return logits.softmax(1)
        if self.kind == "randomised":
            return logits + 0.5 * torch.randn_like(logits)
        return self.drop(logits)

    def train(self, mode=True):
        super().train(mode)
        if self.kind == "stuck":  # a custom train() that leaves dropout on, whatever the caller asks
            self.drop.train(True)
        return self


def with_dict(num_classes, in_channels):
    return _Outputs(num_classes, in_channels, "dict")


def probabilities(num_classes, in_channels):
    return _Outputs(num_classes, in_channels, "probabilities")


def randomised(num_classes, in_channels):
    return _Outputs(num_classes, in_channels, "randomised")


def stuck(num_classes, in_channels):
    return _Outputs(num_classes, in_channels, "stuck")
'''

SMALL = ["epochs=1", "data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=40",
         "evaluation.n=40", "evaluation.attacks=[pgd20]"]
QUICK_EVAL = ["--n", "30", "--attacks", "pgd20", "--no-sanity", "--quiet", "--device", "cpu"]


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """``mynets.py`` in a fresh folder, the current folder (as a user runs advlab beside their code)."""
    (tmp_path / "mynets.py").write_text(MYNETS)
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("mynets", None)
    yield tmp_path
    sys.modules.pop("mynets", None)


def advlab_cli(args, cwd, env_path=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), *(env_path or [])]))
    return subprocess.run([sys.executable, "-m", "advlab", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def _importable(package: str) -> str | None:
    """None if ``package`` imports, else why not (the skip reason)."""
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (an optional extra: scripts/install_extras.sh, docs/MODELS.md)"
    try:
        importlib.import_module(package)
    except Exception as exc:  # timm imports torchvision at import; PyPI's torchvision needs a CUDA build of torch
        return f"{package} is installed but does not import here: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


# ---------------------------------------------------------------------------------------------------------
# the user's own code: trains, resumes, is evaluated in a new process without registering anything


def test_a_model_from_the_users_file_trains_resumes_and_is_evaluated_in_a_new_process(
        user_code, whole_and_resumed, training_rows):
    config = load_config("pgd-at", [*SMALL, "epochs=2", "model.name=mynets:build", "model.options={width: 6}",
                                    "model.normalize=dataset"])
    whole, resumed = whole_and_resumed(config, user_code, stop_after=1)
    assert training_rows(resumed) == training_rows(whole)  # resumed to the same numbers
    model, ckpt = advlab.load_model(resumed, "last")
    assert ckpt["model_spec"] == {"name": "mynets:build", "num_classes": 10, "in_channels": 1, "width": 6,
                                  "normalize": {"mean": [0.286], "std": [0.353]}}
    assert isinstance(model, ExternalModel) and model.normalize.mean.flatten().tolist() == pytest.approx([0.286])

    done = advlab_cli(["eval", resumed, *QUICK_EVAL], cwd=user_code)  # a new process: nothing registered
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((resumed / "best-eval.json").read_text())
    assert result["meta"]["model_spec"]["name"] == "mynets:build"
    assert [c["name"] for c in result["model_checks"]] == ["eval-mode", "input", "deterministic", "logits",
                                                           "predictions"]
    # the kNN classifier over its penultimate features (strip_head of the user's network)
    done = advlab_cli(["eval", resumed, *QUICK_EVAL, "--classifier", "knn", "--knn-k", "5",
                       "--out", user_code / "knn.json"], cwd=user_code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((user_code / "knn.json").read_text())["meta"]["classifier"]["kind"] == "knn"

    elsewhere = user_code / "elsewhere"
    elsewhere.mkdir()
    done = advlab_cli(["eval", resumed, *QUICK_EVAL], cwd=elsewhere)  # mynets.py is not importable from there
    assert done.returncode == 2
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot import module 'mynets'" in err and "PYTHONPATH" in err, err
    done = advlab_cli(["eval", resumed, *QUICK_EVAL], cwd=elsewhere, env_path=[str(user_code)])
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_source_model_is_an_encoder_and_a_projection_model(user_code):
    model = create_model("mynets:build", num_classes=10, in_channels=1)
    x = torch.rand(3, 1, 28, 28)
    features = feature_extractor(model)(x)
    assert features.shape == (3, 8)  # the penultimate features: the Linear(8, 10) replaced by Identity
    projection = create_model("mynets:build", num_classes=10, in_channels=1, head="projection", projection_dim=16)
    assert projection(x).shape == (3, 16) and projection.features(x).shape == (3, 8)


def test_a_dict_output_needs_model_output_and_the_key_is_checked(user_code):
    with pytest.raises(ConfigError, match=r"returned a dict with keys \['features', 'logits'\], not a logits tensor: "
                                          r"set model.output"):
        advlab.train("pgd-at", user_code / "r", overrides=[*SMALL, "model.name=mynets:with_dict"], progress=False)
    assert not (user_code / "r").exists()
    model = create_model("mynets:with_dict", num_classes=10, in_channels=1, output="logits")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(AdvlabError, match=r"model.output 'logit' is not a key"):
        create_model("mynets:with_dict", num_classes=10, in_channels=1, output="logit")(torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("override, message", [
    ("model.name=nosuchmodule:build", "model: model.name nosuchmodule:build: cannot import module 'nosuchmodule'"),
    ("model.name=mynets:nope", "module 'mynets' .* has no 'nope'; its callables: build,"),
    ("model.name=:resnet18", "write <source>:<name> with both parts"),
    ("model.activation=silu", "model.activation: advlab's activations apply to its own architectures"),
    ("model.normalize=imagenet", "model.normalize: expected none or dataset or {mean"),
    ("model.output=1.5", "model.output must be a key"),
])
def test_bad_model_settings_are_one_line_naming_the_key(user_code, override, message):
    overrides = [*SMALL, "model.name=mynets:build", override]
    with pytest.raises(ConfigError, match=message):
        advlab.train("pgd-at", user_code / "r", overrides=overrides, progress=False)
    assert not (user_code / "r").exists()


# ---------------------------------------------------------------------------------------------------------
# timm and torchvision: optional; run where they import


@pytest.mark.vision
@pytest.mark.slow
@pytest.mark.skipif(_importable("timm") is not None, reason=str(_importable("timm")))
def test_a_timm_model_trains_a_pgd_at_epoch_resumes_and_is_evaluated(tmp_path, whole_and_resumed, training_rows):
    config = load_config("pgd-at", [*SMALL, "epochs=2", "model.name=timm:resnet10t",
                                    "model.options={drop_path_rate: 0.05}"])
    whole, resumed = whole_and_resumed(config, tmp_path, stop_after=1)
    assert training_rows(resumed) == training_rows(whole)
    model, ckpt = advlab.load_model(resumed, "last")
    assert ckpt["model_spec"]["in_channels"] == 1  # timm's in_chans: Fashion-MNIST's one channel
    _, width = strip_head(create_model("timm:resnet10t", 10, 1))  # timm's get_classifier() names the head
    assert width == 512
    done = advlab_cli(["eval", resumed, *QUICK_EVAL, "--classifier", "knn", "--knn-k", "5"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.vision
@pytest.mark.skipif(_importable("timm") is not None, reason=str(_importable("timm")))
def test_a_timm_model_trains_on_a_folder_dataset_and_is_evaluated_in_a_new_process(tmp_path):
    """A timm architecture on a user's folder of colour PNGs (the ImageFolder layout, tests/layouts.py): one
    pgd-at epoch, then ``advlab eval RUN`` in another process rebuilds it from the checkpoint alone."""
    from layouts import write_folder

    write_folder(tmp_path / "imgs", train=30, test=4, size=16)  # 3 classes, RGB
    out = tmp_path / "run"
    summary = advlab.train("pgd-at", out, overrides=[
        "epochs=1", "batch_size=30", "perturbation.steps=2", "data.dataset=folder", f"data.root={tmp_path / 'imgs'}",
        "data.val_per_class=2", "validation.n=6", "evaluation.n=12", "evaluation.attacks=[pgd20]",
        "model.name=timm:resnet10t", "device=cpu"], progress=False)
    model, ckpt = advlab.load_model(out, "last")
    assert ckpt["model_spec"]["in_channels"] == 3 and ckpt["model_spec"]["num_classes"] == 3
    assert summary["evaluation_n"] == 12
    done = advlab_cli(["eval", out, "--n", "12", "--attacks", "pgd20", "--no-sanity", "--quiet", "--device", "cpu",
                       "--out", tmp_path / "eval.json"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["meta"]["dataset"] == "folder" and evaluated["meta"]["first_n"] == 12


@pytest.mark.vision
@pytest.mark.skipif(_importable("torchvision") is not None, reason=str(_importable("torchvision")))
def test_a_torchvision_model_is_built_without_weights_and_takes_three_channels():
    model = create_model("torchvision:resnet18", num_classes=10, in_channels=3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert feature_extractor(model)(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(AdvlabError, match="takes 3-channel images and this dataset has 1"):
        create_model("torchvision:resnet18", num_classes=10, in_channels=1)
    with pytest.raises(AdvlabError, match="never downloads"):
        create_model("torchvision:resnet18", num_classes=10, in_channels=3, weights="DEFAULT")


class Declared(nn.Module):
    """A network whose classifier is not its last nn.Linear in module order, and says so as timm's models do."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 12), nn.ReLU())
        self.fc = nn.Linear(12, 10)
        self.aux = nn.Linear(12, 3)  # registered after the classifier (an auxiliary head)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.fc(self.body(x))


def test_strip_head_takes_the_classifier_a_network_declares():
    encoder, width = strip_head(Declared())
    assert width == 12 and isinstance(encoder.fc, nn.Identity) and isinstance(encoder.aux, nn.Linear)
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, 12)


class StandInTimm:
    """A stand-in for the timm package where it cannot be imported (it imports torchvision, docs/MODELS.md): the
    three functions advlab calls, with timm's signatures (timm/models/_factory.py, _registry.py), building a real
    network; it records the call so the test sees what advlab asked of timm."""

    def __init__(self):
        self.calls = []

    def is_model(self, name):
        return name in self.list_models()

    def list_models(self, pattern=None):
        return ["resnet10t", "resnet18", "vit_tiny_patch16_224"]

    def create_model(self, model_name, pretrained=False, **kwargs):
        self.calls.append({"model_name": model_name, "pretrained": pretrained, **kwargs})
        return nn.Sequential(nn.Conv2d(kwargs["in_chans"], 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Dropout(kwargs.get("drop_rate", 0.0)), nn.Linear(4, kwargs["num_classes"]))


def test_timm_is_asked_for_no_weights_the_datasets_classes_and_channels_and_the_options(monkeypatch):
    timm = StandInTimm()
    monkeypatch.setitem(sys.modules, "timm", timm)
    model = create_model("timm:resnet10t", num_classes=10, in_channels=1, drop_rate=0.1)
    assert timm.calls == [{"model_name": "resnet10t", "pretrained": False, "num_classes": 10, "in_chans": 1,
                           "drop_rate": 0.1}]
    assert isinstance(model, ExternalModel) and model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(AdvlabError, match="model.options.pretrained .*never downloads"):
        create_model("timm:resnet10t", num_classes=10, in_channels=1, pretrained=True)
    with pytest.raises(AdvlabError, match="unknown timm model 'resnet19'; close: resnet18"):
        create_model("timm:resnet19", num_classes=10, in_channels=1)
    assert len(timm.calls) == 1  # nothing built for the refused ones


def test_a_probe_trains_a_linear_head_on_a_source_models_encoder(user_code):
    run = user_code / "run"
    advlab.train("pgd-at", run, overrides=[*SMALL, "model.name=mynets:build", "model.normalize=dataset"],
                 progress=False, evaluate=False)
    summary = advlab.probe(run, "slf", user_code / "probe", ["data.train_size=200", "batch_size=50",
                                                             "validation.n=40"], epochs=1, progress=False,
                           evaluate=False)
    model, ckpt = advlab.load_model(summary["run_dir"], "last")
    assert ckpt["model_spec"]["name"] == "mynets:build" and ckpt["model_spec"]["freeze"] == "encoder"
    source, _ = advlab.load_model(run, "best")
    assert torch.equal(bare_network(model).state_dict()["0.weight"], bare_network(source).state_dict()["0.weight"])


def test_a_missing_optional_package_is_one_line_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(AdvlabError, match="needs the timm package, which is not installed: see docs/MODELS.md"):
        create_model("timm:resnet18", num_classes=10, in_channels=1)


# ---------------------------------------------------------------------------------------------------------
# weights from elsewhere


def _trained_small_cnn() -> nn.Module:
    """small-cnn after a few SGD steps on Fashion-MNIST: a model whose accuracy is not chance."""
    images, labels = advlab.data.load("fashion-mnist", "train")
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(30):
        x, y = images[i * 64:(i + 1) * 64].float() / 255, labels[i * 64:(i + 1) * 64]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_advlab_eval_of_a_plain_state_dict_gives_exactly_evaluates_numbers(tmp_path):
    model = _trained_small_cnn()
    # as DataParallel saves it, under a "state_dict" key (a training script's checkpoint)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "weights.pth")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "small-cnn", "--weights", str(tmp_path / "weights.pth"), "--dataset",
                 "fashion-mnist", "--eps", "0.1", "--n", "40", "--attacks", "pgd20,cw20", "--no-sanity", "--quiet",
                 "--device", "cpu", "--out", str(out)]) == 0
    cli = json.loads(out.read_text())
    images, labels = advlab.data.load("fashion-mnist", "test")
    api = advlab.evaluate(model, images[:40], labels[:40], eps=0.1, attacks=("pgd20", "cw20"), sanity=False,
                          progress=False, seed=0).to_dict()
    assert api["clean"]["acc"] > 0.3  # a model that classifies: the comparison is not of chance-level flags
    assert cli["per_sample"] == api["per_sample"]
    for key in ("clean", "robust"):
        assert cli[key]["acc"] == api[key]["acc"]
    assert cli["meta"]["weights"]["prefixes_removed"] == ["module."]
    assert all(c["status"] == "passed" for c in cli["model_checks"])


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None, reason="safetensors is not installed "
                    "(an optional extra: scripts/install_extras.sh)")
def test_safetensors_weights_load_as_the_same_model(tmp_path, user_code):
    from safetensors.torch import save_file

    source = create_model("mynets:build", num_classes=10, in_channels=1)
    save_file(bare_network(source).state_dict(), str(tmp_path / "w.safetensors"))
    config = load_config("pgd-at", [*SMALL, "model.name=mynets:build", f"init.from={tmp_path / 'w.safetensors'}"])
    from advlab.engine.run import create_run

    run = create_run(config, progress=False)
    for k, v in bare_network(source).state_dict().items():
        assert torch.equal(bare_network(run.model).state_dict()[k], v), k


def test_init_from_a_plain_state_dict_is_strict_by_default_and_loads_what_fits_when_not(tmp_path, user_code):
    from advlab.engine.run import create_run

    source = create_model("mynets:build", num_classes=5, in_channels=1)  # another number of classes: a new head
    torch.save(bare_network(source).state_dict(), tmp_path / "five.pt")
    overrides = [*SMALL, "model.name=mynets:build", f"init.from={tmp_path / 'five.pt'}"]
    with pytest.raises(ConfigError, match=r"init.from: init.from .*five.pt does not fit the model: 2 of another "
                                          r"shape \(4.bias \(5,\) here \(10,\), 4.weight \(5, 8\) here \(10, 8\)\); "
                                          r"set init.strict: false"):
        create_run(load_config("pgd-at", overrides), progress=False)
    run = create_run(load_config("pgd-at", [*overrides, "init.strict=false"]), progress=False)
    got, want = bare_network(run.model).state_dict(), bare_network(source).state_dict()
    assert torch.equal(got["0.weight"], want["0.weight"]) and got["4.weight"].shape == (10, 8)

    torch.save({"0.weight": want["0.weight"], "extra.weight": torch.zeros(1)}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match=r"3 missing \(0.bias, 4.bias, 4.weight\); 1 unexpected \(extra.weight\)"):
        create_run(load_config("pgd-at", [*SMALL, "model.name=mynets:build", f"init.from={tmp_path / 'partial.pt'}"]),
                   progress=False)


class Payload:  # a pickled object: torch.load with weights_only refuses it, nothing runs
    def __reduce__(self):
        return (os.system, ("echo ran > pwned",))


def test_weights_that_would_run_code_are_refused(tmp_path, user_code):
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="could run code"):
        advlab.runs.read_weights(tmp_path / "evil.pt")
    assert not (user_code / "pwned").exists()


# ---------------------------------------------------------------------------------------------------------
# the pitfalls, checked before attacking


def _status(checks, name):
    return next(c for c in checks if c["name"] == name)


def test_probabilities_a_randomised_forward_and_train_mode_are_each_flagged(user_code):
    x = torch.rand(32, 1, 28, 28)
    good = create_model("mynets:build", 10, 1).eval()
    assert [c["status"] for c in check_model(good, x, 10)][:4] == ["passed"] * 4
    checks = check_model(create_model("mynets:probabilities", 10, 1).eval(), x, 10)
    assert _status(checks, "logits")["status"] == "flagged" and "probabilities" in _status(checks, "logits")["message"]
    checks = check_model(create_model("mynets:randomised", 10, 1).eval(), x, 10)
    flag = _status(checks, "deterministic")
    assert flag["status"] == "flagged" and "--autoattack-version rand" in flag["message"]
    trained = create_model("mynets:build", 10, 1)  # left in train mode, as nn.Module starts
    checks = check_model(trained, x, 10)
    assert _status(checks, "eval-mode")["status"] == "flagged" and "handed in train mode" in checks[0]["message"]
    assert trained.training  # the check restores what it found
    checks = check_model(create_model("mynets:stuck", 10, 1).eval(), x, 10)
    assert "stay in train mode after model.eval()" in _status(checks, "eval-mode")["message"]
    assert _status(checks, "deterministic")["status"] == "flagged"  # its dropout stays on


def test_advlab_eval_reports_the_flags_in_its_json_and_table(tmp_path, user_code, capsys):
    out = tmp_path / "rand.json"
    assert main(["eval", "--model", "mynets:randomised", "--dataset", "fashion-mnist", "--eps", "8/255",
                 *QUICK_EVAL, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "model check deterministic flagged" in err and "--autoattack-version rand" in err
    result = json.loads(out.read_text())
    assert result["eps"] == 8 / 255
    assert _status(result["model_checks"], "deterministic")["status"] == "flagged"
    assert "deterministic    flagged" in out.with_suffix(".txt").read_text()


def test_eps_above_one_is_refused_with_the_hint(tmp_path, user_code, capsys):
    code = main(["eval", "--model", "mynets:build", "--dataset", "fashion-mnist", "--eps", "8", *QUICK_EVAL])
    err = capsys.readouterr().err
    assert code == 2 and "eps is in pixel units in [0, 1] (linf: in (0, 1]), got 8: did you mean 8/255" in err, err
    code = main(["eval", "--model", "timm:resnet18", "--dataset", "fashion-mnist", "--eps", "8/255", *QUICK_EVAL])
    assert code == 2 and "starts from random weights: pass --weights FILE" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# register_model in one process, the run loaded in another


REGNETS = '''
from torch import nn
from advlab.models import register_model


@register_model("regnet")
def regnet(num_classes, in_channels, activation):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, 16), activation(), nn.Linear(16, num_classes))
'''

TRAIN_BOTH = '''
import sys
import regnets  # registers "regnet" (an importable module)
import advlab
from torch import nn
from advlab.models import register_model

register_model("scriptnet", lambda num_classes, in_channels, activation: nn.Sequential(
    nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes)))
small = {small!r}
advlab.train("pgd-at", "regrun", overrides=[*small, "model.name=regnet"], progress=False, evaluate=False)
advlab.train("pgd-at", "scriptrun", overrides=[*small, "model.name=scriptnet"], progress=False, evaluate=False)
'''


def test_a_run_of_a_registered_model_is_evaluated_in_another_process(tmp_path):
    (tmp_path / "regnets.py").write_text(REGNETS)
    (tmp_path / "train_both.py").write_text(TRAIN_BOTH.format(small=SMALL))
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "train_both.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    done = advlab_cli(["eval", "regrun", *QUICK_EVAL], cwd=tmp_path)  # imports regnets, which registers it
    assert done.returncode == 0, done.stderr[-2000:]
    done = advlab_cli(["eval", "scriptrun", *QUICK_EVAL], cwd=tmp_path)
    assert done.returncode == 2 and "by the script that trained the run (__main__)" in done.stderr
    assert "model.name=<module>:<factory>" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------
# time: counted before, shown while it runs


class Passes(nn.Module):
    """Counts the forward passes and the backward passes through its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forwards, self.backwards = model, 0, 0

    def forward(self, x):
        self.forwards += 1
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(self._backward)
        return out

    def _backward(self, grad):
        self.backwards += 1
        return grad


class _Marks(logging.Handler):
    """Notes the pass counts at each of pyautoattack's "running <attack>" records."""

    def __init__(self, counter: Passes) -> None:
        super().__init__(logging.DEBUG)
        self.counter, self.marks = counter, []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("running ") or message.startswith("robust accuracy after"):
            self.marks.append((message, self.counter.forwards, self.counter.backwards))


def test_autoattacks_counted_passes_are_what_pyautoattack_makes_when_no_point_breaks(user_code):
    """The oracle is a count of pyautoattack's own passes (eps so small that no point breaks: every run goes
    to its last iteration), not advlab's formula."""
    torch.manual_seed(0)
    counter = Passes(create_model("mynets:build", 10, 1).eval())
    setup = AttackSetup(counter, 1e-7, "linf", torch.device("cpu"), 0, 10, "standard")
    attack = AutoAttackEval(setup)
    aa = attack.aa
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = 3
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = 2
    aa.square.n_queries = 5
    marks = _Marks(counter)
    logger = logging.getLogger("auto-attack")
    logger.addHandler(marks)
    try:
        x = torch.rand(6, 1, 28, 28)
        attack(x, counter(x).argmax(1).detach())
    finally:
        logger.removeHandler(marks)
    counted = {}
    for (start, f0, b0), (_, f1, b1) in zip(marks.marks[0::2], marks.marks[1::2]):
        counted[start[len("running "):]] = (f1 - f0, b1 - b0)
    assert set(counted) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert attack.cost() == counted


def test_the_estimate_is_the_counted_passes_times_the_timed_ones(user_code):
    model = create_model("mynets:build", 10, 1).eval()
    images = torch.rand(4, 1, 28, 28)
    # 1 s per forward, 3 s per forward + backward (so 2 s per backward), 25 points in batches of 10: 3 batches
    estimate = estimate_evaluation(model, images, n=25, attacks=["pgd20"], eps=0.1, batch_size=10, sanity=False,
                                   timings=(1.0, 3.0))
    assert estimate.parts["clean"] == 3 * 1.0
    assert estimate.parts["pgd20"] == 3 * (22 * 1.0 + 20 * 2.0)  # PGD-20: 21 forwards + the prediction, 20 backwards
    assert estimate.seconds == 3 + 3 * 62
    # AutoAttack attacks only the points correct clean: known, it is charged for batches of those alone, at the
    # cost per pass measured for a batch of that size (here 0.1 s / 0.3 s at 1 point, 1 s / 3 s at 10: a line)
    times = PassTimes(1, 0.1, 0.3, 10, 1.0, 3.0)
    full = estimate_evaluation(model, images, n=25, attacks=["pgd20", "autoattack"], eps=0.1, batch_size=10,
                               sanity=False, timings=times)
    half = estimate_evaluation(model, images, n=25, attacks=["pgd20", "autoattack"], eps=0.1, batch_size=10,
                               sanity=False, timings=times, clean_fraction=0.55)
    assert half.parts["autoattack"] == pytest.approx(full.parts["autoattack"] * 0.55)  # 5.5 points: 0.55 s / 1.65 s
    assert half.parts["pgd20"] == full.parts["pgd20"] == 3 * 62
    few = estimate_evaluation(model, images, n=25, attacks=["autoattack"], eps=0.1, batch_size=10, sanity=False,
                              timings=times, clean_fraction=0.01)
    assert few.parts["autoattack"] == pytest.approx(full.parts["autoattack"] * 0.1)  # never below one point's pass
    timed = estimate_evaluation(model, images, n=25, attacks=["pgd20", "autoattack"], eps=0.1, batch_size=10)
    assert timed.forward_seconds > 0 and timed.gradient_seconds > 0
    assert "autoattack (standard: apgd-ce, apgd-t, fab-t, square)" in timed.text()


def test_autoattack_shows_its_sub_attack_restart_and_points_left_as_it_runs(user_code, capsys):
    model = create_model("mynets:build", 10, 1).eval()
    x = torch.rand(6, 1, 28, 28)
    advlab.evaluate(model, x, model(x).argmax(1).detach(), eps=1e-4, attacks=("autoattack",), sanity=False,
                    autoattack_version="fast", progress=True)
    err = capsys.readouterr().err
    assert "autoattack apgd-ce (1/2) restart 1/1" in err and "autoattack apgd-t (2/2) target" in err
    assert "6/6 points left" in err


def test_advlab_train_says_what_the_final_evaluation_runs_and_how_long_it_takes(user_code):
    from advlab.engine.run import create_run
    from advlab.engine.train import final_evaluation_line

    run = create_run(load_config("pgd-at", ["model.name=mynets:build", "data.train_size=200", "validation.n=40"]),
                     progress=False)
    line = final_evaluation_line(run)
    assert line.startswith("final evaluation: checkpoints best and last on 1000 test points, pgd20, cw20, "
                           "autoattack (standard); each at most about")
    assert "smaller: evaluation.autoattack_version=fast (at most about" in line
