"""Adding a part is a checked path (docs/ADDING.md): every registered part is documented, contract-tested and
checked under torchrun, and a part registered without them is caught by each check."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from advlab.config import PART_KINDS
from advlab.recipes import REGISTRIES, Step, WeightingPart, part_registry
from part_coverage import contract_problems, documentation_problems, torchrun_problems

ALL_PARTS = [(kind, name) for kind in PART_KINDS for name in part_registry(kind).names()]


@pytest.mark.parametrize("kind, name", ALL_PARTS, ids=[f"{k}-{n}" for k, n in ALL_PARTS])
def test_every_registered_part_is_documented_and_checked_under_torchrun(kind, name):
    assert documentation_problems(kind, name) == []
    assert torchrun_problems(kind, name) == []


def test_the_declared_pairs_are_registered_parts_of_other_kinds():
    for kind, name in ALL_PARTS:
        for other, partner in part_registry(kind).get(name).pairs_with.items():
            assert other in PART_KINDS and other != kind, (kind, name, other)
            assert partner in part_registry(other), f"{kind} {name!r} pairs with unregistered {other} {partner!r}"


@dataclass
class _ToyOptions:
    scale: float = 1.0


class _Toy(WeightingPart):
    """A weighting that reads soft loss targets (which the default labels part does not give) and declares no
    pair: registered without a docs row, a methods page, a torchrun check or the pair it needs."""

    Options = _ToyOptions
    needs_soft_targets = True

    def weights(self, step: Step) -> torch.Tensor:
        return torch.ones(len(step.y))


@pytest.fixture
def toy_weighting():
    name = "toy-unchecked"
    REGISTRIES["weighting"].register(name, _Toy)
    _Toy.name = name
    try:
        yield name
    finally:
        del REGISTRIES["weighting"]._items[name]


def test_a_part_registered_without_docs_contract_or_torchrun_check_fails_each_check(toy_weighting, one_thread):
    docs = documentation_problems("weighting", toy_weighting)
    assert any("ARCHITECTURE.md" in p for p in docs) and any("docs/methods" in p for p in docs)
    assert any("TORCHRUN_CHECKS" in p for p in torchrun_problems("weighting", toy_weighting))
    contract = contract_problems("weighting", toy_weighting)
    assert contract and "soft loss targets" in contract[0]  # built with the defaults, which cannot feed it
    _Toy.pairs_with = {"labels": "self-adaptive"}  # declaring its pair makes the contract hold
    try:
        assert contract_problems("weighting", toy_weighting) == []
    finally:
        del _Toy.pairs_with
