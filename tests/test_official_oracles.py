"""Every preset's objective, CAAT's meta step and FRL's rules against transcriptions of the papers' official code.

Each oracle below is written here from the official repository (file and line cited beside it), in plain torch
on the test's own tensors; none calls the advlab function it checks. Where advlab departs from the code on
purpose (docs/methods/caat.md, "Differences from the official code"), the oracle applies that documented
difference and says so at the line. Repositories (read at these commits):

- xiaolingzhou98/CAAT 9186f6d (CAAT and FRL: ``utils.py``, ``meta.py``, ``MLP.py``, ``CAAT.py``, ``NLT_CIFAR.py``)
- yaodongyu/TRADES 6e8e11b (``trades.py``), YisenWang/MART 2d83e17 (``mart.py``; its oracle is in
  tests/test_method_values.py), MadryLab/cifar10_challenge f15682d (``model.py``, ``train.py``)
- google-research/simclr 383d414 (``objective.py``), Kim-Minseon/RoCL b6d5185 (``src/loss.py``,
  ``src/attack_lib.py``)
- coriverchen/Self-supervised-Adversarial-Training c25c123 (``CIFAR_SAT_AMDIM.ipynb``, cell 5)
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.recipes import RecipeEnv, create_recipe, compute_loss
from advlab.recipes.base import Step, View, combine
from advlab.recipes.recipe import part_class
from advlab.recipes.weighting.frl import FRLDuals, FRLOptions, class_errors

C = 10  # the CAAT code hard-codes 10 classes (utils.py lines 13, 109, 125, 139)


# =============================================================================================================
# transcriptions of the CAAT code (xiaolingzhou98/CAAT)
# =============================================================================================================
def official_cost_sensitive(lam0, lam1, lam2):
    """utils.py lines 134-156: diff0/diff1 = 1/10 + 9/10 lam_i - 1/10 sum_{j != i} lam_j; diff2 =
    clamp(exp(2 lam2), 0.98, 2.5)."""
    diff0 = torch.ones(C, dtype=torch.float64) / 10
    diff1 = torch.ones(C, dtype=torch.float64) / 10
    for i in range(C):
        for j in range(C):
            diff0[i] += 9 / 10 * lam0[i] if j == i else -1 / 10 * lam0[j]
            diff1[i] += 9 / 10 * lam1[i] if j == i else -1 / 10 * lam1[j]
    return diff0, diff1, torch.clamp(torch.exp(2 * lam2), min=0.98, max=2.5)


def official_adv_feature(logits, loss_vector, labels, loss_tensor_last, class_rate):
    """utils.py lines 11-31 (``adv_feature``), with the graph of ``logits`` and ``loss_vector``."""
    one_hot = F.one_hot(labels, num_classes=C).to(logits.dtype)
    rate = one_hot @ class_rate.unsqueeze(1)
    last = one_hot @ loss_tensor_last.unsqueeze(1)
    p = F.softmax(logits, dim=1)
    p_label = torch.sum(p * one_hot, dim=1)
    grad_norm = torch.norm(one_hot - p, dim=1)
    others_max = p[one_hot != 1].reshape(p.size(0), -1).max(dim=1).values
    entropy = torch.sum(p * F.log_softmax(logits, dim=1), dim=1)
    return torch.cat([loss_vector.unsqueeze(1), last, grad_norm.unsqueeze(1), (p_label - others_max).unsqueeze(1),
                      entropy.unsqueeze(1), rate], dim=1)


def official_mlp(params, x, temperature):
    """MLP.py lines 184-197 (``MLP(in_size=6)``, one hidden layer): batch norm (train mode: batch statistics,
    biased variance, eps 1e-5), fc + ReLU, fc to 2, softmax of x / temperature (the code's 0.001)."""
    mean, var = x.mean(0), x.var(0, unbiased=False)
    h = (x - mean) / torch.sqrt(var + 1e-5) * params["net.0.weight"] + params["net.0.bias"]
    h = torch.relu(h @ params["net.1.weight"].T + params["net.1.bias"])
    return F.softmax((h @ params["net.3.weight"].T + params["net.3.bias"]) / temperature, dim=1)


def official_caat_adv(model, x_natural, y_natural, weight, epsilon, num_steps, step_size, noise_adv, noise_anti):
    """utils.py lines 242-280 (``caat_adv``); the starts' 0.001 N(0, I) draws are arguments (lines 262-263)."""
    new_eps = (epsilon * weight).view(weight.shape[0], *([1] * (x_natural.dim() - 1)))
    x_adv = x_natural.detach() + 0.001 * noise_adv
    x_anti = x_natural.detach() + 0.001 * noise_anti
    for _ in range(num_steps):
        x_adv.requires_grad_()
        x_anti.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1),
                               reduction="sum")
            anti_loss = F.cross_entropy(F.log_softmax(model(x_anti), dim=1), y_natural)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        anti_grad = torch.autograd.grad(anti_loss, [x_anti])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_anti = x_anti.detach() - step_size * torch.sign(anti_grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - new_eps), x_natural + new_eps)
        x_anti = torch.min(torch.max(x_anti, x_natural - new_eps), x_natural + new_eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
        x_anti = torch.clamp(x_anti, 0.0, 1.0)
    return x_adv, x_anti


def kl_rows(logits_clean, logits_adv):
    """``torch.sum(KLDivLoss(reduction='none')(log_softmax(adv), softmax(clean)), 1)``: utils.py lines 312-313."""
    return torch.sum(F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="none"), 1)


