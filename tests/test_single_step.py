"""Single-step methods that avoid catastrophic overfitting, against formulas written out here (numpy, by hand):
N-FGSM's perturbation (de Jorge et al. 2022; github.com/pdejorge/N-FGSM train.py lines 216-235) and GradAlign's
regulariser (Andriushchenko and Flammarion 2020; github.com/tml-epfl/understanding-fast-adv-training train.py
lines 152-162 and 191-202, utils.py lines 70-91).

The oracles never call the code under test: the input gradient of a linear model's cross-entropy is
W^T (softmax(Wx + b) - onehot(y)) in closed form. Where the oracle needs the method's random draw (N-FGSM's
noise, GradAlign's eta), it draws it again from the same seed as ``torch.rand(x.shape)`` mapped to
[-r, r] (uniform in the L-inf ball); a separate test checks the draw's range without replaying it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlab.recipes import RecipeEnv, create_recipe, compute_loss
from advlab.recipes.objectives.grad_align import per_sample_cosine

pytestmark = pytest.mark.usefixtures("one_thread")

D, C = 6, 3


def _linear(dtype=torch.float32) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, C)).to(dtype)
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(C, D, generator=g, dtype=torch.float64))
        model[1].bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    return model


def _env(eps: float) -> RecipeEnv:
    return RecipeEnv(num_train=8, num_classes=C, epochs=1, eps=eps, norm="linf", device=torch.device("cpu"))


def _recipe(perturbation, objective, eps):
    return create_recipe({"labels": ("hard", {}), "perturbation": perturbation, "weighting": ("uniform", {}),
                         "objective": objective}, _env(eps))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _input_grad(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d CE(Wx + b, y) / dx per sample, (N, D): W^T (softmax(Wx + b) - onehot(y))."""
    return (_softmax(x @ W.T + b) - np.eye(W.shape[0])[y]) @ W


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 1, D, generator=g)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.02])  # at and near the box's edges: the clamps matter
    return x, torch.arange(n) % C


# ----------------------------------------------------------------------------------------------- N-FGSM
def test_n_fgsm_is_noise_of_2_eps_then_a_signed_step_of_eps_clamped_and_never_projected():
    eps = 0.1
    model = _linear()
    x, y = _batch()
    recipe = _recipe(("n-fgsm", {}), ("ce", {}), eps)
    torch.manual_seed(5)
    x_adv = compute_loss(model, x, y, torch.arange(8), 0, recipe).views["adv"].x

    # the oracle (train.py 217-233): eta ~ U[-2 eps, 2 eps], x + eta clamped to the image box, one step of
    # alpha = eps along sign(grad CE) at x + eta, clamped to the box again, no clip to the eps ball (--clip -1)
    torch.manual_seed(5)
    u = torch.rand(x.shape).reshape(8, D).double().numpy()
    xs = x.reshape(8, D).double().numpy()
    x0 = np.clip(xs + (2 * u - 1) * 2 * eps, 0, 1)
    W, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    grad = _input_grad(W, b, x0, y.numpy())
    assert np.abs(np.sign(grad)).min() == 1  # the sign is defined everywhere
    expected = np.clip(x0 + eps * np.sign(grad), 0, 1)
    got = x_adv.reshape(8, D).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    moved = np.abs(got - xs)
    assert moved.max() > 1.5 * eps and moved.max() <= 3 * eps + 1e-6  # beyond the eps ball, within 3 eps
    assert got.min() >= 0 and got.max() <= 1
    # both clamps bind somewhere in this batch, so the oracle checks them
    assert (x0 != xs + (2 * u - 1) * 2 * eps).any() and (expected != x0 + eps * np.sign(grad)).any()


