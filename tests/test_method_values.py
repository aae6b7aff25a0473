"""Values of the fgsm perturbation and the mart objective against formulas written out here (numpy, by hand),
and batch-norm statistics left untouched by evaluation, AutoAttack and the trainer's validation.

The oracles never call the function under test: FGSM's gradient of a linear model's cross-entropy is
W^T (softmax(Wx + b) - onehot(y)) in closed form; MART is the loss of YisenWang/MART ``mart.py`` spelled out.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import advlab
from advlab.recipes import RecipeEnv, Step, create_recipe, combine, compute_loss

D, C = 6, 3


def _linear() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, C))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(C, D, generator=g, dtype=torch.float64).float())
        model[1].bias.copy_(torch.randn(C, generator=g, dtype=torch.float64).float())
    return model


def _env(eps: float) -> RecipeEnv:
    return RecipeEnv(num_train=8, num_classes=C, epochs=1, eps=eps, norm="linf", device=torch.device("cpu"))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("step_size", [0.05, 0.125, None])  # pixels: inside the ball, clipped to it, default
def test_fgsm_is_one_signed_step_then_projection_and_clamp(step_size):
    eps = 0.1
    model = _linear()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 1, D, generator=g)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.02])  # at and near the box's edges: the clamp matters
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    recipe = create_recipe({"labels": ("hard", {}), "perturbation": ("fgsm", {"step_size": step_size,
                                                                             "random_start": "none"}),
                           "weighting": ("uniform", {}), "objective": ("ce", {})}, _env(eps))
    x_adv = compute_loss(model, x, y, torch.arange(8), 0, recipe).views["adv"].x

    # the oracle: dCE/dx of a linear model, one signed step of step_size pixels (default 1.25 eps, Wong et al.
    # 2020), projection, clamp
    step_size = 1.25 * eps if step_size is None else step_size
    W, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    xs = x.reshape(8, D).double().numpy()
    grad = (_softmax(xs @ W.T + b) - np.eye(C)[y.numpy()]) @ W
    expected = np.clip(xs + step_size * np.sign(grad), xs - eps, xs + eps).clip(0, 1)
    assert np.abs(np.sign(grad)).min() == 1  # no zero gradient coordinate: the sign is defined everywhere
    np.testing.assert_allclose(x_adv.reshape(8, D).double().numpy(), expected, atol=1e-6)
    moved = np.abs(x_adv.reshape(8, D).double().numpy() - xs)
    assert moved.max() == pytest.approx(min(step_size, eps), abs=1e-6)


def mart_loss_reference(logits_clean: np.ndarray, logits_adv: np.ndarray, y: np.ndarray, beta: float) -> float:
    """YisenWang/MART mart.py lines 38-56 (commit 2d83e17), written out: boosted CE on x_adv plus
    beta * KL(p_clean || p_adv) * (1 - p_y(clean))."""
    n = len(y)
    adv_probs = _softmax(logits_adv)
    order = np.argsort(adv_probs, axis=1)[:, -2:]
    new_y = np.where(order[:, -1] == y, order[:, -2], order[:, -1])  # the most likely wrong class
    log_adv = logits_adv - logits_adv.max(1, keepdims=True)
    log_adv = log_adv - np.log(np.exp(log_adv).sum(1, keepdims=True))
    ce = -log_adv[np.arange(n), y].mean()
    nll = -np.log(1.0001 - adv_probs + 1e-12)[np.arange(n), new_y].mean()
    nat_probs = _softmax(logits_clean)
    true_probs = nat_probs[np.arange(n), y]
    kl = (nat_probs * (np.log(nat_probs + 1e-12) - np.log(adv_probs + 1e-12))).sum(1)
    loss_robust = (kl * (1.0000001 - true_probs)).sum() / n
    return float(ce + nll + beta * loss_robust)


def test_mart_objective_matches_the_reference_formula():
    g = torch.Generator().manual_seed(2)
    logits_clean = torch.randn(6, C, generator=g, dtype=torch.float64) * 2
    logits_adv = torch.randn(6, C, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    p_true = torch.softmax(logits_clean, 1)[torch.arange(6), y]
    assert p_true.max() - p_true.min() > 0.3  # the (1 - p_y) factor differs a lot between samples
    beta = 6.0
    recipe = create_recipe({"labels": ("hard", {}), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
                           "objective": ("mart", {"beta": beta})}, _env(0.1))
    step = Step(model=None, x=torch.zeros(6, 1), y=y, index=torch.arange(6), epoch=0,
                outputs={"clean": logits_clean.float(), "adv": logits_adv.float()}, loss_targets={"adv": y})
    terms = recipe.objective.terms(step)
    loss = combine(terms, recipe.objective.coefficients(), {name: None for name in terms})
    expected = mart_loss_reference(logits_clean.numpy(), logits_adv.numpy(), y.numpy(), beta)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------- batch norm
def _bn_model(in_channels: int = 1, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, classes))


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    bn = model[1]
    return {"running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone(),
            "num_batches_tracked": bn.num_batches_tracked.clone()}


def _assert_same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_evaluation_and_autoattack_leave_batch_norm_statistics_untouched(one_thread):
    model = _bn_model()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 12, 12, generator=g)
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # every point classified correctly: each attack works on all of them
    model.train()
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    before = _bn_state(model)
    assert int(before["num_batches_tracked"]) == 1
    result = advlab.evaluate(model, x, y, 0.1, attacks=["pgd20", "autoattack"], autoattack_version="apgd-ce",
                             sanity=True, progress=False, batch_size=6)
    assert result.accuracy("clean") == 1.0 and "apgd-ce" in result.attacks["autoattack"].settings["attacks_run"]
    _assert_same(before, _bn_state(model))
    assert model.training and model[1].training  # the flags are restored too


def test_trainer_validation_leaves_batch_norm_statistics_untouched(fashion_mnist, one_thread):
    from advlab.config import load_config
    from advlab.engine.loop import validate
    from advlab.engine.run import create_run

    config = load_config("pgd-at", ["data.train_size=20", "validation.n=20", "device=cpu", "epochs=1"])
    run = create_run(config, progress=False)
    run.model = _bn_model()
    run.model.train()
    with torch.no_grad():
        run.model(run.data.val_images[:8].float() / 255)
    before = _bn_state(run.model)
    result = validate(run)
    assert 0 <= result["val_robust"] <= result["val_clean"] <= 1
    _assert_same(before, _bn_state(run.model))
    assert run.model.training