def official_caat_loss(weights, loss_natural, loss_bndy, loss_anti, weight0, weight1, beta):
    """utils.py lines 360-361 (the model's loss; the pseudo loss of lines 315-316 is the same expression)."""
    return (torch.sum(weights[:, 0] * loss_natural * weight0) / torch.sum(weight0)
            + beta * torch.sum(weights[:, 0] * loss_bndy * weight1) / torch.sum(weight1)) \
        + torch.mean(weights[:, 1] * loss_anti)


def official_meta_sgd_step(params, grads, optimizer, param_objects):
    """meta.py lines 21-44 (``MetaSGD.meta_step``) after ``load_state_dict(optimizer.state_dict())`` (utils.py
    lines 319-321): the optimiser's momentum buffers, weight decay, dampening and Nesterov."""
    group = optimizer.param_groups[0]
    out = {}
    for (name, w), g, p in zip(params.items(), grads, param_objects):
        grad_wd = g + group["weight_decay"] * w.detach() if group["weight_decay"] else g
        state = optimizer.state.get(p, {})
        if group["momentum"] != 0 and "momentum_buffer" in state:
            grad_b = state["momentum_buffer"] * group["momentum"] + (1 - group["dampening"]) * grad_wd
        else:
            grad_b = grad_wd
        grad_n = grad_wd + group["momentum"] * grad_b if group["nesterov"] else grad_b
        out[name] = w.detach() - group["lr"] * grad_n
    return out


# =============================================================================================================
# a small float64 setting for CAAT
# =============================================================================================================
D, H = 12, 16


class TwoLayer(nn.Module):
    """tanh MLP (smooth: every second derivative the meta-gradient reads is non-zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D, H)
        self.fc2 = nn.Linear(H, C)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def forward_with(params, x):
    """The same network, written out, on parameters ``params`` (the oracle's own forward)."""
    h = torch.tanh(x.flatten(1) @ params["fc1.weight"].T + params["fc1.bias"])
    return h @ params["fc2.weight"].T + params["fc2.bias"]


EPS, STEPS, BETA = 0.08, 3, 1.5
LAM0 = torch.tensor([0.05, 0.0, 0.1, 0.0, 0.02, 0.0, 0.0, 0.08, 0.0, 0.01], dtype=torch.float64)
LAM1 = torch.tensor([0.0, 0.07, 0.0, 0.03, 0.0, 0.12, 0.0, 0.0, 0.04, 0.0], dtype=torch.float64)
LAM2 = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.45, -0.05, 0.2, 0.05, -0.3, 0.15], dtype=torch.float64)
CLASS_LOSS = torch.arange(C, dtype=torch.float64) / 4 + 0.5  # exact in float32, as advlab keeps it
COUNTS = [24, 20, 16, 14, 12, 12, 10, 8, 7, 5]  # 128 in all: the class prior is exact in float32 too


def caat_setting(meta_features="attached", temperature=1.0, warmup_epochs=0, meta_size=20):
    """A float64 model with momentum buffers, its SGD optimiser, a caat recipe (random starts from the global
    RNG, ReMargin bounds) with non-trivial FRL duals and class losses, a training batch and a meta split."""
    torch.manual_seed(0)
    model = TwoLayer().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, dampening=0.1, weight_decay=5e-3)
    for _ in range(2):  # fill the momentum buffers
        opt.zero_grad()
        F.cross_entropy(model(torch.rand(16, 1, 3, 4, dtype=torch.float64)), torch.randint(0, C, (16,))).backward()
        opt.step()
    g = torch.Generator().manual_seed(1)
    x = 0.1 + 0.8 * torch.rand(20, 1, 3, 4, generator=g, dtype=torch.float64)  # starts stay inside [0, 1]
    y = torch.arange(20) % C
    meta_images = (255 * (0.1 + 0.8 * torch.rand(meta_size, 1, 3, 4, generator=g))).round().to(torch.uint8)
    meta_labels = torch.arange(meta_size) % C
    env = RecipeEnv(num_train=20, num_classes=C, epochs=4, eps=EPS, norm="linf", device=torch.device("cpu"),
                    seed=0, class_counts=COUNTS, meta_images=meta_images, meta_labels=meta_labels, model=model,
                    optimizer=opt)
    spec = {"labels": ("hard", {}),
            "perturbation": ("caat", {"steps": STEPS, "bound": "remargin"}),
            "weighting": ("caat", {"temperature": temperature, "meta_every": 10 ** 6, "meta_batch_size": meta_size,
                                   "meta_features": meta_features, "warmup_epochs": warmup_epochs}),
            "objective": ("caat", {"beta": BETA})}
    recipe = create_recipe(spec, env)
    w = recipe.weighting
    w.duals.lam0, w.duals.lam1, w.duals.lam2 = LAM0.clone(), LAM1.clone(), LAM2.clone()
    w.class_loss = CLASS_LOSS.float().clone()
    w.meta_net.double()
    return model, opt, recipe, x, y, meta_images, meta_labels