def test_n_fgsm_noise_fills_2_eps_and_the_perturbation_reaches_3_eps():
    """Without replaying the draw: a model whose gradient sign is known everywhere (logits (w.x, 0), label 1:
    grad_x CE = p_0 w), so x_adv - x - eps sign(w) is the noise itself."""
    eps, n = 0.05, 4000
    lin = nn.Linear(D, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.full((n, 1, 1, D), 0.5)  # 0.5 +- 3 eps never meets the box
    y = torch.ones(n, dtype=torch.long)
    recipe = _recipe(("n-fgsm", {}), ("ce", {}), eps)
    torch.manual_seed(0)
    x_adv = compute_loss(model, x, y, torch.arange(n), 0, recipe).views["adv"].x.reshape(n, D)
    noise = x_adv - 0.5 - eps * lin.weight[0].detach().sign()
    assert noise.abs().max() <= 2 * eps + 1e-6 and noise.max() > 1.99 * eps and noise.min() < -1.99 * eps
    assert abs(float((noise.abs() > eps).float().mean()) - 0.5) < 0.02  # uniform on [-2 eps, 2 eps]
    moved = (x_adv - 0.5).abs()
    assert moved.max() > 2.99 * eps  # noise and step add up: no projection to the eps ball
    # the `projection` option (official --clip) brings back the projection: FGSM-RS with N-FGSM's noise
    clipped = _recipe(("n-fgsm", {"projection": eps}), ("ce", {}), eps)
    x_clip = compute_loss(model, x[:200], y[:200], torch.arange(200), 0, clipped).views["adv"].x
    assert (x_clip - 0.5).abs().max() <= eps + 1e-6
    # options in pixel units: noise 0 and a step of 0.02 move every coordinate by exactly 0.02
    plain = _recipe(("n-fgsm", {"noise": 0.0, "step_size": 0.02}), ("ce", {}), eps)
    x_plain = compute_loss(model, x[:4], y[:4], torch.arange(4), 0, plain).views["adv"].x
    torch.testing.assert_close((x_plain - 0.5).abs(), torch.full_like(x_plain, 0.02))


# ----------------------------------------------------------------------------------------------- GradAlign
def _grad_align_oracle(W, b, xs, y, eta, lam):
    """lambda * (1 - cos(g(x), g(x + eta))) per sample (train.py 193-200, per sample before the mean), with
    g the input gradient of the cross-entropy and x + eta clamped to [0, 1] (advlab's pixel domain)."""
    g1 = _input_grad(W, b, xs, y)
    g2 = _input_grad(W, b, np.clip(xs + eta, 0, 1), y)
    cos = (g1 * g2).sum(1) / (np.linalg.norm(g1, axis=1) * np.linalg.norm(g2, axis=1))
    return lam * (1 - cos)


def _grad_align_step(model, x, y, eps, lam, seed):
    recipe = _recipe(("fgsm", {"random_start": "none"}), ("grad-align", {"align_weight": lam}), eps)
    torch.manual_seed(seed)
    step = compute_loss(model, x, y, torch.arange(len(x)), 0, recipe)
    torch.manual_seed(seed)  # the oracle's eta: the same draw, U[-eps, eps] per coordinate
    eta = ((2 * torch.rand(x.shape, dtype=x.dtype) - 1) * eps).reshape(len(x), -1).double().numpy()
    return recipe, step, eta


def test_grad_align_terms_are_ce_on_adv_plus_lambda_times_one_minus_the_gradient_cosine():
    eps, lam = 0.1, 0.7
    model = _linear()
    x, y = _batch()
    recipe, step, eta = _grad_align_step(model, x, y, eps, lam, seed=3)
    W, b = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    xs = x.reshape(8, D).double().numpy()
    expected = _grad_align_oracle(W, b, xs, y.numpy(), eta, lam)
    assert expected.max() > 1e-3 and expected.max() - expected.min() > 1e-3  # a term worth checking
    np.testing.assert_allclose(lam * step.terms["align"].detach().double().numpy(), expected, rtol=1e-4, atol=1e-6)
    # the loss: mean CE on the adversarial view (FGSM from x: x + eps sign(g(x)), clamped) + lambda * mean term
    x_adv = np.clip(xs + eps * np.sign(_input_grad(W, b, xs, y.numpy())), 0, 1)
    p = _softmax(x_adv @ W.T + b)
    ce = -np.log(p[np.arange(8), y.numpy()]).mean()
    assert step.loss.item() == pytest.approx(ce + expected.mean(), rel=1e-5)
    metrics = recipe.objective.epoch_metrics()
    assert metrics["align_cos"] == pytest.approx(1 - expected.mean() / lam, rel=1e-4)


def test_grad_align_parameter_gradient_matches_finite_differences_with_the_clean_gradient_fixed():
    """float64. The official code detaches g(x) (train.py 162 / utils.py 89-90) and differentiates g(x + eta)
    (create_graph=True): the parameter gradient is that of lambda * mean(1 - cos(g(x; theta_0), g(x + eta; theta)))."""
    eps, lam = 0.1, 0.7
    model = _linear(torch.float64)
    x, y = _batch()
    x = x.double()
    _, step, eta = _grad_align_step(model, x, y, eps, lam, seed=4)
    model.zero_grad()
    (lam * step.terms["align"].mean()).backward()
    got = np.concatenate([model[1].weight.grad.numpy().ravel(), model[1].bias.grad.numpy()])

    W0, b0 = model[1].weight.detach().numpy().copy(), model[1].bias.detach().numpy().copy()
    xs, yn = x.reshape(8, D).numpy(), y.numpy()
    g1 = _input_grad(W0, b0, xs, yn)

    def value(theta, clean_fixed=True):
        W, b = theta[: C * D].reshape(C, D), theta[C * D:]
        a = g1 if clean_fixed else _input_grad(W, b, xs, yn)
        g2 = _input_grad(W, b, np.clip(xs + eta, 0, 1), yn)
        return lam * (1 - (a * g2).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(g2, axis=1))).mean()

    theta0, h = np.concatenate([W0.ravel(), b0]), 1e-6
    def fd(clean_fixed):
        return np.array([(value(theta0 + h * e, clean_fixed) - value(theta0 - h * e, clean_fixed)) / (2 * h)
                         for e in np.eye(len(theta0))])

    expected = fd(True)
    assert np.abs(expected).max() > 1e-3  # the regulariser does train the parameters
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
    assert np.abs(fd(False) - expected).max() > 1e-3  # differentiating g(x) too would be a different method


def test_grad_align_trains_a_relu_network_through_the_first_order_path():
    """With ReLU the input Hessian lacks curvature from the activations, but the regulariser's parameter gradient
    (the mixed derivative d/dtheta of grad_x) is not zero: the paper's PreAct ResNet-18 is a ReLU network."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C)).double()
    x, y = _batch()
    _, step, _ = _grad_align_step(model, x.double(), y, 0.1, 1.0, seed=5)
    model.zero_grad()
    step.terms["align"].mean().backward()
    assert model[1].weight.grad.abs().max() > 1e-4 and model[3].weight.grad.abs().max() > 1e-4


def test_cosine_of_zero_or_tiny_gradients_is_finite():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1e-30, -2e-30, 5e-31]], requires_grad=True)
    b = torch.tensor([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [2e-30, 1e-30, -1e-30]], requires_grad=True)
    cos = per_sample_cosine(a, b)
    expected = [10 / 14, 1.0, (2 - 2 - 0.5) / (np.sqrt(1 + 4 + 0.25) * np.sqrt(4 + 1 + 1))]
    np.testing.assert_allclose(cos.detach().numpy(), expected, rtol=1e-5)
    cos.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and (a.grad[1] == 0).all()
