"""The PGD engine: exactness on linear models, per-sample settings, bookkeeping (kappa, first_wrong, FAT's
early stop) on a hand-built case, and no side effects on inputs, parameters or module modes."""
import pytest
import torch
from torch import nn

from advlab.attacks import (LOSSES, AttackResult, bn_mode, ce_loss, cw_loss, dlr_loss, eval_mode, fgsm, get_loss,
                            kl_loss, no_param_grad, pgd, train_mode)
from advlab.errors import AdvlabError

C, D = 4, 20


pytestmark = pytest.mark.usefixtures("one_thread")


def linear_setup(n=400, seed=0):
    """A random linear classifier on 20-dim inputs in [0.3, 0.7] (so an eps < 0.3 never meets the box)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D, C)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(C, D, generator=g))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.3 + 0.4 * torch.rand(n, D, generator=g)
    with torch.no_grad():
        z = lin(x)
    pred = z.argmax(1)
    y = torch.where(torch.rand(n, generator=g) < 0.9, pred, torch.randint(0, C, (n,), generator=g))
    return model, lin.weight.detach(), x.reshape(n, 1, 4, 5), y, z, pred


def exact_radius(W, z, y, pred, p):
    """Distance to the decision boundary in the dual norm: margin_k / ||w_y - w_k||_q, 0 if misclassified."""
    zy = z.gather(1, y[:, None])
    diff = W[y][:, None, :] - W[None]
    dual = diff.abs().sum(-1) if p == "linf" else diff.norm(dim=-1)
    rad = (zy - z) / dual.clamp_min(1e-12)
    rad.scatter_(1, y[:, None], float("inf"))
    return torch.where(pred == y, rad.min(1).values, torch.zeros(len(y)))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_matches_exact_robust_accuracy_of_a_linear_model(norm, loss):
    model, W, x, y, z, pred = linear_setup()
    radius = exact_radius(W, z, y, pred, norm)
    eps = float(radius[pred == y].median())
    exact = float((radius > eps).float().mean())
    assert 0.2 < exact < 0.8
    if norm == "linf":
        assert eps < 0.3  # the box [0, 1] never binds
    else:
        assert eps < 0.3  # even the whole move on one coordinate stays inside the box
    result = pgd(model, x, y, eps=eps, step_size=eps / 10, steps=50, norm=norm, loss=loss, random_start=None)
    with torch.no_grad():
        robust = float((model(result.x_adv).argmax(1) == y).float().mean())
    assert abs(robust - exact) <= 0.01, (robust, exact)
    assert float((result.first_wrong == -1).float().mean()) <= robust  # any iterate wrong counts as broken


def test_anti_adversarial_direction_lowers_loss_and_raises_confidence():
    model, _, x, y, _, _ = linear_setup(n=64)
    eps = 0.05
    down = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, direction=-1, random_start=None).x_adv
    up = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, direction=1, random_start=None).x_adv
    with torch.no_grad():
        clean, lo, hi = (ce_loss(model(t), y) for t in (x, down, up))
        p_clean = model(x).softmax(1).gather(1, y[:, None])
        p_down = model(down).softmax(1).gather(1, y[:, None])
    assert (lo < clean).all() and (hi > clean).all()
    assert (p_down > p_clean).all()
    # mixed per-sample direction acts row by row
    direction = torch.where(torch.arange(64) % 2 == 0, 1, -1)
    mixed = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, direction=direction, random_start=None).x_adv
    even, odd = direction == 1, direction == -1
    torch.testing.assert_close(mixed[even], up[even])
    torch.testing.assert_close(mixed[odd], down[odd])
    with pytest.raises(AdvlabError):
        pgd(model, x, y, eps=eps, step_size=0.01, steps=1, direction=torch.zeros(64))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("start", ["uniform", "normal", None])
def test_per_sample_eps_is_respected_and_eps_zero_rows_are_unchanged(norm, start):
    model, _, x, y, _, _ = linear_setup(n=32)
    eps = torch.linspace(0, 0.3, 32)
    eps[5] = 0
    result = pgd(model, x, y, eps=eps, step_size=eps / 2, steps=5, norm=norm, random_start=start,
                 generator=torch.Generator().manual_seed(1))
    delta = (result.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert (size[eps > 0] > 0).all()
    assert torch.equal(result.x_adv[eps == 0], x[eps == 0])
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.x_adv.dtype == x.dtype and result.x_adv.shape == x.shape and not result.x_adv.requires_grad


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_scalar_eps_equals_per_sample_tensor_of_the_same_value(norm):
    model, _, x, y, _, _ = linear_setup(n=16)
    a = pgd(model, x, y, eps=0.1, step_size=0.02, steps=4, norm=norm, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, eps=torch.full((16,), 0.1), step_size=torch.full((16,), 0.02), steps=4, norm=norm,
            generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.kappa, b.kappa) and torch.equal(a.first_wrong, b.first_wrong)


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 20, C))


@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_row_of_a_batched_attack_equals_the_attack_on_that_sample_alone(loss):
    model = small_cnn()
    x = torch.rand(6, 1, 4, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % C
    batched = pgd(model, x, y, eps=0.1, step_size=0.02, steps=5, loss=loss, random_start=None)
    for i in range(6):
        alone = pgd(model, x[i:i + 1], y[i:i + 1], eps=0.1, step_size=0.02, steps=5, loss=loss, random_start=None)
        torch.testing.assert_close(batched.x_adv[i:i + 1], alone.x_adv, atol=1e-6, rtol=0)
        assert batched.kappa[i] == alone.kappa[0]


def test_attack_does_not_touch_inputs_parameter_grads_or_global_rng():
    model = small_cnn()
    x = torch.rand(8, 1, 4, 5)
    y = torch.arange(8) % C
    x0, y0 = x.clone(), y.clone()
    params = list(model.parameters())
    assert all(p.grad is None for p in params)
    rng = torch.get_rng_state()
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=3, random_start=None)
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in params)
    for p in params:
        p.grad = torch.ones_like(p)
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=3, loss="kl")
    fgsm(model, x, y, eps=0.1)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in params)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert all(p.requires_grad for p in params)


class Recorder(nn.Module):
    """Records the training flag it saw at each forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), Recorder(), nn.Dropout(0.5),
                         nn.Flatten(), nn.Linear(60, C))


