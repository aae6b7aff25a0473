"""Contracts every evaluation attack keeps, checked for each name registered in ``EVAL_ATTACKS`` (a newly
registered attack is covered by every test here without editing this file), and the same invariances for the
engine itself (``advlab.attacks.pgd`` and ``fgsm`` with per-sample eps and direction).

The invariances (as advertorch's attack tests check them): (a) the inputs are not modified; (b) a batch is
attacked like its samples one by one; (c) the output is in the eps-ball (linf and l2) and in [0, 1];
(d) every submodule's train/eval flag, the parameters and buffers and the global torch RNG are as before, and
the same setup gives the same output. Then the faults these attacks had: labels of any integer dtype, models
that do not return logits (B, C), attacks under ``torch.no_grad()`` / ``torch.inference_mode()`` / with
frozen parameters, and models without input gradients.

The model is ``tiny_net``: conv -> BatchNorm -> Dropout -> flatten -> linear on 1x8x8 inputs, 10 classes. In
eval mode it is an affine map ``W x + b``, which the tests read off the model on basis images (no attack
involved), so each point's exact distance to the decision boundary is known: ``min_k (z_y - z_k) / ||w_y -
w_k||_q`` (q the dual norm). AutoAttack runs as its reduced ``apgd-ce`` version and Square with
``SQUARE_QUERIES`` queries, so that the whole file takes seconds on a CPU. An attack of a kNN classifier
(``KNN_ONLY``: ``knn-guide``) gets ``tiny_net`` as the encoder of a kNN that predicts exactly as it does
(:func:`prototype_knn`), so every test here, written against ``tiny_net``'s decisions, holds for it too.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import fgsm, no_param_grad, pgd
from advlab.errors import AdvlabError
from advlab.evaluation import EVAL_ATTACKS, AttackSetup, knn_attacks
from advlab.models import KNNClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

K = 10  # classes
EPS = {"linf": 0.03, "l2": 0.2}  # the median distance to the boundary of the points below is ~0.035 / ~0.22
SQUARE_QUERIES = 200
ATTACKS = EVAL_ATTACKS.names()  # every registered evaluation attack, at collection time
BLACK_BOX = {"square"}  # attacks that need no gradient: they must work on a model without input gradients
KNN_ONLY = set(knn_attacks())  # attacks of a KNNClassifier only (the registry says): given tiny_net inside prototype_knn
INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.uint8]


def tiny_net(seed: int = 0) -> nn.Sequential:
    """A conv net with a BatchNorm (non-trivial running statistics) and a Dropout, affine in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.25), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, K))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.1, 0.1)
    return net.eval()


def affine_map(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (K, 64), b (K,)) in float64 with ``net(x) = W x + b`` in eval mode, read off basis images."""
    basis = torch.cat([torch.zeros(1, 64), torch.eye(64)]).reshape(65, 1, 8, 8)
    with torch.no_grad():
        f = net(basis).double()
    return (f[1:] - f[0]).T, f[0]


def boundary_distance(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Exact per-sample distance (N,) in ``norm`` from x to the nearest point classified otherwise than y,
    ignoring the box [0, 1] (which only makes points harder to break)."""
    z = x.double().flatten(1) @ W.T + b
    diff = W[y][:, None, :] - W[None]  # (N, K, 64): w_y - w_k
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)
    r = (z.gather(1, y[:, None]) - z) / dual.clamp_min(1e-12)
    r.scatter_(1, y[:, None], float("inf"))
    return r.min(1).values


class Case:
    """Points of unambiguous outcome for one norm: the first half ``robust`` (distance > 2 eps: no point of
    the ball is misclassified), the second half ``breakable`` (distance < eps / 6, reached inside the box:
    any competent attack breaks them). Labels are the clean predictions."""

    def __init__(self, net: nn.Module, norm: str, n: int = 4) -> None:
        W, b = affine_map(net)
        g = torch.Generator().manual_seed(1)
        xs = 0.2 + 0.6 * torch.rand(400, 1, 8, 8, generator=g)  # eps / 6 never reaches the box
        with torch.no_grad():
            ys = net(xs).argmax(1)
        eps = EPS[norm]
        r = boundary_distance(W, b, xs, ys, norm)
        robust = (r > 2 * eps).nonzero().squeeze(1)[:n]
        breakable = (r < eps / 6).nonzero().squeeze(1)[:n]
        assert len(robust) == len(breakable) == n
        idx = torch.cat([robust, breakable])
        self.norm, self.eps, self.x, self.y = norm, eps, xs[idx].contiguous(), ys[idx].contiguous()
        self.expected = torch.arange(2 * n) < n  # correct after the attack


