"""Typed configs: presets by name, inheritance, overrides, and clear errors for bad keys and values."""
import pytest

from advlab.engine.choices import choices
from advlab.engine.optimizers import OPTIMIZERS
from advlab.engine.schedule import SCHEDULES
from advlab.engine.config_checks import check_config
from advlab.config import PART_KINDS, from_dict, load_config, parse_override, preset_names, read_config, save_config
from advlab.errors import ConfigError


def test_every_preset_loads_and_names_its_parts():
    names = preset_names()
    for required in ("standard", "pgd-at", "trades", "mart", "fast-at", "demo"):
        assert required in names
    for name in names:
        c = load_config(name)
        assert c.preset == name
        assert c.description, f"preset {name} has no description"


def test_inheritance_and_part_switch():
    c = load_config("trades")
    assert c.objective.name == "trades" and c.objective.options == {"beta": 6.0}
    assert c.perturbation.options["loss"] == "kl"
    assert c.epochs == load_config("pgd-at").epochs  # inherited
    # switching a part's name drops the old part's options instead of mixing them
    c = load_config("trades", ["objective.name=ce"])
    assert c.objective.name == "ce" and c.objective.options == {}


def test_overrides_are_typed():
    c = load_config("pgd-at", ["perturbation.steps=3", "optimizer.lr=0.2", "data.train_size=100",
                               "evaluation.attacks=pgd20,cw20"])
    assert c.perturbation.options["steps"] == 3
    assert c.optimizer.lr == 0.2
    assert c.data.train_size == 100
    assert c.evaluation.attacks == ["pgd20", "cw20"]
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize("override, words", [
    ("epoch=3", ["epoch", "epochs"]),
    ("optimizer.momentumm=0.9", ["optimizer.momentumm", "momentum"]),
    ("norm=l3", ["norm", "linf", "l2"]),
    ("epochs=three", ["epochs", "integer"]),
    ("perturbation.name=pgdd", ["perturbation.name", "pgd", "fgsm"]),
    ("perturbation.stepz=3", ["perturbation", "stepz", "steps"]),
    ("perturbation.random_start=gauss", ["random_start", "uniform", "normal"]),
    ("schedule.name=linear", ["schedule.name", "cosine", "piecewise"]),
])
def test_bad_keys_and_values_name_the_key_and_the_allowed(override, words):
    with pytest.raises(ConfigError) as err:
        check_config(load_config("pgd-at", [override]))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("eps=0", "eps: must be > 0, got 0"),
    ("eps=2", "eps: eps is in pixel units in [0, 1] (linf: in (0, 1]), got 2: did you mean 2/255"),
    ("optimizer.lr=-1", "optimizer.lr: must be > 0, got -1"),
    ("data.label_noise.rate=1.5", "data.label_noise.rate: must be in [0, 1], got 1.5"),
    ("data.imbalance.ratio=0.5", "data.imbalance.ratio: must be >= 1, got 0.5"),
    ("labels.name=noilin", None),
    ("perturbation.steps=0", "perturbation.steps: must be >= 1, got 0"),
    ("weighting.name=gair", None),
    ("weighting.lam_pieces=[[0.5, 1]]", "unknown key weighting.lam_pieces"),
    ("data.label_noise.kind=nosuch", "data.label_noise.kind: invalid value 'nosuch'"),
    ("validation.attack=nosuch", "validation.attack: invalid value 'nosuch'"),
])
def test_ranges_and_choices_are_checked_before_a_run(override, message):
    if message is None:
        check_config(load_config("pgd-at", [override]))
        return
    with pytest.raises(ConfigError) as err:
        check_config(load_config("pgd-at", [override]))
    assert message in str(err.value)


@pytest.mark.parametrize("key, registry", [
    ("model.activation", lambda: __import__("advlab.models", fromlist=["x"]).list_activations()),
    ("model.name", lambda: __import__("advlab.models", fromlist=["x"]).list_models()
     + __import__("advlab.models", fromlist=["x"]).source_syntax()),  # registered, then the model sources
    ("data.dataset", lambda: __import__("advlab.data", fromlist=["x"]).DATASETS.names()),
    ("optimizer.name", lambda: OPTIMIZERS.names()),
    ("schedule.name", lambda: SCHEDULES.names()),
    ("evaluation.autoattack_version", lambda: list(__import__("advlab.evaluation", fromlist=["x"]).AA_VERSIONS)),
])
def test_choices_come_from_their_registry_into_config_checks_and_cli_help(key, registry, capsys):
    from advlab.cli import create_parser

    allowed = registry()
    assert choices(key) == allowed
    with pytest.raises(ConfigError) as err:
        check_config(load_config("pgd-at", [f"{key}=nosuch"]))
    if key == "model.name":  # followed by what to do about a model registered in another process
        assert "allowed: " + ", ".join(allowed) + ". A model registered with register_model" in str(err.value)
    else:
        assert str(err.value).endswith("allowed: " + ", ".join(allowed))
    train_help = create_parser()._subparsers._group_actions[0].choices["train"].format_help()
    flat = "".join(train_help.split())  # argparse wraps lines, also at hyphens
    if key in ("model.activation", "model.name", "data.dataset"):
        assert ",".join(allowed) in flat, f"--help of advlab train lacks the {key} choices"


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="pgd-at"):
        load_config("no-such-preset")


def test_round_trip_through_yaml(tmp_path):
    c = load_config("mart", ["seed=3"])
    save_config(c, tmp_path / "config.yaml")
    assert read_config(tmp_path / "config.yaml") == c
    assert from_dict(c.to_dict()) == c


def test_presets_command_lists_every_preset_in_aligned_columns(capsys):
    from advlab.cli import main

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    column = lines[0].index(load_config(lines[0].split()[0]).description)
    for line in lines:  # the description column starts at the same place on every line
        name, parts = line.split()[:2]
        c = load_config(name)
        assert parts == "/".join(getattr(c, k).name for k in PART_KINDS)
        assert line.index(c.description) == column
