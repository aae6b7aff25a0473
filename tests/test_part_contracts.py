"""Contract tests over every registered part option: it builds, runs steps on a tiny model, writes
JSON-serialisable metrics, and its state round-trips exactly (same state, same next step).

Parametrised over the registries themselves, so a new part option is tested the moment it is registered;
a part that needs other parts (soft-label weighting needs soft labels) declares them (``Part.pairs_with``),
and a part that cannot be built with the defaults and its declared pairs fails here until it can.
``check_contract`` is the whole contract of one part (tests/part_coverage.py runs it on a toy part too).
"""
from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from torch import nn

from advlab.config import PART_KINDS
from advlab.recipes import RecipeEnv, create_recipe, compute_loss, part_registry

DEFAULTS = {"labels": "hard", "perturbation": "pgd", "weighting": "uniform", "objective": "ce"}
# a part that needs what the defaults do not give declares its pairs (Part.pairs_with): read from the class, so a
# new part is built with what it says it needs, and one that needs something it does not declare fails here
# options that keep the parts cheap on the tiny problem (a meta step every 2 steps, a short FRL attack)
CHEAP = {("weighting", "caat"): {"meta_every": 2, "meta_batch_size": 8, "attack_steps": 2},
         ("weighting", "frl"): {"attack_steps": 2},
         ("perturbation", "caat"): {"steps": 2, "bound": "grad"},  # per-sample bounds: the epoch's means vary
         ("perturbation", "pgd-knn"): {"steps": 2},
         ("perturbation", "contrastive-pgd"): {"steps": 2}}
EPOCHS, N, B = 4, 24, 8

ALL_PARTS = [(kind, name) for kind in PART_KINDS for name in part_registry(kind).names()]


