"""``advlab eval --classifier knn``: supervised runs evaluated by k nearest neighbours on their penultimate
features, the bank being the run's training split rebuilt exactly as the trainer built it; projection-head
checkpoints; the flags' errors. On tiny Fashion-MNIST runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab import data
from advlab.config import TrainConfig, load_config

pytestmark = pytest.mark.usefixtures("fashion_mnist", "one_thread")

TINY = ["data.train_size=100", "batch_size=50", "epochs=1", "validation.n=20", "device=cpu"]
STEPS = {"standard": [], "pgd-at": ["perturbation.steps=2"]}


def run_cli(args, capsys):
    from advlab.cli import main

    code = main(["eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs of the supervised presets standard and pgd-at (1 epoch on 100 images)."""
    from advlab.engine.train import train

    base = tmp_path_factory.mktemp("knn-eval")
    for preset in ("standard", "pgd-at"):
        train(preset, base / preset, overrides=TINY + STEPS[preset], progress=False, evaluate=False)
    return base


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer (its penultimate features), read by a hook."""
    seen = {}
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    hook = last.register_forward_hook(lambda m, inputs, out: seen.update(f=inputs[0].detach()))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    return seen["f"]


@pytest.mark.parametrize("preset", ["standard", "pgd-at"])
def test_a_supervised_run_is_evaluated_by_knn_on_its_penultimate_features(preset, runs, capsys, tmp_path):
    from advlab.runs import load_model

    run = runs / preset
    out = tmp_path / "knn.json"
    code, table, err = run_cli([run, "--classifier", "knn", "--knn-k", 5, "--n", 24, "--attacks", "pgd20,knn-guide",
                                "--no-sanity", "--quiet", "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    classifier = report["meta"]["classifier"]
    assert classifier["kind"] == "knn" and classifier["bank"] == 100
    assert (classifier["k"], classifier["metric"], classifier["vote"], classifier["temperature"]) == \
        (5, "cosine", "majority", 0.1)  # --knn-k, the rest from the run's config (KNNConfig's defaults)
    assert list(report["attacks"]) == ["pgd20", "knn-guide"] and report["attacks"]["knn-guide"]["guides"] == 5

    # the clean flags are those of a kNN built here: penultimate features of the checkpoint's model, bank the
    # training split as data.training_split builds it from the run's settings, cosine, top 5, majority
    model, _ = load_model(run, "best")
    split = data.training_split("fashion-mnist", train_size=100, seed=0)
    test_x, test_y = data.load("fashion-mnist", "test")
    bank = nn.functional.normalize(penultimate(model, split.images.float() / 255), dim=1)
    feats = nn.functional.normalize(penultimate(model, test_x[:24].float() / 255), dim=1)
    sims = feats @ bank.T
    top = sims.topk(5, dim=1)
    expected = []
    for values, index in zip(top.values, top.indices):
        counts = torch.bincount(split.labels[index], minlength=10).tolist()
        weight = torch.zeros(10).index_add_(0, split.labels[index], torch.exp(values / 0.1)).tolist()
        expected.append(max(range(10), key=lambda c: (counts[c], weight[c], -c)))
    assert report["per_sample"]["clean"] == [int(p == t) for p, t in zip(expected, test_y[:24].tolist())]

    dsr = report["defence_success_rate"]
    clean = report["per_sample"]["clean"]
    for name in ("pgd20", "knn-guide", "robust"):
        flags = report["per_sample"][name]
        assert dsr[name] == sum(c and f for c, f in zip(clean, flags)) / sum(clean)
    assert "defence success rate" in table

    code, _, err = run_cli([run, "--n", 8, "--attacks", "pgd20", "--no-sanity", "--quiet", "--device", "cpu",
                            "--out", tmp_path / "linear.json"], capsys)
    assert code == 0, err  # auto: the linear head of a supervised run
    assert json.loads((tmp_path / "linear.json").read_text())["meta"]["classifier"] == {"kind": "linear"}


def test_the_bank_is_the_training_split_the_trainer_trains_on():
    """With a meta split, train_size, imbalance and label noise: the bank the eval CLI rebuilds from a stored
    config (a plain mapping) is the trainer's training split, images and (noisy) labels."""
    from advlab.engine.run import create_run
    from advlab.evaluation.cli import _knn_bank

    config = load_config("standard", TINY + ["data.meta_size=20", "data.label_noise.rate=0.3",
                                             "data.imbalance.ratio=2", "seed=3"])
    split = create_run(config, progress=False).data.split
    args = argparse.Namespace(data_root=None, knn_k=None)
    images, labels, classes = _knn_bank(args, {"config": json.loads(json.dumps(config.to_dict()))}, Path("run.pt"))
    assert classes == 10 and torch.equal(images, split.images) and torch.equal(labels, split.labels)
    assert len(labels) < 100 and not torch.equal(labels, data.run_training_split(config.data, 3).clean_labels)


