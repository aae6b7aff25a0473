"""Edge kinds of the attack engine, each over norms, float dtypes and class counts (issue 25).

1. A saturated softmax: where the true class leads by more than the exponent range of the dtype, the
   cross-entropy's gradient rounds to exactly 0 (``p_y`` rounds to 1), so a logit-scaled attack stalled where
   its plain form did not. Every logit-scaled evaluation attack must stay within a few points of its plain form.
2. Images a rounding error outside [0, 1] (the -3e-8 of a normalise / denormalise round trip,
   torchattacks#136): within ``BOX_TOLERANCE`` they are clamped and counted, beyond it the error says how far.
"""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from advlab.attacks import pgd
from advlab.attacks.box import BOX_TOLERANCE, box_tolerance
from advlab.errors import AdvlabError
from advlab.evaluation import evaluate
from advlab.evaluation.suite import EVAL_ATTACKS, AttackSetup, AutoAttackEval, PGDEval

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
EPS = {"linf": 0.05, "l2": 0.5}
# rows long enough that 10x the logits (pgd20-scaled) saturate the softmax of the dtype for many points:
# margins of tens of units in float32 / bfloat16 (exp underflows below -104), hundreds in float64 (-745)
ROW_NORM = {torch.float32: 50.0, torch.bfloat16: 50.0, torch.float64: 500.0}


def saturating_linear(classes: int, dtype: torch.dtype, n: int = 120):
    """A linear model on 1x28x28 images with rows of norm ``ROW_NORM[dtype]`` (centred on the grey image so the
    classes share the points), images uniform in [0, 1] and their clean predictions as labels."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(classes, 784, generator=g)
    w = w / w.norm(dim=1, keepdim=True) * ROW_NORM[dtype]
    lin = nn.Linear(784, classes)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(-0.5 * w.sum(1))
    model = nn.Sequential(nn.Flatten(), lin).to(dtype).eval()
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def fooled(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of the points the attack's x_adv makes the model misclassify."""
    with torch.no_grad():
        return (model(attack(x, y)).argmax(1) != y).float().mean().item()


def scaled_variants() -> list[str]:
    """Every registered evaluation attack that is PGD on logits multiplied by a scale (from the registry)."""
    probe = AttackSetup(nn.Linear(2, 2), 0.1, "linf", torch.device("cpu"), 0, 2)
    names = []
    for name in EVAL_ATTACKS.names():
        try:
            attack = EVAL_ATTACKS.get(name)(probe)
        except AdvlabError:  # attacks of another kind of model (a kNN's)
            continue
        if isinstance(attack, PGDEval) and attack.logit_scale != 1.0:
            names.append(name)
    return names


def test_the_registry_has_a_logit_scaled_attack():
    assert "pgd20-scaled" in scaled_variants()


@pytest.mark.parametrize("dtype,classes,norm", list(itertools.product(DTYPES, [2, 3, 10], ["linf", "l2"])),
                         ids=lambda v: str(v).replace("torch.", ""))
def test_a_logit_scaled_attack_stays_within_a_few_points_of_its_plain_form(dtype, classes, norm):
    model, x, y = saturating_linear(classes, dtype)
    # the setting is the one of the kind: for many points the scaled cross-entropy's gradient is exactly 0
    xg = x.clone().requires_grad_(True)
    ce = nn.functional.cross_entropy(model(xg) * 10, y, reduction="none")
    (grad,) = torch.autograd.grad(ce.sum(), xg)
    assert (grad.flatten(1).abs().amax(1) == 0).float().mean() > 0.2
    setup = AttackSetup(model, EPS[norm], norm, torch.device("cpu"), 0, classes)
    margin = fooled(model, PGDEval(setup, steps=20, loss="cw"), x, y)  # linear in the logits: never saturates
    assert margin > 0.4
    for name in scaled_variants():
        variant = EVAL_ATTACKS.get(name)(setup)
        plain = PGDEval(setup, steps=variant.steps, step_size=variant.step_size, loss=variant.loss,
                        restarts=variant.restarts)
        a, b = fooled(model, variant, x, y), fooled(model, plain, x, y)
        assert a >= b - 0.03, f"{name} fooled {a:.3f} of the points, its plain form {b:.3f}"
        assert b >= margin - 0.03, f"the plain form of {name} fooled {b:.3f}, the margin attack {margin:.3f}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0])
def test_a_saturated_cross_entropy_step_goes_along_the_exact_gradient_direction(dtype, scale):
    """The cross-entropy's gradient on the logits s z is p - e_y = (1 - p_y) (q - e_y), q the softmax of s z over
    the classes other than y (since p_k = (1 - p_y) q_k for k != y): its direction is W^T (q - e_y) however small
    1 - p_y is. One linf step must be its sign, for points whose float gradient underflows too."""
    model, x, y = saturating_linear(10, dtype, n=40)
    r = pgd(model, x, y, eps=1.0, step_size=0.01, steps=1, norm="linf", random_start=None, logit_scale=scale)
    w, b = model[1].weight.double(), model[1].bias.double()
    z = scale * (x.double().flatten(1) @ w.T + b)
    others = z.scatter(1, y[:, None], float("-inf"))
    q = torch.softmax(others, dim=1)  # the softmax over k != y, exact in float64 (no underflow of the leader)
    direction = (q - nn.functional.one_hot(y, 10).double()) @ w
    clear = direction.abs() > 1e-6 * direction.abs().amax(1, keepdim=True)  # signs not decided by rounding
    moved = (r.x_adv.double() - x.double()).flatten(1)
    inside = (x.double().flatten(1) > 0.01) & (x.double().flatten(1) < 0.99)  # the box does not cut the step
    keep = clear & inside
    assert torch.equal(moved.sign()[keep], direction.sign()[keep])
    assert (moved.abs()[keep] > 0.0099).all()