@pytest.mark.parametrize("mode", ["eval", "train", None])
def test_module_mode_flags_are_restored_per_submodule(mode):
    model = bn_model()
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    x = torch.rand(8, 1, 4, 5)
    y = torch.arange(8) % C
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, bn_mode=mode)
    assert [m.training for m in model.modules()] == before
    expected = {"eval": False, "train": True, None: True}[mode]
    assert set(model[2].seen) == {expected}


def test_context_managers_restore_state():
    model = bn_model()
    model.eval()
    model[3].train()
    before = [m.training for m in model.modules()]
    with train_mode(model):
        assert all(m.training for m in model.modules())
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    with bn_mode(model, None):
        assert [m.training for m in model.modules()] == before
    assert [m.training for m in model.modules()] == before
    model[0].weight.requires_grad_(False)
    with no_param_grad(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    with pytest.raises(AdvlabError):
        with bn_mode(model, "test"):
            pass


class Threshold(nn.Module):
    """Two classes on the first pixel: class 1 iff x > 0.5 (logits 0 and x - 0.5)."""

    def forward(self, x):
        v = x.flatten(1)[:, :1] - 0.5
        return torch.cat([torch.zeros_like(v), v], 1)


# Every sample has label 0; CE ascent moves the pixel up by its step each iteration (no random start).
#                A: wrong at start   B       C       D: stuck by eps   E: wrong only at the final iterate
X0 = torch.tensor([0.55, 0.27, 0.03, 0.05, 0.02])
EPS = torch.tensor([1.0, 1.0, 1.0, 0.2, 1.0])
STEP = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.061])
K = 8
# iterates: A .55 .65 ...; B .27 .37 .47 .57(k=3) ...; C .03 ... .53(k=5) ...; D .15 .25 .25 ...;
#           E .02 .081 ... .447(k=7) .508(k=8)
CASES = {
    # early_stop: (kappa, first_wrong, steps, final pixel)
    None: ([0, 3, 5, 8, 8], [0, 3, 5, -1, 8], [8, 8, 8, 8, 8], [1.0, 1.0, 0.83, 0.25, 0.508]),
    0: ([0, 3, 5, 8, 8], [0, 3, 5, -1, 8], [0, 3, 5, 8, 8], [0.55, 0.57, 0.53, 0.25, 0.508]),
    2: ([0, 3, 5, 8, 8], [0, 3, 5, -1, 8], [2, 5, 7, 8, 8], [0.75, 0.77, 0.73, 0.25, 0.508]),
}


@pytest.mark.parametrize("tau", [None, 0, 2])
def test_kappa_first_wrong_and_early_stop_on_a_hand_built_case(tau):
    x = X0.reshape(5, 1, 1, 1)
    y = torch.zeros(5, dtype=torch.long)
    result = pgd(Threshold(), x, y, eps=EPS, step_size=STEP, steps=K, random_start=None, early_stop=tau)
    kappa, first_wrong, steps, final = CASES[tau]
    assert result.kappa.tolist() == kappa
    assert result.first_wrong.tolist() == first_wrong
    assert result.steps.tolist() == steps
    torch.testing.assert_close(result.x_adv.flatten(), torch.tensor(final), atol=1e-5, rtol=0)
    assert result.kappa.dtype == result.first_wrong.dtype == result.steps.dtype == torch.int64