def official_meta_gradient(model, opt, meta_params, temperature, x, y, meta_x, meta_y, noise, meta_noise,
                           attached=True):
    """The meta-gradient of CAAT's bi-level step as utils.py lines 297-344 compute it, w.r.t. ``meta_params``.

    ``noise``/``meta_noise``: the (2B, ...) standard normal draws of the starts (adversarial rows first).
    ``attached=False`` detaches the features (advlab's ``meta_features: detached``, not the code's)."""
    diff0, diff1, diff2 = official_cost_sensitive(LAM0, LAM1, LAM2)
    weight0, weight1, weight2 = diff0[y], diff1[y], diff2[y]  # match_weight, lines 119-130
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    class_rate = counts / counts.sum()  # CAAT.py line 38
    # lines 298-300: a pseudo model holding a copy of the weights
    W = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    pseudo_logits = forward_with(W, x)  # line 302
    loss_natural = F.cross_entropy(pseudo_logits, y, reduction="none")  # line 304
    feature = official_adv_feature(pseudo_logits, loss_natural, y, CLASS_LOSS, class_rate)  # line 307
    if not attached:
        feature = feature.detach()
    pseudo_weight = official_mlp(meta_params, feature, temperature)  # line 308
    b = len(x)
    frozen = {n: w.detach() for n, w in W.items()}
    x_adv, x_anti = official_caat_adv(lambda t: forward_with(frozen, t), x, y, weight2, EPS, STEPS, 0.2 * EPS,
                                      noise[:b], noise[b:])  # line 310
    loss_bndy = kl_rows(forward_with(W, x), forward_with(W, x_adv))  # lines 312-313
    loss_anti = F.cross_entropy(forward_with(W, x_anti), y, reduction="none")  # line 314
    pseudo_loss = official_caat_loss(pseudo_weight, loss_natural, loss_bndy, loss_anti, weight0, weight1, BETA)
    grads = torch.autograd.grad(pseudo_loss, list(W.values()), create_graph=True)  # line 318
    new = official_meta_sgd_step(W, grads, opt, list(model.parameters()))  # lines 319-321
    # lines 330-341 on the meta batch. advlab's documented difference (docs/methods/caat.md, "Meta batch"): the
    # meta batch's own labels give its class weights and bounds; the code reuses the training batch's here.
    m0, m1, m2 = diff0[meta_y], diff1[meta_y], diff2[meta_y]
    new_frozen = {n: w.detach() for n, w in new.items()}
    m = len(meta_x)
    meta_x_adv, meta_x_anti = official_caat_adv(lambda t: forward_with(new_frozen, t), meta_x, meta_y, m2, EPS, STEPS,
                                                0.2 * EPS, meta_noise[:m], meta_noise[m:])  # line 335
    meta_loss_nat = F.cross_entropy(forward_with(new, meta_x), meta_y, reduction="none")  # lines 332-334
    meta_loss_bndy = kl_rows(forward_with(new, meta_x), forward_with(new, meta_x_adv))  # lines 337-338
    meta_loss_anti = F.cross_entropy(forward_with(new, meta_x_anti), meta_y)  # line 339
    meta_loss = (torch.sum(meta_loss_nat * m0) / torch.sum(m0)
                 + BETA * torch.sum(meta_loss_bndy * m1) / torch.sum(m1)) + meta_loss_anti  # lines 340-341
    return meta_loss, torch.autograd.grad(meta_loss, list(meta_params.values()))


def advlab_meta_gradient(recipe, model, x, y, seed_views, seed_meta):
    """advlab's meta loss and its gradient w.r.t. the meta-net's parameters, views drawn from the given seeds."""
    w = recipe.weighting
    torch.manual_seed(seed_views)
    step = compute_loss(model.train(), x, y, torch.arange(len(y)), 0, recipe)  # meta_every is huge: no meta step
    zeta = w.features(step.outputs["clean"].detach(), y)
    torch.manual_seed(seed_meta)
    meta_loss = w.meta_step_loss(step, zeta)
    return step, meta_loss, torch.autograd.grad(meta_loss, list(w.meta_net.parameters()))