def test_a_config_that_attacks_a_knn_it_does_not_evaluate_is_refused_before_the_run():
    from advlab.engine.config_checks import check_config
    from advlab.errors import ConfigError

    for override, key in (("validation.attack=knn-guide", "validation.attack"),
                          ("evaluation.attacks=[pgd20,knn-guide]", "evaluation.attacks")):
        with pytest.raises(ConfigError, match=f"{key}: knn-guide attacks a kNN classifier.*evaluation.classifier: knn"):
            check_config(load_config("standard", TINY + [override]))
        check_config(load_config("standard", TINY + [override, "evaluation.classifier=knn"]))


def write_checkpoint(path, spec, config=None):
    from advlab.models import create_model
    from advlab.runs import save_checkpoint

    torch.manual_seed(0)
    model = create_model(**spec)
    payload = {"model": model.state_dict(), "model_spec": spec, "data": "fashion-mnist", "eps": 0.1,
               "norm": "linf", "epoch": 1}
    if config is not None:
        payload["config"] = config
    save_checkpoint(path, payload)
    return path


def test_projection_head_checkpoints_and_the_flags_errors(tmp_path, capsys):
    config = TrainConfig()
    config.data.train_size, config.knn.k, config.knn.metric = 50, 3, "l2"
    stored = json.loads(json.dumps(config.to_dict()))
    projection = write_checkpoint(tmp_path / "ssl.pt", {"name": "small-cnn", "num_classes": 10, "in_channels": 1,
                                                        "head": "projection", "projection_dim": 16}, stored)
    linear_spec = {"name": "small-cnn", "num_classes": 10, "in_channels": 1}
    linear = write_checkpoint(tmp_path / "sup.pt", linear_spec, stored)
    bare = write_checkpoint(tmp_path / "bare.pt", linear_spec)
    common = ["--n", 8, "--no-sanity", "--quiet", "--device", "cpu"]

    # auto: a projection head is evaluated by kNN, with the run's knn section
    code, _, err = run_cli([projection, "--attacks", "knn-guide", "--out", tmp_path / "ssl.json", *common], capsys)
    assert code == 0, err
    described = json.loads((tmp_path / "ssl.json").read_text())["meta"]["classifier"]
    assert (described["kind"], described["k"], described["metric"], described["bank"]) == ("knn", 3, "l2", 50)

    # a run whose config chose kNN evaluation is evaluated by kNN unless --classifier says otherwise
    config.evaluation.classifier = "knn"
    chosen = write_checkpoint(tmp_path / "chosen.pt", linear_spec, json.loads(json.dumps(config.to_dict())))
    code, _, err = run_cli([chosen, "--attacks", "pgd20", "--out", tmp_path / "chosen.json", *common], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "chosen.json").read_text())["meta"]["classifier"]["kind"] == "knn"

    bad = [
        ([projection, "--classifier", "linear"], "--classifier: classifier linear: this model has a projection head"),
        ([linear, "--knn-k", 5], "--knn-k: options of the kNN classifier, but this evaluation uses the model's "
                                 "linear head (classifier auto); pass --classifier knn"),
        ([linear, "--classifier", "linear", "--knn-metric", "l2", "--knn-vote", "weighted"],
         "--knn-metric, --knn-vote: options of the kNN classifier"),
        ([bare, "--classifier", "knn"], "stores no training config, so the kNN's bank"),
        ([linear, "--attacks", "knn-guide"], "--attacks knn-guide attacks a kNN classifier: evaluate with --classifier knn"),
        ([linear, "--classifier", "knn", "--knn-k", 0], "--knn-k must be >= 1, got 0"),
        ([linear, "--classifier", "knn", "--knn-temperature", 0], "--knn-temperature must be a finite number > 0"),
        ([linear, "--classifier", "knn", "--knn-k", 51], "--knn-k 51 is above the size of the kNN's bank, the run's "
                                                          "50 training images"),
        ([linear, "--classifier", "nearest"], "argument --classifier: invalid choice: 'nearest'"),
        ([linear, "--classifier", "knn", "--knn-metric", "manhattan"], "argument --knn-metric: invalid choice"),
    ]
    for args, message in bad:
        code, err = exit_code_and_error([*args, "--out", tmp_path / "x.json", *common], capsys)
        assert code == 2 and message in err, (args, err)
        assert not (tmp_path / "x.json").exists()


def exit_code_and_error(args, capsys) -> tuple[int, str]:
    """The exit code and stderr of ``advlab eval ARGS`` (argparse's errors exit by SystemExit)."""
    try:
        code, _, err = run_cli(args, capsys)
    except SystemExit as exc:
        code, err = exc.code, capsys.readouterr().err
    return code, err