@pytest.fixture
def net():
    """A fresh model per test: an attack that changed it cannot affect the next test."""
    return tiny_net()


@pytest.fixture(scope="module")
def cases():
    return {norm: Case(tiny_net(), norm) for norm in ("linf", "l2")}


def prototype_knn(net: nn.Module) -> KNNClassifier:
    """A kNN over ``net``'s outputs z (B, K) as features: bank one unit vector e_c per class c, k = 1, cosine.
    Its hard vote is argmax_c cos(z, e_c) = argmax_c z_c / ||z||: exactly ``net``'s prediction. ``net`` itself
    is its encoder (its flags, parameters and buffers are what the tests check)."""
    return KNNClassifier(net, torch.eye(K), torch.arange(K), K, k=1, metric="cosine")


def make(name: str, model: nn.Module, norm: str = "linf", eps: float | None = None, seed: int = 0):
    """A fresh evaluation attack ``name`` for ``model``: apgd-ce for AutoAttack, SQUARE_QUERIES for Square, a
    :func:`prototype_knn` over ``model`` for the attacks of a kNN."""
    if name in KNN_ONLY:
        model = prototype_knn(model)
    setup = AttackSetup(model, EPS[norm] if eps is None else eps, norm, torch.device("cpu"), seed, K,
                        autoattack_version="apgd-ce", square_queries=SQUARE_QUERIES)
    return EVAL_ATTACKS.get(name)(setup)


def correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness flags (N,) of the model in eval mode."""
    with torch.no_grad():
        return net.eval()(x).argmax(1) == y


def box_data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with many pixels exactly 0 or 1 (the box binds), labelled with classes 0..n-1."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, 1, 8, 8, generator=g)
    edge = torch.rand(n, 1, 8, 8, generator=g)
    x = torch.where(edge < 0.2, torch.zeros_like(x), torch.where(edge > 0.8, torch.ones_like(x), x))
    return x, torch.arange(n) % K


def module_state(model: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor], list[bool]]:
    """Every submodule's training flag, a copy of the parameters and buffers, every requires_grad flag."""
    return ([m.training for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()])


def assert_same_state(model: nn.Module, before) -> None:
    flags, state, grads = module_state(model)
    assert flags == before[0], "train/eval flags changed"
    assert state.keys() == before[1].keys()
    for k in state:
        assert torch.equal(state[k], before[1][k]), f"{k} changed"
    assert grads == before[2]
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# the registry: every evaluation attack is covered

def test_every_registered_attack_is_covered_by_the_contracts():
    assert ATTACKS == EVAL_ATTACKS.names(), "an attack was registered after this file parametrised its tests"
    assert {"pgd20", "cw20", "pgd20-scaled", "autoattack", "square", "knn-guide"} <= set(ATTACKS)
    assert BLACK_BOX <= set(ATTACKS) and KNN_ONLY <= set(ATTACKS)


# ---------------------------------------------------------------------------------------------------------
# (a) inputs untouched, (c) inside the ball and the box

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_inputs_untouched_and_output_inside_the_ball_and_the_box(name, norm, net):
    x, y = box_data()
    eps = {"linf": 0.1, "l2": 1.0}[norm]
    x0, y0 = x.clone(), y.clone()
    x_adv = make(name, net, norm, eps)(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)  # bit-exact
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv.double() - x.double()).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all(), size.max().item()
    assert not correct(net, x_adv, y).all()  # the attack did something: some points are broken


# ---------------------------------------------------------------------------------------------------------
# (b) a batch is attacked like its samples one by one

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_a_batch_is_attacked_like_its_samples_one_by_one(name, norm, net, cases):
    """The evaluation attacks start from random points drawn from their seeded generator; a batch draws its
    start points in one go, so its row i does not start where sample i alone starts and the adversarial points
    cannot be compared bit for bit. The per-sample correctness flags can, on points whose outcome does not
    depend on the start: the model is affine, half the points are farther than 2 eps from the boundary (no
    point of the ball is misclassified) and half nearer than eps / 6 (broken by any competent attack). So both
    the batch and each sample alone (each from a fresh attack with the same seed) must give exactly the
    analytic flags: strict (a row attacked with another row's label, the batch statistics of BatchNorm, a
    sample left out of the batch all change flags) and not flaky (every run is seeded, and the outcome has a
    margin of a factor 2 to 6 in eps)."""
    case = cases[norm]
    batch = correct(net, make(name, net, norm)(case.x, case.y), case.y)
    alone = torch.cat([correct(net, make(name, net, norm)(case.x[i:i + 1], case.y[i:i + 1]), case.y[i:i + 1])
                       for i in range(len(case.y))])
    assert batch.tolist() == case.expected.tolist()
    assert alone.tolist() == case.expected.tolist()