def noise_of(seed, shape):
    torch.manual_seed(seed)
    return torch.randn(shape, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
@pytest.mark.parametrize("meta_features", ["attached", "detached"])
def test_caat_meta_gradient_equals_the_official_look_ahead(meta_features, temperature, one_thread):
    model, opt, recipe, x, y, meta_images, meta_labels = caat_setting(meta_features, temperature)
    w = recipe.weighting
    w.meta_generator.manual_seed(123)
    meta_params = {n: p.detach().clone().requires_grad_(True) for n, p in w.meta_net.named_parameters()}
    step, loss, grads = advlab_meta_gradient(recipe, model, x, y, seed_views=5, seed_meta=6)

    # the code's meta loader shuffles the split (NLT_CIFAR.py line 116): the permutation of the same generator
    order = torch.randperm(len(meta_labels), generator=torch.Generator().manual_seed(123))
    meta_x, meta_y = meta_images[order].double() / 255, meta_labels[order]
    expected_loss, expected = official_meta_gradient(
        model, opt, meta_params, temperature, x, y, meta_x, meta_y, noise_of(5, (40, 1, 3, 4)),
        noise_of(6, (40, 1, 3, 4)), attached=meta_features == "attached")
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-10)
    for name, got, want in zip(meta_params, grads, expected):  # float64 rounding only (measured: below 1e-11)
        assert float((got - want).abs().max()) <= 1e-9 * float(want.abs().max()), (name, (got - want).abs().max())
    assert max(float(g.abs().max()) for g in expected) > 1e-6  # a meta-gradient that is there

    # the two forms differ here, so each test above tells a wrong form apart
    other = official_meta_gradient(model, opt, meta_params, temperature, x, y, meta_x, meta_y,
                                   noise_of(5, (40, 1, 3, 4)), noise_of(6, (40, 1, 3, 4)),
                                   attached=meta_features != "attached")[1]
    gap = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(other, expected))
    assert gap > 1e-3, gap


def test_caat_views_are_the_official_caat_adv(one_thread):
    model, opt, recipe, x, y, _, _ = caat_setting()
    torch.manual_seed(5)
    step = compute_loss(model.train(), x, y, torch.arange(20), 0, recipe)
    noise = noise_of(5, (40, 1, 3, 4))
    params = {n: p.detach() for n, p in model.named_parameters()}
    x_adv, x_anti = official_caat_adv(lambda t: forward_with(params, t), x, y,
                                      official_cost_sensitive(LAM0, LAM1, LAM2)[2][y], EPS, STEPS, 0.2 * EPS,
                                      noise[:20], noise[20:])
    assert torch.allclose(step.views["adv"].x, x_adv, atol=1e-12)
    assert torch.allclose(step.views["anti"].x, x_anti, atol=1e-12)
    assert float((x_adv - x).abs().max()) > 0.5 * EPS  # the views moved


@pytest.mark.parametrize("warmup_epochs, epoch", [(0, 0), (2, 1)])
def test_caat_loss_assembly_and_warm_up_weights_are_the_official_formula(warmup_epochs, epoch, one_thread):
    """utils.py lines 346-361: the model's loss with the meta-net's (a, b) of the clean features, FRL's w0, w1;
    during advlab's warm-up (TRADES with FRL's weights: docs/methods/caat.md) the same expression with a = 1,
    b = 0."""
    model, opt, recipe, x, y, _, _ = caat_setting(temperature=0.2, warmup_epochs=warmup_epochs)
    w = recipe.weighting
    meta_params = {n: p.detach().clone() for n, p in w.meta_net.named_parameters()}
    torch.manual_seed(5)
    step = compute_loss(model.train(), x, y, torch.arange(20), epoch, recipe)

    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    diff0, diff1, diff2 = official_cost_sensitive(LAM0, LAM1, LAM2)
    noise = noise_of(5, (40, 1, 3, 4))
    x_adv, x_anti = official_caat_adv(lambda t: forward_with(params, t), x, y, diff2[y], EPS, STEPS, 0.2 * EPS,
                                      noise[:20], noise[20:])  # line 349
    logits = forward_with(params, x)  # line 346
    loss_natural = F.cross_entropy(logits, y, reduction="none")  # line 348
    loss_bndy = kl_rows(forward_with(params, x), forward_with(params, x_adv))  # lines 351-352
    loss_anti = F.cross_entropy(forward_with(params, x_anti), y, reduction="none")  # lines 350, 353
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    if epoch < warmup_epochs:
        weights = torch.stack([torch.ones(20), torch.zeros(20)], 1).double()
    else:
        feature = official_adv_feature(logits, loss_natural, y, CLASS_LOSS, counts / counts.sum())  # line 357
        weights = official_mlp(meta_params, feature, 0.2)  # line 358
        assert 0.05 < float(weights[:, 1].mean()) < 0.95  # both terms carry weight on this batch
    expected = official_caat_loss(weights, loss_natural, loss_bndy, loss_anti, diff0[y], diff1[y], BETA)
    assert float(step.loss) == pytest.approx(float(expected), rel=1e-10)