# ---------------------------------------------------------------------------------------------------------
# 2. images a rounding error outside [0, 1]

def linear(classes: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).to(dtype).eval()


def rounded_images(dtype: torch.dtype, classes: int, n: int = 8, outside: float | None = None):
    """Images (n, 1, 8, 8) with 0 and 1 pixels moved ``outside`` (default: the tolerance of the dtype, the
    farthest a value may be; in bfloat16 1 + eps is the first number above 1) below 0 and above 1: 2 values per
    image, 2n in all; labels cycling over the classes."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    off = box_tolerance(dtype) if outside is None else outside
    x[:, 0, 0, 0] = -off
    x[:, 0, 7, 7] = 1 + off
    x = x.to(dtype)
    assert off == 0 or (bool((x < 0).any()) and bool((x > 1).any()))  # representable in the dtype
    return x, torch.arange(n) % classes


def test_the_tolerance_is_documented_per_dtype():
    assert BOX_TOLERANCE == 1e-6
    assert box_tolerance(torch.float32) == box_tolerance(torch.float64) == 1e-6
    # half precision: one unit in the last place at 1, the smallest rounding error there
    assert box_tolerance(torch.bfloat16) == torch.finfo(torch.bfloat16).eps
    assert box_tolerance(torch.float16) == torch.finfo(torch.float16).eps


@pytest.mark.parametrize("dtype,classes,norm", list(itertools.product(DTYPES, [2, 10], ["linf", "l2"])),
                         ids=lambda v: str(v).replace("torch.", ""))
def test_the_engine_clamps_and_counts_values_within_the_tolerance(dtype, classes, norm):
    model = linear(classes, dtype)
    x, y = rounded_images(dtype, classes)
    clamped = x.clamp(0, 1)
    eps = EPS[norm]
    r = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=3, norm=norm, random_start=None)
    ref = pgd(model, clamped, y, eps=eps, step_size=eps / 4, steps=3, norm=norm, random_start=None)
    assert r.clamped == 2 * len(x) and ref.clamped == 0
    assert torch.equal(r.x_adv, ref.x_adv)  # the attack of the clamped images
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    attack = PGDEval(AttackSetup(model, eps, norm, torch.device("cpu"), 0, classes), steps=2)
    attack(x, y)
    assert attack.settings()["clamped_inputs"] == 2 * len(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("side", ["below", "above"])
def test_beyond_the_tolerance_the_error_says_how_far_outside(dtype, side):
    model = linear(10, dtype)
    x, y = rounded_images(dtype, 10, outside=0)
    x[2, 0, 3, 3] = -0.25 if side == "below" else 1.5
    with pytest.raises(AdvlabError) as err:
        pgd(model, x, y, eps=0.1, step_size=0.02, steps=1)
    message = str(err.value)
    assert ("-0.25" if side == "below" else "1.5") in message
    assert ("0.25 below 0" if side == "below" else "0.5 above 1") in message
    assert f"{box_tolerance(dtype):.2g}" in message
    with pytest.raises(AdvlabError) as err:  # refused before any attack runs, in every dtype
        evaluate(model, x, y, eps=0.1, attacks=["pgd20"], sanity=False, progress=False)
    assert ("0.25 below 0" if side == "below" else "0.5 above 1") in str(err.value)


# evaluate's threat-model check (1e-6) does not allow for the rounding of bfloat16 images (x + eps lands up to
# half a unit in the last place, 0.004, beyond eps): evaluate supports float32 and float64 images
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_evaluate_clamps_counts_and_reports_the_rounding_errors(dtype, norm):
    model = linear(3, dtype)
    x, y = rounded_images(dtype, 3)
    result = evaluate(model, x, y, eps=EPS[norm], norm=norm, attacks=["pgd20"], sanity=False, progress=False)
    ref = evaluate(model, x.clamp(0, 1), y, eps=EPS[norm], norm=norm, attacks=["pgd20"], sanity=False,
                   progress=False)
    d = json.loads(result.to_json())
    assert d["inputs"] == {"clamped": 2 * len(x), "tolerance": box_tolerance(dtype)}
    assert json.loads(ref.to_json())["inputs"]["clamped"] == 0
    assert d["per_sample"] == json.loads(ref.to_json())["per_sample"]
    assert f"{2 * len(x)} input values" in result.table()


@pytest.mark.parametrize("classes", [4, 10])
def test_autoattack_clamps_and_counts_values_within_the_tolerance(classes):
    model = linear(classes, torch.float32)
    x, y = rounded_images(torch.float32, classes, n=4)
    setup = AttackSetup(model, 0.05, "linf", torch.device("cpu"), 0, classes, autoattack_version="apgd-ce")
    attack = AutoAttackEval(setup)
    attack.aa.apgd.n_iter = 3
    x_adv = attack(x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert attack.settings()["clamped_inputs"] == 2 * len(x)
    x[0, 0, 1, 1] = -0.01
    with pytest.raises(AdvlabError, match="0.01 below 0"):
        attack(x, y)