# ---------------------------------------------------------------------------------------------------------
# (d) model state, global RNG, reproducibility

@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_model_state_and_global_rng_are_restored_and_the_attack_is_reproducible(name, start, cases):
    case = cases["linf"]
    model = tiny_net()
    reference = make(name, model)(case.x, case.y)  # from eval mode
    model.train(start != "eval")
    if start == "mixed":
        model[1].eval()  # BatchNorm in eval mode, Dropout in train mode: must come back exactly
    before = module_state(model)
    torch.manual_seed(1234)  # not the state a reseeding attack (pyautoattack reseeds) would leave behind
    rng = torch.get_rng_state()
    x_adv = make(name, model)(case.x, case.y)
    assert torch.equal(torch.get_rng_state(), rng), "the global torch RNG changed"
    assert_same_state(model, before)  # flags, BatchNorm statistics, parameters
    # the attack runs the model in eval mode whatever the caller's mode, and the same setup gives the same result
    assert torch.equal(x_adv, reference)
    assert torch.equal(make(name, model)(case.x, case.y), reference)


# ---------------------------------------------------------------------------------------------------------
# labels of any integer dtype, models that do not return logits, no_grad / inference_mode / frozen parameters

@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_labels_of_every_integer_dtype_give_the_int64_result(name, net, cases):
    case = cases["linf"]
    reference = make(name, net)(case.x, case.y)
    for dtype in INT_DTYPES:
        assert torch.equal(make(name, net)(case.x, case.y.to(dtype)), reference), dtype
    for bad in (torch.bool, torch.float32):
        with pytest.raises(AdvlabError, match="integer"):
            make(name, net)(case.x, (case.y % 2).to(bad))


class Returns(nn.Module):
    """Returns the logits of ``net`` as a tuple, a dict, the first logit only (B,), or the logits of the first
    image only (1, C) whatever the batch."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        z = self.net(x)
        return {"tuple": (z, z.detach()), "dict": {"logits": z}, "vector": z[:, 0], "one-row": z[:1]}[self.kind]


@pytest.mark.parametrize("kind, named", [("tuple", "tuple"), ("dict", "dict"), ("vector", r"shape \(8,\)"),
                                         ("one-row", r"shape \(1, 10\)")], ids=["tuple", "dict", "vector", "one-row"])
@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_a_model_that_does_not_return_logits_is_an_advlab_error(name, kind, named, net, cases):
    """Before any attack code (pyautoattack included) sees it: pyautoattack would fail with a TypeError or an
    AttributeError of its own."""
    case = cases["linf"]
    with pytest.raises(AdvlabError, match=named) as info:
        make(name, Returns(net, kind))(case.x, case.y)
    assert "returns the logits tensor" in str(info.value)


@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_no_grad_inference_mode_and_frozen_parameters_give_the_same_result(name, net, cases):
    case = cases["l2"]
    reference = make(name, net, "l2")(case.x, case.y)
    with torch.no_grad():
        assert torch.equal(make(name, net, "l2")(case.x, case.y), reference)
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        xi, yi = case.x.clone(), case.y.clone()  # inference tensors
        assert torch.equal(make(name, net, "l2")(xi, yi), reference)
        assert torch.is_inference_mode_enabled()
    with no_param_grad(net):
        assert torch.equal(make(name, net, "l2")(case.x, case.y), reference)
        with torch.no_grad():
            assert torch.equal(make(name, net, "l2")(case.x, case.y), reference)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


class Argmax(nn.Module):
    """The one-hot of ``net``'s prediction: the same decisions, no gradient with respect to the input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return nn.functional.one_hot(self.net(x).argmax(1), K).float()


@pytest.mark.parametrize("name", ATTACKS, ids=ATTACKS)
def test_a_model_without_input_gradients_is_an_advlab_error_for_gradient_attacks(name, net, cases):
    case = cases["linf"]
    model = Argmax(net)
    if name in BLACK_BOX:
        x_adv = make(name, model)(case.x, case.y)
        assert (x_adv - case.x).abs().max() <= EPS["linf"] + 1e-6
        return
    for ctx in (torch.enable_grad, torch.no_grad):
        with ctx(), pytest.raises(AdvlabError, match="does not depend on its input through autograd"):
            make(name, model)(case.x, case.y)