# =============================================================================================================
# FRL as the CAAT code runs it
# =============================================================================================================
def test_frl_r1_halves_as_the_code_s_epoch_loop():
    """CAAT.py lines 69, 79-87: ``rate1`` halved when the 1-indexed ``now_epoch`` is a multiple of 40, before
    that epoch's ``frl_train``; advlab's 0-indexed epoch e is the code's now_epoch e + 1."""
    rate1, used = 0.05, []
    for now_epoch in range(1, 131):
        if now_epoch % 40 == 0:
            rate1 = rate1 / 2
        used.append(rate1)
    clean = torch.tensor([0.5] + [0.0] * (C - 1), dtype=torch.float64)
    gamma0 = float(clean[0] - clean.mean() - 0.07)  # utils.py line 382
    for epoch in range(130):
        duals = FRLDuals(C, FRLOptions())
        duals.update(epoch, clean, torch.zeros(C, dtype=torch.float64))
        assert float(duals.lam0[0]) == pytest.approx(used[epoch] * gamma0, rel=1e-12), epoch  # line 394


class Wavy(nn.Module):
    """A smooth 3-class model on 4 pixels whose PGD path turns (sin features), so first-miss and last iterate
    disagree on some points."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.a = nn.Parameter(torch.randn(8, 4, generator=g, dtype=torch.float64) * 15)
        self.b = nn.Parameter(torch.randn(3, 8, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.sin(x.flatten(1) @ self.a.T) @ self.b.T


def official_pgd_attack(model, X, y, epsilon, num_steps, step_size, start):
    """utils.py lines 33-67 (``pgd_attack``); the uniform draw of line 44 is ``start`` (in [-eps, eps])."""
    X_pgd = torch.clamp(X + start, 0, 1.0).requires_grad_(True)
    for _ in range(num_steps):
        loss = nn.CrossEntropyLoss()(model(X_pgd), y)
        grad = torch.autograd.grad(loss, [X_pgd])[0]
        X_pgd = X_pgd + step_size * grad.sign()
        eta = torch.clamp(X_pgd.data - X.data, -epsilon, epsilon)
        X_pgd = torch.clamp(X.data + eta, 0, 1).detach().requires_grad_(True)
    return X_pgd.detach()


def official_class_errors(pred, pred_adv, labels, num_classes):
    """utils.py lines 107-117 (``in_class``) and 196-205: clean error 1 - acc, boundary error acc - acc_adv."""
    acc = torch.zeros(num_classes, dtype=torch.float64)
    acc_adv = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(num_classes):
        in_class = (labels == i).double()
        acc[i] = float(((pred == labels).double() * in_class).sum() / in_class.sum())
        acc_adv[i] = float(((pred_adv == labels).double() * in_class).sum() / in_class.sum())
    return 1 - acc, acc - acc_adv


def test_frl_errors_are_the_code_s_evaluate_last_iterate_and_acc_minus_acc_adv(one_thread):
    model = Wavy()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (300,), generator=g)
    eps, steps = 0.15, 20
    clean, boundary = class_errors(model, x, y, 3, eps, "linf", steps, 100, torch.device("cpu"),
                                   torch.Generator().manual_seed(11))

    start_gen = torch.Generator().manual_seed(11)  # the uniform start of each batch of 100, in order
    preds, preds_adv, ever_wrong = [], [], []
    for s in range(0, 300, 100):
        xb, yb = x[s:s + 100], y[s:s + 100]
        start = (2 * torch.rand(xb.shape, generator=start_gen, dtype=torch.float64) - 1) * eps
        x_adv = official_pgd_attack(model, xb, yb, eps, steps, eps / 4, start)
        preds.append(model(xb).argmax(1))
        preds_adv.append(model(x_adv).argmax(1))
        # whether some iterate was wrong (advlab's former rule stopped there), to show the batch tells them apart
        xi, ever = torch.clamp(xb + start, 0, 1), torch.zeros(100, dtype=torch.bool)
        for _ in range(steps):
            xi = xi.requires_grad_(True)
            logits = model(xi)
            ever |= logits.argmax(1) != yb
            grad = torch.autograd.grad(F.cross_entropy(logits, yb), [xi])[0]
            xi = torch.clamp(xb + torch.clamp(xi.detach() + eps / 4 * grad.sign() - xb, -eps, eps), 0, 1)
        ever_wrong.append(ever | (model(xi).argmax(1) != yb))
    want_clean, want_boundary = official_class_errors(torch.cat(preds), torch.cat(preds_adv), y, 3)
    assert torch.allclose(clean, want_clean, atol=1e-12)
    assert torch.allclose(boundary, want_boundary, atol=1e-12)
    # the batch holds both kinds of point on which advlab's former rule (first misclassified iterate, clean AND
    # not adv) differs from the code's: wrong at some iterate but right at the last; wrong clean, right at the last
    clean_ok, last_ok, ever = torch.cat(preds) == y, torch.cat(preds_adv) == y, torch.cat(ever_wrong)
    assert int((clean_ok & ever & last_ok).sum()) >= 3 and int((~clean_ok & last_ok).sum()) >= 3


# =============================================================================================================
# every preset's objective
# =============================================================================================================
def small_env(num_classes=3) -> RecipeEnv:
    return RecipeEnv(num_train=8, num_classes=num_classes, epochs=2, eps=0.1, norm="linf",
                     device=torch.device("cpu"), seed=0)


def objective_recipe(objective, perturbation=("pgd", {})):
    return create_recipe({"labels": ("hard", {}), "perturbation": perturbation, "weighting": ("uniform", {}),
                         "objective": objective}, small_env())


def objective_part(name, **options):
    """The registered objective ``name`` built alone (the self-supervised ones need views no plain recipe
    makes here)."""
    cls = part_class("objective", name)
    return cls(cls.Options(**options), small_env())


def random_logits(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_ce_objective_is_madrys_mean_cross_entropy_on_the_adversarial_batch():
    """MadryLab/cifar10_challenge model.py lines 94-97 (``sparse_softmax_cross_entropy_with_logits``,
    ``mean_xent``), train.py lines 51 and 137: the mean cross-entropy of the adversarial batch is minimised."""
    part = objective_recipe(("ce", {})).objective
    logits, y = random_logits(0, 6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    step = Step(model=None, x=torch.zeros(6, 1), y=y, index=torch.arange(6), epoch=0)
    step.outputs, step.loss_targets = {"adv": logits}, {"adv": y}
    loss = combine(part.terms(step), part.coefficients(), {})
    expected = torch.mean(-torch.log(torch.exp(logits).gather(1, y[:, None]).squeeze(1) / torch.exp(logits).sum(1)))
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)


def test_trades_objective_is_the_official_trades_loss():
    """yaodongyu/TRADES trades.py lines 79-83: CE(f(x), y) + beta (1/B) KLDivLoss(sum)(log_softmax(f(x_adv)),
    softmax(f(x)))."""
    part = objective_recipe(("trades", {"beta": 6.0}), ("pgd", {"loss": "kl"})).objective
    clean, adv, y = random_logits(1, 5, 3), random_logits(2, 5, 3), torch.tensor([0, 2, 1, 1, 0])
    step = Step(model=None, x=torch.zeros(5, 1), y=y, index=torch.arange(5), epoch=0)
    step.outputs, step.loss_targets = {"clean": clean, "adv": adv}, {"clean": y, "adv": y}
    loss = combine(part.terms(step), part.coefficients(), {})
    loss_natural = F.cross_entropy(clean, y)
    loss_robust = (1.0 / 5) * F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="sum")
    assert float(loss) == pytest.approx(float(loss_natural + 6.0 * loss_robust), rel=1e-10)


def simclr_nt_xent(hidden, temperature):
    """google-research/simclr objective.py lines 53-86 (``add_contrastive_loss``, one replica, weights 1):
    loss_a + loss_b, each the mean softmax cross-entropy of [logits_ab, logits_aa] (resp. [ba, bb]) with the
    diagonal of aa, bb masked by LARGE_NUM = 1e9 (line 26)."""
    hidden = F.normalize(hidden, dim=-1)
    h1, h2 = torch.chunk(hidden, 2, 0)
    b = len(h1)
    labels = torch.arange(b)
    masks = torch.eye(b, dtype=hidden.dtype)
    logits_aa = h1 @ h1.T / temperature - masks * 1e9
    logits_bb = h2 @ h2.T / temperature - masks * 1e9
    logits_ab = h1 @ h2.T / temperature
    logits_ba = h2 @ h1.T / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    return loss_a + loss_b


def rocl_nt_xent(outputs, temperature=0.5):
    """Kim-Minseon/RoCL src/loss.py lines 53-79 (``pairwise_similarity``, ``NT_xent`` with adv_type 'None'):
    the mean over the 2N anchors of -log(exp(s_ip) / sum_{k != i} exp(s_ik)), with RoCL's 1e-8 terms."""
    n2 = len(outputs)
    n = n2 // 2
    norm = outputs / (outputs.norm(dim=1).view(n2, 1) + 1e-8)
    sim = (1.0 / temperature) * norm @ norm.T
    e = torch.exp(sim) * (1 - torch.eye(n2, dtype=outputs.dtype))
    nt = -torch.log(e / (torch.sum(e, dim=1).view(n2, 1) + 1e-8) + 1e-8)
    return (1.0 / n2) * torch.sum(torch.diag(nt[0:n, n:]) + torch.diag(nt[n:, 0:n]))


