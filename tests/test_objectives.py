"""Objectives and the PGD/FAT perturbations against independent oracles: each paper's formula written out here
in plain Python (math, no torch softmax) on a tiny hand-made batch, never the function under test."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.recipes import RecipeEnv, create_recipe
from advlab.recipes.base import Step, combine
from advlab.recipes.objectives.trades import kl_per_sample

LOGITS_CLEAN = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]]
LOGITS_ADV = [[0.5, 1.0, -0.5], [1.0, -1.0, 0.2], [0.3, 0.2, 0.4]]
LABELS = [0, 2, 1]


def softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def env(num_classes: int = 3, eps: float = 0.1) -> RecipeEnv:
    return RecipeEnv(num_train=8, num_classes=num_classes, epochs=4, eps=eps, norm="linf",
                     device=torch.device("cpu"), seed=0)


def recipe(objective=("ce", {}), perturbation=("pgd", {}), weighting=("uniform", {}), labels=("hard", {}),
           **env_kw):
    return create_recipe({"labels": labels, "perturbation": perturbation, "weighting": weighting,
                         "objective": objective}, env(**env_kw))


def hand_step() -> Step:
    y = torch.tensor(LABELS)
    step = Step(model=None, x=torch.zeros(3, 1, 2, 2), y=y, index=torch.arange(3), epoch=0)
    step.outputs = {"clean": torch.tensor(LOGITS_CLEAN), "adv": torch.tensor(LOGITS_ADV)}
    step.loss_targets = {"clean": y, "adv": y}
    return step


def test_mart_terms_are_the_papers_formula():
    # Wang et al. 2020, eq. (8): BCE(p(x'), y) + beta KL(p(x) || p(x')) (1 - p_y(x)),
    # BCE = -log p_y(x') - log(1 - max_{k != y} p_k(x'))
    part = recipe(objective=("mart", {"beta": 6.0})).objective
    step = hand_step()
    terms = part.terms(step)
    for i, y in enumerate(LABELS):
        pc, pa = softmax(LOGITS_CLEAN[i]), softmax(LOGITS_ADV[i])
        top_wrong = max(p for k, p in enumerate(pa) if k != y)
        bce = -math.log(pa[y]) - math.log(1 - top_wrong)
        assert terms["adversarial"][i].item() == pytest.approx(bce, rel=1e-3)
        assert terms["boundary"][i].item() == pytest.approx(kl(pc, pa) * (1 - pc[y]), rel=1e-4)
    assert part.coefficients() == {"adversarial": 1.0, "boundary": 6.0}


def test_trades_terms_are_ce_plus_beta_kl_clean_to_adv():
    # Zhang et al. 2019: CE(f(x), y) + beta KL(p(x) || p(x')), KL from the clean to the adversarial distribution
    part = recipe(objective=("trades", {"beta": 3.0}), perturbation=("pgd", {"loss": "kl"})).objective
    step = hand_step()
    terms = part.terms(step)
    for i, y in enumerate(LABELS):
        pc, pa = softmax(LOGITS_CLEAN[i]), softmax(LOGITS_ADV[i])
        assert terms["natural"][i].item() == pytest.approx(-math.log(pc[y]), rel=1e-5)
        assert terms["boundary"][i].item() == pytest.approx(kl(pc, pa), rel=1e-4)
        assert abs(kl(pc, pa) - kl(pa, pc)) > 1e-3  # the batch tells the two directions apart
    assert part.coefficients() == {"natural": 1.0, "boundary": 3.0}
    loss = combine(terms, part.coefficients(), {"natural": None, "boundary": None})
    expected = sum(-math.log(softmax(LOGITS_CLEAN[i])[y]) + 3.0 * kl(softmax(LOGITS_CLEAN[i]), softmax(LOGITS_ADV[i]))
                   for i, y in enumerate(LABELS)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_kl_per_sample_is_kl_of_clean_to_adv():
    out = kl_per_sample(torch.tensor(LOGITS_CLEAN), torch.tensor(LOGITS_ADV))
    for i in range(3):
        assert out[i].item() == pytest.approx(kl(softmax(LOGITS_CLEAN[i]), softmax(LOGITS_ADV[i])), rel=1e-4)


class TwoClassLinear(nn.Module):
    """logits = (w0 . x + b0, w1 . x + b1): the CE gradient's sign in x is sign(w1 - w0) for label 0."""

    def __init__(self, bias: tuple[float, float] = (0.0, 0.0)) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.5]]))
            self.fc.bias.copy_(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _perturb(part, model, y: list[int]) -> torch.Tensor:
    x = torch.full((len(y), 1, 2, 2), 0.5)
    step = Step(model=model, x=x, y=torch.tensor(y), index=torch.arange(len(y)), epoch=0)
    step.attack_target = step.y
    part.on_epoch_start(0)
    return part.perturb(step)["adv"], x


@pytest.mark.parametrize("steps", [1, 4])
def test_pgd_default_step_is_madrys_2_5_eps_over_steps(steps):
    eps = 0.1
    part = recipe(perturbation=("pgd", {"steps": steps, "random_start": "none"}), num_classes=2, eps=eps).perturbation
    assert part.step_size() == pytest.approx(2.5 * eps / steps)
    view, x = _perturb(part, TwoClassLinear(), [0, 0])
    delta = view.x - x
    # each step moves every pixel by the step along sign(w1 - w0); K steps of 2.5 eps / K reach the bound
    expected = torch.tensor([-1.0, 1.0, -1.0, 1.0]) * min(steps * 2.5 * eps / steps, eps)
    assert torch.allclose(delta.flatten(1), expected.expand(2, 4), atol=1e-6)


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_fat_stops_tau_steps_after_the_first_miss(tau):
    # a model that misclassifies every point from the start: FAT (Zhang et al. 2020) takes exactly tau steps
    part = recipe(perturbation=("fat", {"steps": 5, "tau": tau, "random_start": "none"}), num_classes=2).perturbation
    assert part.early_stop() == tau
    view, _ = _perturb(part, TwoClassLinear(bias=(0.0, 50.0)), [0, 0, 0])
    assert view.steps_taken.tolist() == [tau] * 3


@pytest.mark.parametrize("objective, supervised", [("ce", ["adversarial"]), ("trades", ["natural"]),
                                                   ("mart", ["adversarial"])])
def test_self_adaptive_weights_multiply_the_supervised_terms(objective, supervised):
    # Huang et al. 2020 weight the cross-entropy against the soft labels, never the consistency (KL) term
    r = recipe(objective=(objective, {}), labels=("self-adaptive", {}), weighting=("self-adaptive", {}))
    assert r.weighting.default_terms(r.objective.term_specs) == supervised
