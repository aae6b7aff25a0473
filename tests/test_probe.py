"""Linear evaluation (`advlab probe`): SLF and ALF train the head alone on an exactly frozen encoder (weights
and batch-norm statistics), AFF trains it all, every probe starts from the source run's encoder exactly, and
the command answers bad input with one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import advlab
from advlab.cli import create_parser, main
from advlab.config import load_config, preset_dict
from advlab.engine.probe import LINEAR_DEFAULTS, PROBE_MODES, ProbeMode, default_out, probe, probe_config
from advlab.engine.run import create_run
from advlab.errors import AdvlabError, ConfigError
from advlab.models import FREEZE, MODELS, FrozenEncoder, create_model, register_model
from advlab.runs import RunDir, load_checkpoint

pytestmark = pytest.mark.usefixtures("fashion_mnist", "one_thread")

BN_MODEL = "test-probe-bn"
NO_LINEAR_MODEL = "test-probe-no-linear"


def _tiny_bn(num_classes: int = 10, in_channels: int = 1, activation=nn.ReLU) -> nn.Module:
    """conv - batch norm - activation - global pool - linear: an encoder with BN statistics, and a head."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, stride=2), nn.BatchNorm2d(4), activation(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def _no_linear(num_classes: int = 10, in_channels: int = 1, activation=nn.ReLU) -> nn.Module:
    """A classifier without any nn.Linear: its logits are a convolution's channels, pooled."""
    return nn.Sequential(nn.Conv2d(in_channels, num_classes, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.fixture(scope="module", autouse=True)
def _test_models():
    """The two test models, registered for this module only (other modules list the registry's built-ins)."""
    register_model(BN_MODEL, _tiny_bn, overwrite=True)
    register_model(NO_LINEAR_MODEL, _no_linear, overwrite=True)
    yield
    for name in (BN_MODEL, NO_LINEAR_MODEL):
        MODELS._items.pop(name, None)


TINY = ["data.train_size=256", "batch_size=64", "validation.n=64", "evaluation.n=64", "evaluation.attacks=[pgd20]",
        "evaluation.sanity=false", "device=cpu"]
ENCODER = ("0.", "1.")  # the conv and batch-norm layers of BN_MODEL; "5." is its linear head
HEAD = "5."


def tiny(mode: str) -> list[str]:
    """The small-run overrides of a probe by ``mode`` (two PGD steps for the adversarial modes)."""
    return TINY + ([] if mode == "slf" else ["perturbation.steps=2"])


def _write_source(path: Path, config_overrides: list[str], state: dict[str, torch.Tensor] | None = None) -> Path:
    """A finished-looking run at ``path``: config.yaml and a best.pt of the model the config builds, with every
    weight and buffer drawn at random (so nothing equals a fresh initialisation by chance)."""
    config = load_config("standard", TINY + config_overrides)
    spec = config.model_spec(10, 1)
    model = create_model(**spec)
    if state is None:
        g = torch.Generator().manual_seed(7)
        state = {}
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                state[key] = torch.rand(value.shape, generator=g) + 0.5
            else:
                state[key] = value + 7
    model.load_state_dict(state)
    run = RunDir.create(path, overwrite=False)
    run.write_config(config)
    run.save_checkpoint("best", {"model": model.state_dict(), "model_spec": spec, "data": config.data.dataset,
                                 "eps": config.eps, "norm": config.norm, "epoch": 1})
    return run.path


@pytest.fixture(scope="module")
def contrastive_run(tmp_path_factory) -> Path:
    """A self-supervised run's folder: BN_MODEL's encoder under a projection head (written directly; no
    contrastive objective needed)."""
    return _write_source(tmp_path_factory.mktemp("ssl") / "simclr",
                         [f"model.name={BN_MODEL}", "model.head=projection", "model.projection_dim=16"])


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory) -> Path:
    """A supervised classifier trained for one epoch by the standard preset."""
    out = tmp_path_factory.mktemp("sup") / "standard"
    advlab.train("standard", out, overrides=TINY + [f"model.name={BN_MODEL}", "epochs=1"], progress=False,
                 evaluate=False)
    return out


def source_encoder(run: Path) -> dict[str, torch.Tensor]:
    """The encoder's weights and buffers in ``run``'s best.pt, keyed as in BN_MODEL (read from the file, not
    through advlab's encoder functions): a ContrastiveModel's ``encoder.*``, a classifier's without its head."""
    state = load_checkpoint(run / "best.pt")["model"]
    if any(k.startswith("encoder.") for k in state):
        return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if k.startswith(ENCODER)}


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A probe's state dict keyed as BN_MODEL (a FrozenEncoder's keys carry ``model.``)."""
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


def initial_state(out: Path) -> dict[str, torch.Tensor]:
    """The probe model's weights before its first step, rebuilt from the probe's saved config.yaml (the same
    seed gives the same head; the encoder comes from init.from)."""
    model = create_run(RunDir(out).read_config(), progress=False).model
    return backbone_state({k: v.detach().clone() for k, v in model.state_dict().items()})


def assert_encoder_equal(state: dict[str, torch.Tensor], encoder: dict[str, torch.Tensor]) -> None:
    got = {k: v for k, v in state.items() if k.startswith(ENCODER)}
    assert sorted(got) == sorted(encoder)
    for key, value in encoder.items():
        assert torch.equal(got[key], value), f"{key} differs from the source run's encoder"


# --------------------------------------------------------------------------------------------------------------
# the table


def test_the_mode_table_holds_the_three_protocols():
    assert PROBE_MODES.names() == ["aff", "alf", "slf"]
    expected = {"slf": ("standard", "encoder"), "alf": ("pgd-at", "encoder"), "aff": ("trades", "none")}
    for name, (preset, freeze) in expected.items():
        mode = PROBE_MODES.get(name)
        assert (mode.preset, mode.freeze) == (preset, freeze)
        assert mode.freeze in FREEZE and preset_dict(mode.preset)
    assert PROBE_MODES.get("slf").defaults == PROBE_MODES.get("alf").defaults == LINEAR_DEFAULTS
    assert PROBE_MODES.get("aff").defaults == ()


def test_the_probe_help_lists_the_modes_of_the_table_and_every_flag_has_help(capsys):
    extra = ProbeMode("zz-test", "a mode registered by this test", "standard", "encoder", (), "this test")
    PROBE_MODES.register(extra.name, extra)
    try:
        with pytest.raises(SystemExit) as done:
            main(["probe", "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for name in PROBE_MODES.names():
            assert f"{name}: {' '.join(PROBE_MODES.get(name).title.split())}" in text
        assert "{aff,alf,slf,zz-test}" in text  # the --mode choices are the table's names
        sub = next(a for a in create_parser()._actions if a.dest == "command").choices["probe"]
        for action in sub._actions:
            assert action.help, f"{action.option_strings or action.dest} has no help"
    finally:
        del PROBE_MODES._items[extra.name]


# --------------------------------------------------------------------------------------------------------------
# the config of a probe


def test_a_probe_takes_the_runs_data_model_and_threat_model_then_the_users_overrides(tmp_path):
    run = _write_source(tmp_path / "src", [f"model.name={BN_MODEL}", "model.head=projection",
                                           "model.projection_dim=16", "model.activation=silu", "eps=0.2", "seed=3",
                                           "data.train_size=300", "data.meta_size=20",
                                           "data.label_noise.rate=0.1", "data.imbalance.ratio=2"])
    for name in PROBE_MODES.names():
        c = probe_config(run, name)
        mode = PROBE_MODES.get(name)
        assert (c.data.dataset, c.data.train_size, c.data.meta_size) == ("fashion-mnist", 300, 20)
        assert (c.data.label_noise.rate, c.data.imbalance.ratio) == (0.1, 2.0)
        assert (c.model.name, c.model.activation, c.model.head, c.model.freeze) == (BN_MODEL, "silu", "linear",
                                                                                     mode.freeze)
        assert (c.eps, c.norm, c.seed) == (0.2, "linf", 3)
        assert c.init.from_ == str(run.resolve()) and c.init.part == "encoder"
        assert c.evaluation.classifier == "linear"
        preset = load_config(mode.preset)
        assert c.recipe_spec() == preset.recipe_spec()
        if name == "aff":  # trades' own optimiser and epochs
            assert (c.epochs, c.optimizer, c.schedule) == (preset.epochs, preset.optimizer, preset.schedule)
        else:  # RobustSSL_Benchmark's finetuning_eval.py
            assert (c.epochs, c.batch_size, c.optimizer.lr, c.optimizer.weight_decay) == (25, 512, 0.01, 2e-4)
            assert c.schedule.milestones == [0.4, 0.8]
    c = probe_config(run, "alf", ["optimizer.lr=0.1", "model.freeze=none", "eps=0.05"], epochs=3)
    assert (c.optimizer.lr, c.model.freeze, c.eps, c.epochs) == (0.1, "none", 0.05, 3)
    assert default_out(run, "alf") == run.parent / "src-probe-alf"
    assert default_out(str(run) + "/", "slf") == run.parent / "src-probe-slf"


# --------------------------------------------------------------------------------------------------------------
# what trains


def test_frozen_encoder_trains_only_the_head_and_keeps_batch_norm_in_eval_mode():
    model = FrozenEncoder(create_model(BN_MODEL, num_classes=10, in_channels=1))
    model.train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["model.5.weight", "model.5.bias"]
    assert not model.model[1].training and model.model[5].training
    before = model.model[1].running_mean.clone()
    model(torch.rand(8, 1, 28, 28)).sum().backward()
    assert torch.equal(model.model[1].running_mean, before)
    assert model.model[0].weight.grad is None and model.model[5].weight.grad is not None


@pytest.mark.parametrize("mode", ["slf", "alf"])
def test_linear_modes_leave_the_encoder_exactly_as_the_source_and_train_the_head(mode, contrastive_run, tmp_path):
    out = tmp_path / mode
    summary = probe(contrastive_run, mode, out, tiny(mode) + ["epochs=2"], progress=False)
    encoder = source_encoder(contrastive_run)
    start = initial_state(out)
    assert_encoder_equal(start, encoder)
    for which in ("best", "last"):
        assert_encoder_equal(backbone_state(load_checkpoint(out / f"{which}.pt")["model"]), encoder)
    last = backbone_state(load_checkpoint(out / "last.pt")["model"])
    for key in (HEAD + "weight", HEAD + "bias"):
        assert not torch.equal(last[key], start[key]), f"the head's {key} did not train"
    assert summary["best"]["classifier"] == {"kind": "linear"} and (out / "summary.json").is_file()
    assert RunDir(out).read_config().init.from_ == str(contrastive_run.resolve())


@pytest.mark.parametrize("mode", ["slf", "alf", "aff"])
def test_every_mode_starts_from_the_source_runs_encoder_exactly(mode, contrastive_run, supervised_run, tmp_path):
    for run in (contrastive_run, supervised_run):
        config = probe_config(run, mode, tiny(mode))
        model = create_run(config, progress=False).model
        assert_encoder_equal(backbone_state(model.state_dict()), source_encoder(run))
        assert isinstance(model, FrozenEncoder) == (mode != "aff")


def test_aff_trains_the_encoder_and_its_batch_norm_statistics(contrastive_run, tmp_path):
    out = tmp_path / "aff"
    probe(contrastive_run, "aff", out, tiny("aff") + ["epochs=1"], progress=False, evaluate=False)
    last = backbone_state(load_checkpoint(out / "last.pt")["model"])
    encoder = source_encoder(contrastive_run)
    for key in ("0.weight", "1.weight", "1.running_mean", "1.running_var"):
        assert not torch.equal(last[key], encoder[key]), f"AFF left {key} as it was"


def test_a_supervised_run_is_probed_by_the_command_with_a_fresh_head(supervised_run, capsys):
    code = main(["probe", str(supervised_run), "--mode", "slf", "--epochs", "1", "--quiet", *TINY])
    assert code == 0, capsys.readouterr().err
    out = supervised_run.parent / "standard-probe-slf"
    assert f"run written to {out}" in capsys.readouterr().out
    last = backbone_state(load_checkpoint(out / "last.pt")["model"])
    assert_encoder_equal(last, source_encoder(supervised_run))
    source = load_checkpoint(supervised_run / "best.pt")["model"]
    assert not torch.equal(initial_state(out)[HEAD + "weight"], source[HEAD + "weight"])  # not the source's head
    summary = RunDir(out).read_json("summary.json")
    assert summary["best"]["classifier"] == {"kind": "linear"} and summary["preset"] == "probe-slf"


def test_a_probe_resumes_to_the_same_run_even_when_its_source_has_moved(contrastive_run, tmp_path,
                                                                       whole_and_resumed):
    import shutil
    source = tmp_path / "source"
    shutil.copytree(contrastive_run, source)
    config = probe_config(source, "alf", tiny("alf") + ["epochs=2"])
    # the resume reads last.pt, not init.from: the source may be gone by then
    whole, part = whole_and_resumed(config, tmp_path, 1, on_stop=lambda _: shutil.rmtree(source))
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


# --------------------------------------------------------------------------------------------------------------
# bad input: one line, nothing written


@pytest.fixture
def bad_runs(tmp_path, contrastive_run) -> dict[str, Path]:
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    unfinished = RunDir.create(tmp_path / "unfinished", overwrite=False)
    unfinished.write_config(load_config("standard", TINY))
    no_linear = _write_source(tmp_path / "no-linear", [f"model.name={NO_LINEAR_MODEL}"])
    return {"missing": tmp_path / "nowhere", "folder": folder, "unfinished": unfinished.path,
            "no_linear": no_linear, "good": contrastive_run}


CLI_CASES = {
    "missing run": ("missing", ["--mode", "slf"], "no such run directory"),
    "not a run": ("folder", ["--mode", "slf"], "is not an advlab run directory (no config.yaml)"),
    "no best checkpoint": ("unfinished", ["--mode", "slf"], "has no best checkpoint (best.pt)"),
    "unknown mode": ("good", ["--mode", "lin"], "argument --mode: invalid choice: 'lin'"),
    "no mode": ("good", [], "the following arguments are required: --mode"),
    "model without a linear layer": ("no_linear", ["--mode", "aff"], "cannot take a linear head"),
    "unknown key": ("good", ["--mode", "slf", "optimiser.lr=0.1"], "unknown key optimiser"),
    "bad value": ("good", ["--mode", "alf", "epochs=0"], "epochs:"),
    "bad option of the mode's part": ("good", ["--mode", "slf", "perturbation.steps=2"], "perturbation takes no keys"),
    "not key=value": ("good", ["--mode", "slf", "epochs"], "unrecognized arguments: epochs"),
    "bad epochs flag": ("good", ["--mode", "slf", "--epochs", "two"], "argument --epochs: invalid int value"),
}


def run_cli(argv: list[str]) -> int:
    """``advlab`` in this process (so the models registered here exist): its exit code, argparse's included."""
    try:
        return main(argv)
    except SystemExit as done:
        return int(done.code)


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_command_answers_bad_input_with_one_line_and_writes_nothing(case, bad_runs, tmp_path, capsys):
    which, args, message = CLI_CASES[case]
    out = tmp_path / "probe-out"
    beside = bad_runs[which].parent
    before = sorted(p.name for p in beside.iterdir())
    code = run_cli(["probe", str(bad_runs[which]), "--out", str(out), *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("advlab probe: error: "), err
    assert message in lines[0], lines[0]
    assert not out.exists()
    assert sorted(p.name for p in beside.iterdir()) == before


def test_the_api_refuses_bad_arguments_with_one_line(contrastive_run, tmp_path):
    cases = [
        (dict(mode="lin"), AdvlabError, "unknown probe mode 'lin'; allowed: aff, alf, slf"),
        (dict(mode=3), ConfigError, "mode must be one of aff, alf, slf"),
        (dict(mode="slf", overrides="epochs=1"), ConfigError, "overrides must be a list of 'key=value' strings"),
        (dict(mode="slf", overrides=["epochs"]), ConfigError, "override 'epochs' is not of the form key=value"),
        (dict(mode="slf", epochs="3"), ConfigError, "epochs must be a positive integer"),
        (dict(mode="slf", epochs=0), ConfigError, "epochs:"),
        (dict(mode="slf", out=3), ConfigError, "out must be a folder path"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error) as caught:
            advlab.probe(contrastive_run, **kwargs)
        assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="run must be a run directory path"):
        advlab.probe(None, "slf")
    assert sorted(p.name for p in contrastive_run.parent.iterdir()) == ["simclr"]
