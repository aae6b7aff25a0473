"""The one-way training step: every preset's loss pinned from before the refactor, the step as a plain
function, and parts that cannot feed each other refused when the recipe is built."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advlab.config import load_config, preset_names
from advlab.engine.schedule import first_decay_epoch
from advlab.errors import ConfigError
from advlab.models import create_model
from advlab.recipes import RecipeEnv, create_recipe, compute_loss, train_step

PINS = json.loads((Path(__file__).parent / "fixtures" / "pinned_step_losses.json").read_text())
EPOCHS = 4


def env(**kw) -> RecipeEnv:
    base = dict(num_train=64, num_classes=10, epochs=EPOCHS, eps=0.1, norm="linf", device=torch.device("cpu"), seed=0)
    base.update(kw)
    return RecipeEnv(**base)


def sections(config) -> dict:
    return config.recipe_spec()


def pinned_protocol(name: str) -> list[float]:
    """The protocol of tests/fixtures/make_pins_pre_refactor.py (run on commit 3551f95, before the one-way
    step): small-cnn seeded 0, 64 random images seeded 1, two SGD steps in epoch 0 and two in the last.
    Presets added later (CAAT, FRL: NEW_PRESETS; simclr, ssat-instance; n-fgsm, grad-align; speedrun, whose pins
    are the demo's: the same parts) were pinned by this protocol when they were added, with a meta split of 20
    random images for the parts that need one, and the preset's model head (a projection head for the
    self-supervised presets), a training split of 64 random images and a kNN of k=5 for the parts that need them."""
    c = load_config(name)
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1, activation=c.model.activation, head=c.model.head,
                   projection_dim=c.model.projection_dim)
    g = torch.Generator().manual_seed(1)
    x_all = torch.rand(64, 1, 28, 28, generator=g)
    y_all = torch.randint(0, 10, (64,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    meta_images = (torch.rand(20, 1, 28, 28, generator=g) * 255).to(torch.uint8)  # drawn after the batch
    train_images = (x_all * 255).round().to(torch.uint8)
    recipe = create_recipe(sections(c), env(first_decay_epoch=first_decay_epoch(c.schedule, EPOCHS),
                                           meta_images=meta_images, meta_labels=torch.arange(20) % 10,
                                           model=model, optimizer=opt, train_images=train_images,
                                           train_labels=y_all, knn={**vars(c.knn), "k": 5}))
    losses = []
    for epoch in (0, EPOCHS - 1):
        for _, part in recipe.parts():
            part.on_epoch_start(epoch)
        for b in range(2):
            idx = torch.arange(b * 16, b * 16 + 16)
            step = train_step(model, x_all[idx], y_all[idx], idx, epoch, recipe, opt)
            losses.append(step.loss.item())
    return losses


NEW_PRESETS = ("caat", "caat-grad", "frl", "frl-remargin", "frl-reweight")
SSL_PRESETS = ("ssat",)


def test_every_preset_has_a_pinned_loss():
    assert sorted(PINS) == preset_names(), "a new preset needs its pinned losses (tests/fixtures)"


@pytest.mark.parametrize("name", sorted(PINS))
def test_preset_gives_the_same_losses_as_before_the_refactor(name, one_thread):
    # MART's two terms are now averaged apart, so its sums may differ in the last float32 bits
    assert pinned_protocol(name) == pytest.approx(PINS[name], rel=2e-6, abs=2e-6)


def test_step_is_a_plain_function_with_typed_stages(one_thread):
    c = load_config("gair-trades")
    recipe = create_recipe(sections(c), env())
    for _, part in recipe.parts():
        part.on_epoch_start(EPOCHS - 1)  # after GAIR's burn-in
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    step = compute_loss(model.train(), x, y, torch.arange(8), EPOCHS - 1, recipe)
    assert set(step.views) == {"clean", "adv"} and step.views["adv"].kappa.shape == (8,)
    assert step.views["adv"].steps == 10
    assert set(step.outputs) == {"clean", "adv"} and set(step.terms) == {"natural", "boundary"}
    assert step.weights["natural"] is None and step.weights["boundary"] is not None  # term: boundary
    expected = step.terms["natural"].mean() + 6.0 * (step.terms["boundary"] * step.weights["boundary"]).mean()
    assert torch.allclose(step.loss, expected)


@pytest.mark.parametrize("parts, message", [
    ({"weighting": ("gair", {}), "perturbation": ("none", {})},
     "weighting 'gair' needs kappa of view 'adv', which perturbation 'none' does not give"),
    ({"weighting": ("self-adaptive", {})},
     "weighting 'self-adaptive' reads soft loss targets, which labels 'hard' does not give"),
    ({"weighting": ("gair", {"term": "natural"})},
     "weighting 'gair' weights term 'natural', which objective 'ce' does not have"),
])
def test_parts_that_do_not_fit_fail_when_built_naming_both(parts, message):
    spec = {"labels": ("hard", {}), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
            "objective": ("ce", {})}
    spec.update(parts)
    with pytest.raises(ConfigError) as info:
        create_recipe(spec, env())
    assert message in str(info.value)


def test_a_part_option_out_of_range_names_the_key_and_range():
    spec = {"labels": ("noilin", {"rate": 2}), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
            "objective": ("ce", {})}
    with pytest.raises(ConfigError, match=r"^labels\.rate: must be in \[0, 1\], got 2"):
        create_recipe(spec, env())
