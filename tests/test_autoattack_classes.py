"""advlab's rule on AutoAttack's class count is exactly pyautoattack's: for every version of ``AA_VERSIONS`` and
every single sub-attack, on models of 2, 3, 4 and 10 classes, advlab refuses the setting exactly when
pyautoattack itself, run directly, fails (issue 25). pyautoattack only warns about class counts
(``checks.check_n_classes``); what it cannot do shows as an IndexError in its DLR losses."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.evaluation import evaluate
from advlab.evaluation.suite import AA_MIN_CLASSES, AA_REDUCED_VERSIONS, AA_VERSIONS, AttackSetup, AutoAttackEval

pyautoattack = pytest.importorskip("pyautoattack")

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = [2, 3, 4, 10]
SUB_ATTACKS = ["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]  # pyautoattack 0.2.0's AttackName
EPS = 1e-4  # no point is broken, so every target class and restart is tried (the failing index is reached)


def linear(classes: int) -> nn.Module:
    torch.manual_seed(classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).eval()


def data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, model(x).argmax(1)


def shrink(aa) -> None:
    """A pyautoattack.AutoAttack made cheap: 2 iterations, one restart, 8 queries (the class count rules do not
    depend on them)."""
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = 2
    aa.apgd.n_restarts = aa.apgd_targeted.n_restarts = aa.fab.n_restarts = 1
    aa.apgd.eot_iter = min(aa.apgd.eot_iter, 2)
    aa.square.n_queries = 8


def pyautoattack_runs(classes: int, version: str | None, attacks: list[str] | None) -> bool:
    """Whether pyautoattack 0.2.0, called directly (not through advlab), runs the version (its own, or the
    sub-attacks advlab's reduced versions name) on a model of ``classes`` logits, with the numbers of target
    classes advlab sets (9, at most classes - 1)."""
    from pyautoattack import AutoAttack

    model = linear(classes)
    if version in AA_REDUCED_VERSIONS:
        attacks, version = list(AA_REDUCED_VERSIONS[version]), None
    if version is None:
        aa = AutoAttack(model, eps=EPS, norm="Linf", version="custom", attacks=attacks, seed=0)
    else:
        aa = AutoAttack(model, eps=EPS, norm="Linf", version=version, seed=0)
    shrink(aa)
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = min(9, classes - 1)
    x, y = data(model)
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aa.run_standard_evaluation(x, y, batch_size=len(x))
        return True
    except (IndexError, RuntimeError):
        return False
    finally:
        logger.setLevel(level)


def advlab_allows(classes: int, version: str, attacks: list[str] | None) -> bool:
    """Whether advlab's adapter accepts the setting (and then runs it: it must not fail after accepting)."""
    model = linear(classes)
    setup = AttackSetup(model, EPS, "linf", torch.device("cpu"), 0, classes, autoattack_version=version)
    try:
        attack = AutoAttackEval(setup, attacks=attacks)
    except AdvlabError as err:
        assert "classes" in str(err) and f"has {classes}" in str(err)
        return False
    shrink(attack.aa)
    x, y = data(model)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape
    return True


CASES = ([(v, None) for v in AA_VERSIONS] + [("custom", [a]) for a in SUB_ATTACKS])


@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("version,attacks", CASES, ids=[v if a is None else a[0] for v, a in CASES])
def test_advlab_refuses_a_class_count_exactly_when_pyautoattack_fails(version, attacks, classes):
    truth = pyautoattack_runs(classes, None if attacks else version, attacks)
    assert advlab_allows(classes, version, attacks) == truth, (
        f"{version} {attacks or ''} with {classes} classes: pyautoattack {'runs' if truth else 'fails'}")


def test_the_rule_is_per_sub_attack_and_covers_every_one():
    assert set(AA_MIN_CLASSES) == set(SUB_ATTACKS)
    # the versions advlab had refused with 3 classes although pyautoattack runs them
    for version in ("apgd", "rand"):
        assert advlab_allows(3, version, None)


def test_the_class_count_is_the_models_logits_as_pyautoattack_counts_it():
    model = linear(3)  # 3 logits, but told 4 classes: pyautoattack sees 3 and APGD-T cannot run
    x, y = data(model)
    setup = AttackSetup(model, EPS, "linf", torch.device("cpu"), 0, 4, autoattack_version="fast")
    attack = AutoAttackEval(setup)
    with pytest.raises(AdvlabError, match="apgd-t needs at least 4 classes, the model has 3"):
        attack(x, y)
    with pytest.raises(AdvlabError, match="apgd-t needs at least 4"):  # evaluate knows the width before it runs
        evaluate(model, x, y, eps=0.1, attacks=["autoattack"], num_classes=4, autoattack_version="fast",
                 progress=False, sanity=False)


@pytest.mark.parametrize("classes,fits", [(2, "apgd-ce"), (3, "apgd or apgd-ce or rand")])
def test_the_refusal_names_the_versions_that_fit(classes, fits):
    setup = AttackSetup(linear(classes), EPS, "linf", torch.device("cpu"), 0, classes)
    with pytest.raises(AdvlabError, match=f"use --autoattack-version {fits},"):
        AutoAttackEval(setup)