# ---------------------------------------------------------------------------------------------------------
# the engine: pgd and fgsm with per-sample eps and direction

def engine(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
           direction: torch.Tensor, norm: str, random_start: str | None, seed: int | None = 0) -> torch.Tensor:
    """x_adv of pgd (10 steps of eps / 4) or fgsm, with per-sample eps and direction."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    common = dict(eps=eps, direction=direction, norm=norm, random_start=random_start, generator=generator)
    if kind == "pgd":
        return pgd(model, x, y, step_size=eps / 4, steps=10, **common).x_adv
    return fgsm(model, x, y, **common).x_adv


ENGINE = ["pgd", "fgsm"]


def per_sample_settings(n: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample eps (one row 0) and alternating directions +1 / -1."""
    e = torch.linspace(0.5 * eps, eps, n)
    e[1] = 0
    return e, torch.where(torch.arange(n) % 2 == 0, 1, -1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ENGINE)
def test_engine_inputs_untouched_output_in_the_per_sample_ball_and_box(kind, norm, net):
    x, y = box_data()
    eps, direction = per_sample_settings(len(x), {"linf": 0.1, "l2": 1.0}[norm])
    saved = [t.clone() for t in (x, y, eps, direction)]
    x_adv = engine(kind, net, x, y, eps, direction, norm, "uniform")
    assert all(torch.equal(a, b) for a, b in zip((x, y, eps, direction), saved))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv.double() - x.double()).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps.double() + 1e-6).all()
    assert torch.equal(x_adv[1], x[1])  # eps 0
    assert (size[eps > 0] > 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ENGINE)
def test_engine_batch_equals_samples_one_by_one(kind, norm, net, cases):
    """Without a random start the engine is deterministic: each row of the batch equals the sample attacked
    alone with its own eps and direction (to float rounding of batched vs single convolutions). With a random
    start, as for the evaluation attacks, the flags on points of unambiguous outcome: ascent breaks exactly the
    breakable points; descent (direction -1) leaves every point correct."""
    case = cases[norm]
    n = len(case.y)
    eps, direction = torch.full((n,), case.eps), torch.where(torch.arange(n) % 2 == 0, 1, -1)
    eps[3] = case.eps / 2
    batch = engine(kind, net, case.x, case.y, eps, direction, norm, None)
    for i in range(n):
        alone = engine(kind, net, case.x[i:i + 1], case.y[i:i + 1], eps[i:i + 1], direction[i:i + 1], norm, None)
        torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-6, rtol=0)
    for d in (1, -1):
        dirs = torch.full((n,), d)
        flags = correct(net, engine(kind, net, case.x, case.y, torch.full((n,), case.eps), dirs, norm, "uniform"),
                        case.y)
        alone = torch.cat([correct(net, engine(kind, net, case.x[i:i + 1], case.y[i:i + 1], eps[i:i + 1].fill_(
            case.eps), dirs[i:i + 1], norm, "uniform"), case.y[i:i + 1]) for i in range(n)])
        expected = case.expected if d == 1 else torch.ones(n, dtype=torch.bool)
        assert flags.tolist() == expected.tolist() and alone.tolist() == expected.tolist(), d


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
@pytest.mark.parametrize("kind", ENGINE)
def test_engine_restores_model_state_and_rng_and_is_reproducible(kind, start, cases):
    case = cases["l2"]
    n = len(case.y)
    eps, direction = per_sample_settings(n, case.eps)
    model = tiny_net()
    reference = engine(kind, model, case.x, case.y, eps, direction, "l2", "uniform")
    model.train(start != "eval")
    if start == "mixed":
        model[1].eval()
    before = module_state(model)
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    x_adv = engine(kind, model, case.x, case.y, eps, direction, "l2", "uniform")
    assert torch.equal(torch.get_rng_state(), rng)  # the start is drawn from the given generator
    assert_same_state(model, before)
    assert torch.equal(x_adv, reference)  # model_mode="eval" by default: the caller's mode does not matter
    # without a generator the start comes from the global RNG: reproducible by seeding it
    torch.manual_seed(5)
    a = engine(kind, model, case.x, case.y, eps, direction, "l2", "uniform", seed=None)
    torch.manual_seed(5)
    b = engine(kind, model, case.x, case.y, eps, direction, "l2", "uniform", seed=None)
    assert torch.equal(a, b)