def test_early_stop_with_a_large_budget_is_plain_pgd_and_keeps_batch_order():
    x = X0.reshape(5, 1, 1, 1)
    y = torch.zeros(5, dtype=torch.long)
    plain = pgd(Threshold(), x, y, eps=EPS, step_size=STEP, steps=K, random_start=None)
    late = pgd(Threshold(), x, y, eps=EPS, step_size=STEP, steps=K, random_start=None, early_stop=K)
    assert torch.equal(plain.x_adv, late.x_adv) and torch.equal(plain.kappa, late.kappa)


def test_without_labels_and_without_final_tracking():
    x = X0.reshape(5, 1, 1, 1)
    y = torch.zeros(5, dtype=torch.long)
    r = pgd(Threshold(), x, eps=EPS, step_size=STEP, steps=3, random_start=None, target=y)
    assert r.kappa is None and r.first_wrong is None and r.steps.tolist() == [3] * 5
    r = pgd(Threshold(), x, y, eps=EPS, step_size=STEP, steps=3, random_start=None, track_final=False)
    assert r.first_wrong is None and r.kappa.tolist() == [0, 3, 3, 3, 3]
    with pytest.raises(AdvlabError):
        pgd(Threshold(), x, eps=0.1, step_size=0.1, steps=1)  # no labels, no target
    with pytest.raises(AdvlabError):
        pgd(Threshold(), x, eps=0.1, step_size=0.1, steps=1, target=y, early_stop=0)  # early stop needs y


def test_losses_values():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.5]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(LOSSES.get("ce")(z, y), nn.functional.cross_entropy(z, y, reduction="none"))
    soft = nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(ce_loss(z, soft), ce_loss(z, y))
    torch.testing.assert_close(cw_loss(z, y), torch.tensor([-1.0, 2.0]))
    torch.testing.assert_close(cw_loss(z, y, confidence=0.5), torch.tensor([-1.0, 0.5]))
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-1.0 / 2.0, 2.0 / 2.5]))
    p = z.softmax(1)
    torch.testing.assert_close(kl_loss(z, p), torch.zeros(2), atol=1e-6, rtol=0)
    assert (kl_loss(z.flip(1), p) > 0).all()
    assert get_loss(cw_loss) is cw_loss and set(LOSSES.names()) >= {"ce", "cw", "kl", "dlr"}
    with pytest.raises(AdvlabError):
        get_loss("nope")


def test_kl_attack_needs_no_labels_and_a_custom_loss_on_a_representation():
    model = small_cnn()
    x = torch.rand(8, 1, 4, 5)
    r = pgd(model, x, eps=0.1, step_size=0.03, steps=3, loss="kl", random_start="normal",
            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (kl_loss(model(r.x_adv), model(x).softmax(1)) > 0).all()
    features = model[:3]  # conv-relu-flatten: a representation, not logits
    with torch.no_grad():
        ref = features(x)
    r = pgd(features, x, eps=0.1, step_size=0.03, steps=3, target=ref,
            loss=lambda out, t: (out - t).pow(2).sum(1))
    with torch.no_grad():
        assert ((features(r.x_adv) - ref).pow(2).sum(1) > 0).all()
    assert isinstance(r, AttackResult)


def test_fgsm_is_one_step_of_125_eps_projected():
    model, _, x, y, _, _ = linear_setup(n=16)
    g = torch.Generator().manual_seed(0)
    r = fgsm(model, x, y, eps=0.1, generator=g)
    assert r.steps.tolist() == [1] * 16
    delta = (r.x_adv - x).abs()
    assert delta.max() <= 0.1 + 1e-6
    # from a uniform start, a step of 1.25 eps followed by the projection lands most coordinates on the boundary
    assert (delta > 0.1 - 1e-6).float().mean() > 0.5
    same = pgd(model, x, y, eps=0.1, step_size=0.125, steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.x_adv, same.x_adv)


def test_bad_arguments_are_clear_errors():
    model, _, x, y, _, _ = linear_setup(n=4)
    for kwargs in [dict(norm="l3"), dict(random_start="gauss"), dict(eps=-0.1), dict(steps=-1),
                   dict(eps=torch.ones(3)), dict(loss="hinge")]:
        args = dict(eps=0.1, step_size=0.01, steps=1) | kwargs
        with pytest.raises(AdvlabError):
            pgd(model, x, y, **args)
    with pytest.raises(AdvlabError):
        pgd(model, (x * 255).to(torch.uint8), y, eps=0.1, step_size=0.01, steps=1)