class Tiny(nn.Module):
    """Conv + batch norm + linear on 1 x 8 x 8 images, 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 8 * 8, 4))

    def forward(self, x):
        return self.net(x)


def make_env(model=None, optimizer=None) -> RecipeEnv:
    g = torch.Generator().manual_seed(9)
    meta_images = torch.randint(0, 256, (8, 1, 8, 8), generator=g, dtype=torch.uint8)
    x, y = data()
    return RecipeEnv(num_train=N, num_classes=4, epochs=EPOCHS, eps=0.1, norm="linf", device=torch.device("cpu"),
                     seed=0, first_decay_epoch=1, class_counts=[6, 6, 6, 6], meta_images=meta_images,
                     meta_labels=torch.tensor([0, 1, 2, 3] * 2), model=model, optimizer=optimizer,
                     train_images=(x * 255).round().to(torch.uint8), train_labels=y,
                     knn={"k": 3, "metric": "cosine", "vote": "majority", "temperature": 0.1})


def recipe_with(kind: str, name: str, model=None, optimizer=None):
    chosen = dict(DEFAULTS, **part_registry(kind).get(name).pairs_with, **{kind: name})
    options = {k: dict(CHEAP.get((k, v), {})) for k, v in chosen.items()}
    return create_recipe({k: (v, options[k]) for k, v in chosen.items()}, make_env(model, optimizer))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 8, 8, generator=g), torch.randint(0, 4, (N,), generator=g)


def run_steps(recipe, model, opt, epochs, x, y, seed):
    losses = []
    for epoch in epochs:
        for _, part in recipe.parts():
            part.on_epoch_start(epoch)
        losses += epoch_steps(recipe, model, opt, epoch, range(0, N, B), x, y, seed)
        end_epoch(recipe, epoch)
    return losses


def epoch_steps(recipe, model, opt, epoch, starts, x, y, seed):
    """The steps of ``epoch`` whose batches start at ``starts``; their losses."""
    losses = []
    for s in starts:
        torch.manual_seed(seed + 1000 * epoch + s)
        idx = torch.arange(s, s + B)
        step = compute_loss(model.train(), x[idx], y[idx], idx, epoch, recipe)
        opt.zero_grad()
        step.loss.backward()
        opt.step()
        losses.append(step.loss.item())
    return losses


def end_epoch(recipe, epoch):
    for _, part in recipe.parts():
        part.on_validation(epoch, {"val_clean": 0.5 - 0.1 * epoch, "val_robust": 0.4 - 0.1 * epoch})


def through_checkpoint(state):
    """``state`` written and read back the way checkpoints are (torch.save, torch.load weights_only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same(a, b, where="state"):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


def test_every_registered_part_is_covered():
    names = {(kind, name) for kind in PART_KINDS for name in part_registry(kind).names()}
    assert names == set(ALL_PARTS)


@pytest.mark.parametrize("kind, name", ALL_PARTS, ids=[f"{k}-{n}" for k, n in ALL_PARTS])
def test_part_contract(kind, name, one_thread):
    check_contract(kind, name)


def check_contract(kind: str, name: str) -> None:
    """The contract of one registered part; an AssertionError (or the part's own error) when it does not hold."""
    x, y = data()
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recipe = recipe_with(kind, name, model, opt)
    # every epoch, so that schedules (burn-in, start epochs, noise-rate windows) are crossed
    losses = run_steps(recipe, model, opt, range(EPOCHS - 1), x, y, seed=1)
    assert all(torch.isfinite(torch.tensor(losses)))

    part = getattr(recipe, kind)
    metrics = part.epoch_metrics()
    assert isinstance(metrics, dict)
    json.dumps(metrics)  # JSON-serialisable: numbers, strings, lists, None

    # state round-trip: a fresh part that loads the saved state is the same part
    saved = through_checkpoint(part.state_dict())
    model2 = copy.deepcopy(model)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict may share the momentum tensors
    fresh = recipe_with(kind, name, model2, opt2)
    for k, p in fresh.parts():
        p.load_state_dict(through_checkpoint(getattr(recipe, k).state_dict()))
    assert_same(part.state_dict(), getattr(fresh, kind).state_dict())
    assert_same(saved, through_checkpoint(getattr(fresh, kind).state_dict()))

    # ... and takes the same next steps: same model, optimiser and RNG on both sides
    last = EPOCHS - 1
    after_a = run_steps(recipe, model, opt, [last], x, y, seed=7)
    for _, p in fresh.parts():
        p.on_epoch_start(last)
    after_b = epoch_steps(fresh, model2, opt2, last, [0], x, y, seed=7)

    # in the middle of an epoch: a third part that loads the second's state_dict and epoch_state after the
    # epoch's first step (in place of on_epoch_start, which a resumed run does not call again) takes the same
    # remaining steps and logs the same epoch metrics
    model3 = copy.deepcopy(model2)
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.05, momentum=0.9)
    opt3.load_state_dict(copy.deepcopy(opt2.state_dict()))
    resumed = recipe_with(kind, name, model3, opt3)
    for k, p in resumed.parts():
        p.load_state_dict(through_checkpoint(getattr(fresh, k).state_dict()))
        p.load_epoch_state(last, through_checkpoint(getattr(fresh, k).epoch_state()))
    rest = range(B, N, B)
    after_b += epoch_steps(fresh, model2, opt2, last, rest, x, y, seed=7)
    after_c = epoch_steps(resumed, model3, opt3, last, rest, x, y, seed=7)
    end_epoch(fresh, last)
    end_epoch(resumed, last)
    assert after_a == after_b
    assert after_b[1:] == after_c, "a part resumed mid-epoch takes other steps"
    assert_same(part.state_dict(), getattr(fresh, kind).state_dict())
    assert_same(getattr(fresh, kind).state_dict(), getattr(resumed, kind).state_dict())
    assert getattr(fresh, kind).epoch_metrics() == getattr(resumed, kind).epoch_metrics(), \
        "a part resumed mid-epoch logs other epoch metrics (epoch_state misses some of the epoch's state)"
    json.dumps(getattr(fresh, kind).epoch_metrics())