def contrastive_step(names, seed, b=6, d=5):
    z = {name: random_logits(seed + i, b, d) for i, name in enumerate(names)}
    step = Step(model=None, x=torch.zeros(b, 1), y=torch.zeros(b, dtype=torch.long), index=torch.arange(b), epoch=0)
    step.outputs, step.loss_targets = z, {}
    return step, z


def test_contrastive_objective_is_simclr_s_and_rocl_s_nt_xent():
    """SimCLR's loss is the sum of its two directions, twice the mean over anchors that advlab minimises (and
    that RoCL's ``NT_xent`` returns)."""
    part = objective_part("contrastive", temperature=0.5)
    step, z = contrastive_step(("view1", "view2"), 10)
    loss = combine(part.terms(step), part.coefficients(), {})
    hidden = torch.cat([z["view1"], z["view2"]])
    assert float(loss) == pytest.approx(float(simclr_nt_xent(hidden, 0.5)) / 2, rel=1e-6)
    assert float(loss) == pytest.approx(float(rocl_nt_xent(hidden, 0.5)), rel=1e-6)


def test_contrastive_adv_objective_is_rocl_s_pair_losses():
    """``contrastive`` NT-Xent(view1, view2) (RoCL src/loss.py lines 53-79) plus adv_weight times RoCL's
    regulariser NT-Xent(adv, view2) (src/attack_lib.py lines 170-177, ``regularize_to='other'``, weight
    1 / adv_weight)."""
    part = objective_part("contrastive-adv", temperature=0.5, adv_weight=0.7)
    step, z = contrastive_step(("view1", "view2", "adv"), 20)
    loss = combine(part.terms(step), part.coefficients(), {})
    expected = rocl_nt_xent(torch.cat([z["view1"], z["view2"]])) \
        + (1.0 / (1 / 0.7)) * rocl_nt_xent(torch.cat([z["adv"], z["view2"]]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("fooled", [[True, False, True, True, False, True], [False, True, False, False, False, False]])
def test_ssat_objective_keeps_the_notebook_s_successful_pairs(fooled):
    """coriverchen/Self-supervised-Adversarial-Training CIFAR_SAT_AMDIM.ipynb cell 5: ``ind = np.where(
    y_pred.argmax(1) != y_ori)``, only the x' that fool the kNN and their x enter the MI loss of (x, x'). advlab's
    MI bound is SimCLR's NT-Xent (objective.py lines 53-86, half of it: the mean over anchors; docs/methods/
    ssat.md), not AMDIM's NCE; with fewer than two kept pairs (no negative) the term is 0 (the notebook would
    pass one pair twice or an empty batch)."""
    part = objective_part("ssat", temperature=0.5)
    step, z = contrastive_step(("clean", "adv"), 30)
    keep = torch.tensor(fooled)
    step.views = {"adv": View(x=torch.zeros(6, 1), fooled=keep)}
    loss = combine(part.terms(step), part.coefficients(), {})
    ind = keep.nonzero().squeeze(1)
    if len(ind) < 2:
        assert float(loss) == 0.0
        return
    expected = simclr_nt_xent(torch.cat([z["clean"][ind], z["adv"][ind]]), 0.5) / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


# =============================================================================================================
# the kNN evaluation attack knn-guide: its stopping rule
# =============================================================================================================
def test_knn_guide_stops_each_point_at_its_first_iterate_the_hard_vote_gets_wrong(one_thread):
    """advlab's own ``knn-guide`` (docs/methods/ssat.md; the paper's attack code is missing): guides = the m
    nearest bank rows of the most similar other class, PGD up the mean cosine to them, each point returned at
    its FIRST iterate the kNN's hard vote misclassifies, as PGD-20 on logits. The hard vote is DkNN's count of
    the k nearest labels (chawins/knn-defense lib/dknn.py lines 216-239, ``classify``); two classes and k = 3
    make count ties impossible. Written out here on a linear encoder, float64."""
    from advlab.evaluation import AttackSetup
    from advlab.evaluation.knn_attack import GuideAttack
    from advlab.models import KNNClassifier
    from advlab.models.knn import encode

    g = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.35, 0.65])[:, None] + 0.1 * (torch.rand(2, 16, generator=g) - 0.5)

    def clusters(n):
        y = torch.arange(n) % 2
        return (levels[y] + 0.03 * torch.randn(n, 16, generator=g)).clamp(0, 1).reshape(n, 1, 4, 4), y

    xb, yb = clusters(40)
    x, y = clusters(24)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    knn = KNNClassifier(encoder, encode(encoder, xb), yb, 2, k=3, metric="cosine")
    eps, steps, step_size = 0.3, 30, 0.01  # small steps: the first wrong iterate lies well inside the ball
    attack = GuideAttack(AttackSetup(knn, eps, "linf", torch.device("cpu"), 4, 2), steps=steps, step_size=step_size)
    x_adv = attack(x, y)

    W, b = encoder[1].weight.detach().double(), encoder[1].bias.detach().double()
    bank = F.normalize(encode(encoder, xb).double(), dim=1)

    def features(images):
        return images.flatten(1).double() @ W.T + b

    def hard_vote(images):  # DkNN: the k nearest rows' label counts, argmax
        sims = F.normalize(features(images), dim=1) @ bank.T
        nearest = sims.topk(3, dim=1).indices
        counts = torch.stack([(yb[nearest] == c).sum(1) for c in range(2)], 1)
        return counts.argmax(1)

    f0 = F.normalize(features(x), dim=1)
    guides = torch.stack([bank[(yb == 1 - int(y[i])).nonzero().squeeze(1)][
        (f0[i] @ bank[yb == 1 - int(y[i])].T).topk(3).indices] for i in range(len(y))])  # m = k = 3 rows of the other class
    start = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) - 1) * eps  # uniform, seeded
    xi = torch.clamp(x.double() + start.double(), 0, 1)
    done = torch.zeros(len(y), dtype=torch.bool)
    out = xi.clone()
    stopped_at = torch.full((len(y),), steps)
    for k in range(steps):
        wrong = (hard_vote(xi) != y) & ~done
        out[wrong], stopped_at[wrong] = xi[wrong], k
        done |= wrong
        xi = xi.detach().requires_grad_(True)
        objective = (F.normalize(features(xi), dim=1)[:, None, :] * guides).sum(2).mean(1)  # mean cosine to guides
        grad = torch.autograd.grad(objective.sum(), [xi])[0]
        xi = torch.clamp(x.double() + torch.clamp(xi.detach() + step_size * grad.sign() - x.double(), -eps, eps), 0, 1)
    out[~done] = xi[~done]  # never wrong before the last step: the last iterate
    assert torch.allclose(x_adv.double(), out, atol=1e-5)
    early = (stopped_at > 0) & (stopped_at < steps - 1)
    assert early.sum() >= 3  # points stopped mid-way, after moving
    assert float((xi.detach() - out)[early].abs().amax()) > 2 * step_size  # going on would have moved them further


