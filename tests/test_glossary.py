"""One word per idea (docs/GLOSSARY.md): config keys, part options, command-line flags, registered names and the
package's code use only the glossary's words for the ideas this release renamed; the new words exist where the
glossary says; the old ones are read only through advlab.config.renamed, with a deprecation line."""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path

import pytest

from advlab.cli import create_parser
from advlab.config import PART_KINDS, TrainConfig
from advlab.recipes import part_registry

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "advlab"

# retired words, as they would appear in a config key or option (dotted), and in a flag
RETIRED_KEYS = {"bn_mode", "data.name", "eval_n"}
RETIRED_FLAGS = {"--bn-mode", "--eval-n"}
RETIRED_VALUES = {"evaluation.classifier": {"softmax"}, "evaluation.attacks": {"pgd-knn"}}
# retired identifiers of the package's code; only advlab/config/renamed.py (which reads them) may name them
RETIRED_CODE = ["bn_mode", "BNMode", "own_model", "attack_steps=", "validate_config", "make_optimizer",
                "make_schedule", "build_recipe", "build_report", "build_parser", "models.create(", "eval_n",
                "\"softmax\"", ".parts()"]
ALLOWED_CODE = {"bn_mode": ["config/renamed.py"], "eval_n": ["config/renamed.py"],
                "\"softmax\"": ["config/renamed.py"], ".parts()": []}


def config_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema, and every option of every registered part under its kind."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.metadata.get('key', f.name)}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]) and f.name not in PART_KINDS:
            keys += config_keys(hints[f.name], f"{key}.")
    for kind in PART_KINDS if cls is TrainConfig else ():
        for name in part_registry(kind).names():
            keys += [f"{kind}.{f.name}" for f in dataclasses.fields(part_registry(kind).get(name).Options)]
    return keys


def command_flags() -> list[str]:
    """Every option string of every ``advlab`` subcommand (old spellings kept for one release excluded)."""
    from advlab.config.renamed import RENAMED_FLAGS

    flags = []
    parser = create_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += [s for a in sub._actions for s in a.option_strings if s not in RENAMED_FLAGS]
    return flags


def test_config_keys_and_part_options_use_only_the_glossarys_words():
    keys = config_keys()
    assert "data.dataset" in keys and "perturbation.model_mode" in keys and "evaluation.classifier" in keys
    for key in keys:
        leaf = key.split(".")[-1]
        assert leaf not in RETIRED_KEYS and key not in RETIRED_KEYS, f"config key {key} uses a retired word"


def test_command_line_flags_use_only_the_glossarys_words():
    flags = command_flags()
    assert "--evaluation-n" in flags and "--dataset" in flags and "--classifier" in flags
    assert not set(flags) & RETIRED_FLAGS, sorted(set(flags) & RETIRED_FLAGS)


def test_registered_names_use_only_the_glossarys_words():
    from advlab.engine.choices import choices

    for key, retired in RETIRED_VALUES.items():
        assert not set(choices(key)) & retired, (key, sorted(set(choices(key)) & retired))
    assert "knn-guide" in choices("evaluation.attacks") and "linear" in choices("evaluation.classifier")
    assert "pgd-knn" in part_registry("perturbation").names()  # the training perturbation keeps its name


@pytest.mark.parametrize("word", RETIRED_CODE)
def test_the_package_code_does_not_use_a_retired_identifier(word):
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel in ALLOWED_CODE.get(word, ["config/renamed.py"]):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if word in line and not (word == ".parts()" and re.search(r"recipe\.parts\(\)", line)):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_glossary_names_every_renamed_word():
    text = (ROOT / "docs" / "GLOSSARY.md").read_text()
    for word in ("model_mode", "steps_taken", "local_model", "data.dataset", "knn-guide", "--evaluation-n",
                 "recipe_spec", "check_config", "create_model", "create_run"):
        assert re.search(rf"[`.]{re.escape(word)}\b", text), word
