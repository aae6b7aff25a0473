"""The PGD engine: exactness on linear models, per-sample settings, bookkeeping (kappa, first_wrong, FAT's
early stop) on a hand-built case, and no side effects on inputs, parameters or module modes."""
import pytest
import torch
from torch import nn

from advlab.attacks import (LOSSES, AttackResult, model_mode, ce_loss, cw_loss, dlr_loss, eval_mode, fgsm,
                            forward_logits, get_loss, get_norm, kl_loss, logits_of, no_param_grad, pgd, train_mode)
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
    pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, model_mode=mode)
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
    with model_mode(model, None):
        assert [m.training for m in model.modules()] == before
    assert [m.training for m in model.modules()] == before
    model[0].weight.requires_grad_(False)
    with no_param_grad(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    with pytest.raises(AdvlabError):
        with model_mode(model, "test"):
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
    assert result.steps_taken.tolist() == steps
    torch.testing.assert_close(result.x_adv.flatten(), torch.tensor(final), atol=1e-5, rtol=0)
    assert result.kappa.dtype == result.first_wrong.dtype == result.steps_taken.dtype == torch.int64


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
    assert r.kappa is None and r.first_wrong is None and r.steps_taken.tolist() == [3] * 5
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
    assert r.steps_taken.tolist() == [1] * 16
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


# ---------------------------------------------------------------------------------------------------------
# L2 steps of full length however small the gradient (a confident model), in every float dtype

def confident_linear(n=9, seed=0, scale=200 / 28, dtype=torch.float32):
    """A linear 10-class model on 1x28x28 inputs in [0.25, 0.75] whose softmax saturates (logits of a few
    hundred), so its CE input gradients are tiny: max-abs 1e-40..1e-13, the norm torch computes 0 or < 1e-12."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(784, 10)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, 784, generator=g) * scale)
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).to(dtype)
    x = (0.25 + 0.5 * torch.rand(n, 1, 28, 28, generator=g)).to(dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def ce_input_grad(model, x, y):
    """The CE input gradient the attack sees (one forward of the whole batch, as in pgd)."""
    xa = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xa), y, reduction="none").sum(), xa)
    return grad


def test_confident_model_has_the_tiny_gradients_the_l2_test_needs():
    model, x, y = confident_linear()
    grad = ce_input_grad(model, x, y).flatten(1)
    top = grad.abs().amax(1)
    assert (top > 0).all()
    assert (grad.norm(dim=1) < 1e-12).all()  # below the old clamp: the old L2 step barely moved
    assert (grad.norm(dim=1) == 0).sum() >= 3  # squares underflow: a naive v / ||v|| is 0/0


@pytest.mark.parametrize("per_sample_sizes", [False, True])
def test_l2_step_has_full_length_for_a_confident_model(per_sample_sizes):
    model, x, y = confident_linear()
    n = len(x)
    step = torch.linspace(0.25, 1.5, n) if per_sample_sizes else torch.full((n,), 0.5)
    g64 = ce_input_grad(model, x, y).double().flatten(1)
    expected = x.double().flatten(1) + step.double()[:, None] * g64 / g64.norm(dim=1, keepdim=True)
    assert expected.min() > 0 and expected.max() < 1  # the box [0, 1] does not bind
    # the cross-entropy as a user's callable: the engine differentiates it as given (the built-in "ce" is
    # differentiated through its underflow-free soft margin, whose gradients are not tiny), so the tiny
    # gradients reach the step
    r = pgd(model, x, y, eps=100.0, step_size=step if per_sample_sizes else 0.5, steps=1, norm="l2",
            random_start=None, loss=lambda z, t: nn.functional.cross_entropy(z, t, reduction="none"))
    moved = (r.x_adv.double() - x.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, step.double(), rtol=1e-5, atol=0)
    torch.testing.assert_close(r.x_adv.double().flatten(1), expected, rtol=0, atol=1e-6)  # along the gradient


def test_l2_projection_of_a_long_step_from_a_confident_model_lands_on_the_sphere():
    model, x, y = confident_linear()
    eps = torch.linspace(0.1, 0.4, len(x))
    r = pgd(model, x, y, eps=eps, step_size=0.5, steps=2, norm="l2", random_start=None)
    moved = (r.x_adv.double() - x.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, eps.double(), rtol=1e-5, atol=0)


def norms64(t, scale=1.0):
    """Per-sample L2 norms in float64 of ``t / scale`` times ``scale`` (no underflow for tiny rows)."""
    return (t.double() / scale).flatten(1).norm(dim=1) * scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_l2_step_and_projection_of_tiny_and_zero_rows_in_every_float_dtype(dtype):
    l2 = get_norm("l2")
    tiny = {torch.float16: 1e-5, torch.bfloat16: 1e-35, torch.float32: 1e-30, torch.float64: 1e-300}[dtype]
    rtol = 1e-2 if dtype.itemsize == 2 else 1e-6
    v = torch.zeros(3, 1, 10, 10, dtype=dtype)
    v[0, 0, 0, :3] = torch.tensor([3.0, -4.0, 0.0]).to(dtype) * tiny  # norm 5 * tiny (squares underflow)
    v[1] = torch.linspace(-1, 1, 100).reshape(1, 10, 10).to(dtype)
    assert (v[0] != 0).sum() == 2  # representable in this dtype
    size = torch.tensor([0.5, 2.0, 1.0], dtype=dtype)
    move = l2.step(v, size)
    assert move.dtype == dtype and torch.isfinite(move).all()
    torch.testing.assert_close(norms64(move[:2]), size[:2].double(), rtol=rtol, atol=0)
    v64 = v.double() / tiny  # the direction of the stored (rounded) tiny row
    expected = 0.5 * v64[0] / v64[0].norm()
    torch.testing.assert_close(move[0].double(), expected, rtol=rtol, atol=0)
    assert torch.equal(move[2], torch.zeros_like(move[2]))  # zero gradient: no move
    assert torch.equal(l2.step(v, -size)[2], torch.zeros_like(move[2]))
    # projection: a tiny row longer than a tinier eps lands on its sphere; a zero row and eps 0 stay finite
    eps = torch.tensor([2.5 * tiny, 1.0, 0.0], dtype=dtype)
    p = l2.project(v, eps)
    assert torch.isfinite(p).all() and torch.equal(p[2], torch.zeros_like(p[2]))
    torch.testing.assert_close(norms64(p[:1], tiny), eps[:1].double(), rtol=rtol, atol=0)
    torch.testing.assert_close(norms64(p[1:2]), eps[1:2].double(), rtol=rtol, atol=0)
    assert torch.equal(l2.project(v, torch.zeros(3, dtype=dtype)), torch.zeros_like(v))
    torch.testing.assert_close(norms64(l2.size(v)[:1, None], tiny), norms64(v[:1], tiny), rtol=rtol, atol=0)
    torch.testing.assert_close(l2.size(v)[1:].double(), norms64(v[1:]), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_l2_random_start_is_inside_the_ball_and_finite_in_every_float_dtype(dtype):
    l2 = get_norm("l2")
    x = torch.full((4, 3, 160, 160), 0.5, dtype=dtype)  # 76800 dims: a sum of squares in float16 overflows
    eps = torch.tensor([0.0, 0.5, 1.0, 4.0], dtype=dtype)
    delta = l2.random(x, eps, torch.Generator().manual_seed(0))
    assert delta.dtype == dtype and torch.isfinite(delta).all()
    sizes = delta.double().flatten(1).norm(dim=1)
    assert sizes[0] == 0 and (sizes[1:] <= eps[1:].double() * 1.01).all() and (sizes[1:] > 0.5 * eps[1:]).all()


def test_l2_step_in_bfloat16_for_a_confident_model_and_zero_gradients_never_nan():
    model, x, y = confident_linear(n=6, dtype=torch.bfloat16)
    grad = ce_input_grad(model, x, y).float().flatten(1)
    live = grad.abs().amax(1) > 0
    assert (grad[live].norm(dim=1) < 1e-12).sum() >= 2 and (~live).sum() >= 2
    plain_ce = lambda z, t: nn.functional.cross_entropy(z, t, reduction="none")  # differentiated as given
    r = pgd(model, x, y, eps=100.0, step_size=0.5, steps=1, norm="l2", random_start=None, loss=plain_ce)
    moved = (r.x_adv.double() - x.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved[live], torch.full((int(live.sum()),), 0.5, dtype=torch.float64), rtol=3e-2,
                               atol=0)
    assert torch.equal(r.x_adv[~live], x[~live])  # zero gradients: no move
    # the built-in ce (its soft margin) moves every row a full step, those whose cross-entropy gradient is 0 too
    r = pgd(model, x, y, eps=100.0, step_size=0.5, steps=1, norm="l2", random_start=None)
    moved = (r.x_adv.double() - x.double()).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, torch.full((len(x),), 0.5, dtype=torch.float64), rtol=3e-2, atol=0)
    half = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).half()
    with torch.no_grad():
        half[1].weight.zero_()  # the output depends on x through autograd, with a zero gradient
    xh = x.half()
    for start in (None, "uniform"):
        r = pgd(half, xh, y, eps=1.0, step_size=0.5, steps=2, norm="l2", random_start=start,
                generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(r.x_adv).all()
        if start is None:
            assert torch.equal(r.x_adv, xh)


def test_l2_step_of_an_infinite_gradient_points_along_its_infinities():
    inf = float("inf")
    grad = torch.tensor([[inf, -inf, 1.0, 0.0], [3.0, -4.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)
    move = get_norm("l2").step(grad, torch.tensor([2.0, 1.0]))
    r = 2 ** 0.5
    torch.testing.assert_close(move.flatten(1), torch.tensor([[r, -r, 0.0, 0.0], [0.6, -0.8, 0.0, 0.0]]))


def test_zero_gradient_leaves_the_point_where_it_is():
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, C))
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.rand(5, 1, 4, 5)
    y = torch.arange(5) % C
    for norm in ("l2", "linf"):
        r = pgd(model, x, y, eps=0.3, step_size=0.1, steps=3, norm=norm, random_start=None)
        assert torch.equal(r.x_adv, x)


# ---------------------------------------------------------------------------------------------------------
# labels of any integer dtype

INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("loss", ["ce", "cw", "dlr"])
def test_labels_of_every_integer_dtype_give_the_int64_result(dtype, loss):
    model, _, x, y, _, _ = linear_setup(n=12)
    kwargs = dict(eps=0.1, step_size=0.03, steps=3, loss=loss, early_stop=1)
    ref = pgd(model, x, y, generator=torch.Generator().manual_seed(0), **kwargs)
    got = pgd(model, x, y.to(dtype), generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(got.x_adv, ref.x_adv)
    assert torch.equal(got.kappa, ref.kappa) and torch.equal(got.first_wrong, ref.first_wrong)
    assert got.kappa.dtype == got.first_wrong.dtype == torch.int64
    f_ref = fgsm(model, x, y, eps=0.1, generator=torch.Generator().manual_seed(1))
    f_got = fgsm(model, x, y.to(dtype), eps=0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(f_got.x_adv, f_ref.x_adv)
    # integer labels given as the loss target
    t_ref = pgd(model, x, target=y, eps=0.1, step_size=0.03, steps=2, loss=loss, random_start=None)
    t_got = pgd(model, x, target=y.to(dtype), eps=0.1, step_size=0.03, steps=2, loss=loss, random_start=None)
    assert torch.equal(t_got.x_adv, t_ref.x_adv)
    z = model(x).detach()
    assert torch.equal(get_loss(loss)(z, y.to(dtype)), get_loss(loss)(z, y))
    # a user loss receives the labels as int64 (torch's cross_entropy refuses int32 targets)
    def user_loss(out, t):
        return nn.functional.cross_entropy(out, t, reduction="none")
    u_ref = pgd(model, x, y, eps=0.1, step_size=0.03, steps=2, loss=user_loss, random_start=None)
    u_got = pgd(model, x, y.to(dtype), eps=0.1, step_size=0.03, steps=2, loss=user_loss, random_start=None)
    assert torch.equal(u_got.x_adv, u_ref.x_adv)


@pytest.mark.parametrize("bad", [torch.bool, torch.float32, torch.float64], ids=str)
def test_bool_and_float_labels_are_clear_errors(bad):
    model, _, x, y, _, _ = linear_setup(n=4)
    with pytest.raises(AdvlabError, match="labels y must be an integer"):
        pgd(model, x, (y % 2).to(bad), eps=0.1, step_size=0.03, steps=1)
    with pytest.raises(AdvlabError, match="labels y must be an integer"):
        fgsm(model, x, (y % 2).to(bad), eps=0.1)
    if bad == torch.bool:
        with pytest.raises(AdvlabError, match="integer"):
            pgd(model, x, target=y > 0, eps=0.1, step_size=0.03, steps=1)
        with pytest.raises(AdvlabError, match="integer"):
            ce_loss(model(x), y > 0)


# ---------------------------------------------------------------------------------------------------------
# models that do not return a logits tensor (B, C)

class Returns(nn.Module):
    """Wraps a model; returns its logits in another form: "tuple", "dict", "vector" (B,), "labels" (int),
    "image" (B, C, 1, 1) or "one-row" (1, C)."""

    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        z = self.net(x)
        return {"tuple": lambda: (z, z.detach()), "dict": lambda: {"logits": z}, "vector": lambda: z[:, 0],
                "labels": lambda: z.argmax(1, keepdim=True), "image": lambda: z[:, :, None, None],
                "one-row": lambda: z[:1]}[self.kind]()


BAD_OUTPUTS = {"tuple": "tuple", "dict": "dict", "vector": r"shape \(8,\)", "labels": "int64",
               "image": r"shape \(8, 4, 1, 1\)", "one-row": r"shape \(1, 4\)"}


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
def test_a_model_that_does_not_return_logits_is_a_clear_error(kind):
    model = Returns(small_cnn(), kind)
    x = torch.rand(8, 1, 4, 5)
    y = torch.arange(8) % C
    for call in (lambda: pgd(model, x, y, eps=0.1, step_size=0.02, steps=2),
                 lambda: pgd(model, x, y, eps=0.1, step_size=0.02, steps=0),  # only the final forward
                 lambda: pgd(model, x, eps=0.1, step_size=0.02, steps=2, loss="kl"),  # the clean forward
                 lambda: fgsm(model, x, y, eps=0.1)):
        with pytest.raises(AdvlabError, match=BAD_OUTPUTS[kind]) as info:
            call()
        assert "returns the logits tensor" in str(info.value) and "\n" not in str(info.value)


def test_logits_of_and_forward_logits():
    z = torch.randn(3, 5)
    assert logits_of(z, "here") is z and logits_of(z, "here", batch=3) is z
    assert torch.equal(forward_logits(nn.Identity(), z, "here"), z)
    with pytest.raises(AdvlabError, match=r"^here: .*tuple of 2 \(a float32 tensor of shape \(3, 5\), str\)"):
        logits_of((z, "aux"), "here")
    with pytest.raises(AdvlabError, match=r"dict with keys \['logits'\]"):
        logits_of({"logits": z}, "here")
    with pytest.raises(AdvlabError, match="a NoneType"):
        logits_of(None, "here")
    with pytest.raises(AdvlabError, match="with B = 4"):
        logits_of(z, "here", batch=4)
    with pytest.raises(AdvlabError, match="int64"):
        forward_logits(nn.Identity(), torch.ones(3, 5, dtype=torch.long), "here")


# ---------------------------------------------------------------------------------------------------------
# attacks under torch.no_grad(), torch.inference_mode() and with frozen parameters

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_attacks_under_no_grad_inference_mode_and_frozen_parameters_match(norm, loss):
    model = bn_model()
    x = torch.rand(8, 1, 4, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % C
    eps = torch.linspace(0.05, 0.2, 8)

    def attack(xx, yy, ee):
        kwargs = dict(eps=ee, norm=norm, loss=loss, generator=torch.Generator().manual_seed(0))
        r = pgd(model, xx, yy, step_size=ee / 4, steps=4, early_stop=1, **kwargs)
        return r.x_adv, r.kappa, r.first_wrong, fgsm(model, xx, yy, **kwargs).x_adv

    ref = attack(x, y, eps)
    with torch.no_grad():
        outs = {"no_grad": attack(x, y, eps)}
    with torch.inference_mode():
        xi, yi, ei = x.clone(), y.clone(), eps.clone()  # inference tensors
        outs["inference_mode"] = attack(xi, yi, ei)
    with no_param_grad(model):
        outs["frozen"] = attack(x, y, eps)
        with torch.no_grad():
            outs["frozen+no_grad"] = attack(x, y, eps)
    for name, out in outs.items():
        for a, b in zip(out, ref):
            assert torch.equal(a, b), name
        assert not out[0].is_inference() and not out[0].requires_grad
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_grad_mode_of_the_caller_is_restored():
    model = small_cnn()
    x = torch.rand(4, 1, 4, 5)
    y = torch.arange(4) % C
    with torch.no_grad():
        pgd(model, x, y, eps=0.1, step_size=0.02, steps=2)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        pgd(model, x, y, eps=0.1, step_size=0.02, steps=2)
        assert torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


class NotDifferentiable(nn.Module):
    """Wraps a model so that its output does not depend on its input through autograd."""

    def __init__(self, net, how):
        super().__init__()
        self.net, self.how = net, how

    def forward(self, x):
        if self.how == "argmax":
            return nn.functional.one_hot(self.net(x).argmax(1), C).float()
        if self.how == "detach":
            return self.net(x.detach())
        with torch.no_grad():
            return self.net(x)


@pytest.mark.parametrize("how", ["argmax", "detach", "no_grad"])
@pytest.mark.parametrize("frozen", [False, True])
def test_a_model_without_input_gradients_is_a_clear_error(how, frozen):
    model = NotDifferentiable(small_cnn(), how)
    x = torch.rand(4, 1, 4, 5)
    y = torch.arange(4) % C
    with no_param_grad(model) if frozen else torch.enable_grad():
        for call in (lambda: pgd(model, x, y, eps=0.1, step_size=0.02, steps=2),
                     lambda: fgsm(model, x, y, eps=0.1)):
            with pytest.raises(AdvlabError, match="does not depend on its input through autograd"):
                call()
            with torch.no_grad(), pytest.raises(AdvlabError, match="does not depend on its input"):
                call()


def test_a_model_made_under_inference_mode_is_a_clear_error():
    with torch.inference_mode():
        model = small_cnn()
    x = torch.rand(4, 1, 4, 5)
    with pytest.raises(AdvlabError, match="inference_mode"):
        pgd(model, x, torch.arange(4) % C, eps=0.1, step_size=0.02, steps=1)


# ------------------------------------------------------------------ start_eps and eps=inf (N-FGSM's options)
def _constant_gradient_model():
    """Two classes, logits (w.x, 0): for label 1, grad_x CE = p_0 w, whose sign is sign(w) at every x."""
    lin = nn.Linear(D, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0] = torch.tensor([1.0, -1.0] * (D // 2))
    return nn.Sequential(nn.Flatten(), lin), lin.weight[0].detach().sign()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_start_eps_draws_the_start_in_its_own_ball_and_eps_inf_never_projects(norm):
    model, sign_w = _constant_gradient_model()
    x = torch.full((2000, 1, 4, 5), 0.5)
    y = torch.ones(2000, dtype=torch.long)
    r0 = 0.04
    size = get_norm(norm).size
    start = pgd(model, x, y, eps=0.01, step_size=0.0, steps=0, norm=norm, start_eps=r0,
                generator=torch.Generator().manual_seed(0)).x_adv - x
    # the start fills the ball of radius start_eps, far beyond eps (a start is never projected onto eps)
    assert size(start).max() <= r0 + 1e-6 and size(start).max() > 0.95 * r0
    if norm == "linf":  # uniform per coordinate: a quarter of the coordinates beyond r0 / 2 on each side
        assert abs(float((start > r0 / 2).float().mean()) - 0.25) < 0.01
    # eps = inf: three steps of 0.02 along the same direction add up, nothing projects them back
    moved = pgd(model, x[:8], y[:8], eps=float("inf"), step_size=0.02, steps=3, norm=norm, random_start=None).x_adv
    expected = 0.06 * (sign_w if norm == "linf" else sign_w / sign_w.norm())
    torch.testing.assert_close(moved - x[:8], expected.reshape(1, 1, 4, 5).expand(8, 1, 4, 5), atol=1e-6, rtol=0)
    # ... and the box [0, 1] still holds
    edge = pgd(model, torch.ones(8, 1, 4, 5), y[:8], eps=float("inf"), step_size=0.5, steps=2, norm=norm,
               start_eps=0.5, generator=torch.Generator().manual_seed(1)).x_adv
    assert edge.min() >= 0 and edge.max() <= 1


def test_start_eps_and_an_infinite_eps_refuse_what_is_undefined():
    model, _, x, y, _, _ = linear_setup(n=4)
    with pytest.raises(AdvlabError, match="needs start_eps"):
        pgd(model, x, y, eps=float("inf"), step_size=0.01, steps=1)
    for bad in (-0.1, float("nan"), float("inf"), torch.tensor([0.1, -1.0, 0.1, 0.1])):
        with pytest.raises(AdvlabError, match="start_eps"):
            pgd(model, x, y, eps=0.1, step_size=0.01, steps=1, start_eps=bad)
    with pytest.raises(AdvlabError, match="eps must be"):
        pgd(model, x, y, eps=float("nan"), step_size=0.01, steps=1)
    # per-sample start radii: row i's start stays in its own ball
    radii = torch.tensor([0.0, 0.01, 0.05, 0.2])
    start = pgd(model, x, y, eps=0.1, step_size=0.0, steps=0, start_eps=radii).x_adv - x
    assert (start.flatten(1).abs().amax(1) <= radii + 1e-6).all() and start[0].abs().max() == 0