def test_caat_meta_batches_follow_the_code_s_meta_loader():
    """xiaolingzhou98/CAAT NLT_CIFAR.py line 116: ``DataLoader(meta_dataset, batch_size=meta_batch,
    shuffle=True, drop_last=True)``; utils.py line 288: a new iterator at the start of every epoch; lines
    324-328: a new one when it is exhausted. A shuffled pass is ``torch.randperm(n, generator)`` (torch's
    RandomSampler), cut into full batches."""
    n, size = 20, 6
    meta_images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    env = RecipeEnv(num_train=8, num_classes=C, epochs=3, eps=0.1, norm="linf", device=torch.device("cpu"),
                    meta_images=meta_images, meta_labels=torch.arange(n) % C)
    recipe = create_recipe({"labels": ("hard", {}), "perturbation": ("caat", {}),
                           "weighting": ("caat", {"meta_batch_size": size}), "objective": ("caat", {})}, env)
    w = recipe.weighting
    w.meta_generator.manual_seed(9)
    oracle = torch.Generator().manual_seed(9)

    def drawn() -> list[int]:
        x, y = w.meta_batch()
        index = (x[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(y, index % C)
        return index.tolist()

    def code_epoch(batches: int) -> list[list[int]]:
        out = []
        order, cursor = None, 0
        for _ in range(batches):
            if order is None or cursor + size > n:  # StopIteration (drop_last): a new iterator
                order, cursor = torch.randperm(n, generator=oracle).tolist(), 0
            out.append(order[cursor:cursor + size])
            cursor += size
        return out

    for epoch, batches in enumerate([4, 2, 5]):
        w.on_epoch_start(epoch)
        got = [drawn() for _ in range(batches)]
        assert got == code_epoch(batches), epoch
        assert len(set(got[0] + got[1] + (got[2] if batches > 2 else []))) == size * min(batches, 3)  # no repeat in a pass
