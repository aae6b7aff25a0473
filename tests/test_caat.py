"""CAAT: adversaries and anti-adversaries, meta-learned weights, FRL's duals (values computed by hand)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.recipes import RecipeEnv, create_recipe, compute_loss
from advlab.recipes.perturbation.caat import CAATPerturbation, CAATPerturbationOptions
from advlab.recipes.weighting.frl import FRLDuals, FRLOptions, batch_class_weights
from advlab.recipes.weighting.lookahead import sgd_lookahead
from advlab.recipes.weighting.training_dynamics import training_dynamics


def env(**kw) -> RecipeEnv:
    base = dict(num_train=32, num_classes=3, epochs=4, eps=0.1, norm="linf", device=torch.device("cpu"), seed=0)
    base.update(kw)
    return RecipeEnv(**base)


class Linear(nn.Module):
    def __init__(self, d: int = 8, c: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, x):
        return self.fc(x.flatten(1))


# -- the two views -----------------------------------------------------------------------------------------
def test_anti_view_lowers_the_loss_and_every_view_stays_in_its_own_bound(one_thread):
    torch.manual_seed(0)
    model = Linear(16, 3)
    x = torch.rand(12, 1, 4, 4) * 0.6 + 0.2
    y = torch.randint(0, 3, (12,))
    part = CAATPerturbation(CAATPerturbationOptions(bound="grad", steps=10), env(eps=0.05))
    views = part.create_views(model, x, y)
    eps = views["anti"].eps
    assert eps.shape == (12,) and torch.all(eps >= 0.05 * 0.98 - 1e-7) and torch.all(eps <= 0.05 * 2.5 + 1e-7)
    assert not torch.allclose(eps, eps[0].expand_as(eps))  # per sample
    ce = lambda v: nn.functional.cross_entropy(model(v), y, reduction="none")  # noqa: E731
    with torch.no_grad():
        assert torch.all(ce(views["anti"].x) < ce(x))  # descent: lower loss for every sample
        kl = lambda v: (model(x).softmax(1) * (model(x).log_softmax(1) - model(v).log_softmax(1))).sum(1)  # noqa
        assert kl(views["adv"].x).mean() > 1e-6  # ascent of KL(p(x) || p(x'))
    for name in ("adv", "anti"):
        delta = (views[name].x - x).flatten(1).abs().amax(1)
        assert torch.all(delta <= eps + 1e-6), name
        assert views[name].x.min() >= 0 and views[name].x.max() <= 1
    assert torch.equal(views["adv"].direction, torch.ones(12)) and torch.equal(views["anti"].direction, -torch.ones(12))


def test_random_start_none_starts_from_x_and_draws_nothing(one_thread):
    torch.manual_seed(0)
    model = Linear(16, 3)
    x = torch.rand(6, 1, 4, 4) * 0.6 + 0.2
    y = torch.randint(0, 3, (6,))
    part = CAATPerturbation(CAATPerturbationOptions(steps=1, random_start="none"), env(eps=0.05))
    rng = torch.get_rng_state()
    views = part.create_views(model, x, y)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global stream
    x0 = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x0), y, reduction="sum"), [x0])
    expected = (x - 0.2 * 0.05 * grad.sign()).clamp(0, 1)  # one anti step of 0.2 eps from x itself
    assert torch.allclose(views["anti"].x, expected, atol=1e-7)


def test_the_grad_bound_follows_its_definition():
    part = CAATPerturbation(CAATPerturbationOptions(bound="grad"), env(eps=0.1))
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 0, 0])
    fit = torch.tensor([0.0, math.sqrt(2), math.sqrt(0.5)]) / math.sqrt(2)
    expected = 0.1 * (2.5 - (2.5 - 0.98) * fit)
    assert torch.allclose(part.bounds(y, p), expected)


def test_remargin_needs_a_weighting_with_frl_duals():
    spec = {"labels": ("hard", {}), "perturbation": ("caat", {"bound": "remargin"}), "weighting": ("uniform", {}),
            "objective": ("caat", {})}
    with pytest.raises(ConfigError, match="perturbation 'caat' with bound remargin.*weighting 'uniform'"):
        create_recipe(spec, env())


def test_the_caat_weighting_needs_the_clean_outputs_and_the_meta_split():
    meta = dict(meta_images=torch.zeros(6, 1, 4, 4, dtype=torch.uint8), meta_labels=torch.tensor([0, 1, 2] * 2))
    spec = {"labels": ("hard", {}), "perturbation": ("caat", {}), "weighting": ("caat", {}), "objective": ("ce", {})}
    with pytest.raises(ConfigError, match="weighting 'caat' reads the model's outputs on view 'clean'"):
        create_recipe(spec, env(**meta))
    spec["objective"] = ("caat", {})
    with pytest.raises(ConfigError, match="weighting 'caat' needs the meta split"):
        create_recipe(spec, env())


# -- features ------------------------------------------------------------------------------------------------
def test_the_six_features_on_a_hand_computed_batch():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])  # p = (1/3,1/3,1/3), (1/2,1/4,1/4)
    y = torch.tensor([1, 0])
    class_loss = torch.tensor([0.5, 0.7, 0.9])
    prior = torch.tensor([0.2, 0.3, 0.5])
    f = training_dynamics(logits, y, class_loss, prior)
    third = 1 / 3
    expected = torch.tensor([
        [math.log(3), 0.7, math.sqrt(third ** 2 + (1 - third) ** 2 + third ** 2), 0.0, math.log(third), 0.3],
        [math.log(2), 0.5, math.sqrt(0.25 + 0.0625 + 0.0625), 0.25, 0.5 * math.log(0.5) + 0.5 * math.log(0.25), 0.2],
    ])
    assert torch.allclose(f, expected, atol=1e-6)


# -- look-ahead and meta-gradient -------------------------------------------------------------------------
def test_the_look_ahead_is_one_hand_written_sgd_step_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    model = Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    for _ in range(2):  # momentum buffers exist
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    loss = nn.functional.cross_entropy(model(x), y)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), retain_graph=True)))
    ahead = sgd_lookahead(model, grads, opt)
    for name, w in params.items():
        buf = opt.state[w]["momentum_buffer"]
        g = grads[name] + 0.01 * w
        expected = w - 0.1 * (0.9 * buf + g)
        assert torch.allclose(ahead[name], expected, atol=1e-7), name
    # and equal to what the optimiser itself does next
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name, w in model.named_parameters():
        assert torch.allclose(ahead[name], w, atol=1e-6), name


def _meta_setup():
    torch.manual_seed(3)
    model = Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.0)
    meta_x = torch.rand(9, 1, 2, 3)
    meta_images = (meta_x * 255).round().to(torch.uint8)
    meta_labels = torch.tensor([0, 1, 2] * 3)
    e = env(num_train=8, model=model, optimizer=opt, meta_images=meta_images, meta_labels=meta_labels,
            class_counts=[3, 3, 2])
    spec = {"labels": ("hard", {}), "perturbation": ("caat", {"steps": 2}),
            "weighting": ("caat", {"temperature": 1.0, "meta_every": 1, "meta_batch_size": 9, "reweight": False}),
            "objective": ("caat", {})}
    recipe = create_recipe(spec, e)
    x, y = torch.rand(8, 1, 2, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return model, recipe, x, y


def test_the_meta_gradient_matches_a_finite_difference_estimate(one_thread):
    model, recipe, x, y = _meta_setup()
    weighting = recipe.weighting
    model.double()
    net = weighting.meta_net.double()
    torch.manual_seed(5)
    step = compute_loss(model.train(), x.double(), y, torch.arange(8), 0, recipe)  # one meta step done too
    # the meta loss as a function of the meta-net's last bias, with everything else fixed
    probe_bias = net.net[3].bias

    def meta_loss() -> torch.Tensor:
        gen_state = weighting.meta_generator.get_state()  # the same meta batch every time
        torch.manual_seed(11)  # the same random starts of its views
        zeta = weighting.features(step.outputs["clean"], y)
        value = weighting.meta_step_loss(step, zeta)
        weighting.meta_generator.set_state(gen_state)
        return value

    value = meta_loss()
    (grad,) = torch.autograd.grad(value, [probe_bias])
    h = 1e-3
    estimate = torch.zeros(2, dtype=torch.float64)
    for k in range(2):
        with torch.no_grad():
            probe_bias[k] += h
        up = float(meta_loss().detach())
        with torch.no_grad():
            probe_bias[k] -= 2 * h
        down = float(meta_loss().detach())
        with torch.no_grad():
            probe_bias[k] += h
        estimate[k] = (up - down) / (2 * h)
    assert torch.allclose(grad.double(), estimate, rtol=1e-2, atol=1e-5), (grad, estimate)
    assert float(grad.abs().sum()) > 0


def test_a_meta_step_looks_ahead_over_the_trainable_parameters_of_a_frozen_encoder(one_thread):
    """model.freeze=encoder (FrozenEncoder: only the last linear layer trains) with CAAT: the look-ahead steps
    the head alone and leaves the frozen encoder's weights as they are (it once read a gradient for every
    parameter and died with KeyError)."""
    from advlab.models.representation import FrozenEncoder

    torch.manual_seed(3)
    model = FrozenEncoder(nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    meta_images = (torch.rand(9, 1, 2, 3) * 255).round().to(torch.uint8)
    e = env(num_train=8, model=model, optimizer=opt, meta_images=meta_images, meta_labels=torch.tensor([0, 1, 2] * 3),
            class_counts=[3, 3, 2])
    spec = {"labels": ("hard", {}), "perturbation": ("caat", {"steps": 2}),
            "weighting": ("caat", {"temperature": 1.0, "meta_every": 1, "meta_batch_size": 9}),
            "objective": ("caat", {})}
    recipe = create_recipe(spec, e)
    x, y = torch.rand(8, 1, 2, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = compute_loss(model.train(), x, y, torch.arange(8), 0, recipe)  # runs a meta step
    assert recipe.weighting.epoch_metrics()["caat_meta_steps"] == 1
    grads = dict(zip(["model.3.weight", "model.3.bias"],
                     torch.autograd.grad(step.loss, [model.model[3].weight, model.model[3].bias])))
    ahead = sgd_lookahead(model, grads, opt)
    assert set(ahead) == {"model.3.weight", "model.3.bias"}
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


# -- FRL --------------------------------------------------------------------------------------------------
def test_frl_dual_update_on_scripted_errors_gives_the_hand_computed_values():
    duals = FRLDuals(3, FRLOptions())
    clean = torch.tensor([0.1, 0.2, 0.6])  # mean 0.3
    boundary = torch.tensor([0.3, 0.3, 0.0])  # mean 0.2
    duals.update(0, clean, boundary)
    # gamma0 = e0 - 0.3 - 0.07 = [-0.27, -0.17, 0.23]; lam0 = 0.05 * gamma0, clipped at 0 -> [0, 0, 0.0115]
    assert torch.allclose(duals.lam0, torch.tensor([0.0, 0.0, 0.0115], dtype=torch.float64))
    # gamma1 = e1 - 0.2 - 0.07 = [0.03, 0.03, -0.27]; lam1 = 2 * 0.05 * gamma1 -> [0.003, 0.003, 0]
    assert torch.allclose(duals.lam1, torch.tensor([0.003, 0.003, 0.0], dtype=torch.float64))
    # lam2 = 0.2 * gamma1 (not clipped) -> [0.006, 0.006, -0.054]
    assert torch.allclose(duals.lam2, torch.tensor([0.006, 0.006, -0.054], dtype=torch.float64))
    third = 1 / 3
    assert torch.allclose(duals.natural_weights, torch.tensor([third - 0.0115 / 3, third - 0.0115 / 3,
                                                               third + 0.0115 - 0.0115 / 3], dtype=torch.float64))
    assert torch.allclose(duals.bound_multipliers, torch.tensor([math.exp(0.012), math.exp(0.012), 0.98],
                                                                dtype=torch.float64))
    # rescaled to sum at most 0.5, and r1 halved from 0-indexed epoch 39, the code's now_epoch 40 (the schedule
    # itself against the code's loop: tests/test_official_oracles.py::test_frl_r1_halves_as_the_code_s_epoch_loop)
    duals.lam0 = torch.tensor([0.4, 0.4, 0.0], dtype=torch.float64)
    duals.update(39, clean, boundary)
    lam = torch.tensor([0.4 - 0.025 * 0.27, 0.4 - 0.025 * 0.17, 0.025 * 0.23], dtype=torch.float64)
    assert torch.allclose(duals.lam0, lam / lam.sum() * 0.5)


def test_batch_class_weights_give_the_code_s_normalisation():
    w = torch.tensor([0.2, 0.5, 0.3])
    y = torch.tensor([0, 1, 1, 2])
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    per_sample = batch_class_weights(w, y)
    assert torch.allclose((per_sample * loss).mean(), (w[y] * loss).sum() / w[y].sum())


# -- a whole run ---------------------------------------------------------------------------------------------
TINY = ["data.train_size=100", "batch_size=50", "perturbation.steps=2", "validation.n=20", "device=cpu",
        "data.meta_size=60", "weighting.meta_every=2", "weighting.meta_batch_size=30", "weighting.attack_steps=2",
        "epochs=2", "evaluation.n=20"]


@pytest.mark.slow
def test_caat_kill_and_resume_reproduce_the_metrics(tmp_path, whole_and_resumed, training_rows):
    from advlab.config import load_config

    config = load_config("caat", TINY)
    whole, resumed = whole_and_resumed(config, tmp_path, stop_after=1)
    a, b = training_rows(whole), training_rows(resumed)
    assert a == b
    assert a[-1]["caat_meta_steps"] > 0 and a[-1]["caat_a_mean"] is not None
    assert len(a[-1]["frl_bound_multipliers"]) == 10
