"""SSAT, the paper's form (Chen et al. 2020): the pgd-knn perturbation (its kNN bank's refresh rule, the attack,
the ``fooled`` fact) and the ssat objective (the mutual-information term over the kept pairs), on tiny models.

The term's reference is the registered contrastive loss (``nt_xent``, checked against hand-computed values in
tests/test_contrastive.py) applied to the kept rows by the test itself; the bank's reference is a fresh encoding
of the training images by the encoder; the fooled flags' reference is the kNN's own prediction on x'.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.models import ContrastiveModel, KNNClassifier
from advlab.models.knn import encode
from advlab.recipes import RecipeEnv, create_recipe, train_step
from advlab.recipes.contrastive import nt_xent
from advlab.recipes.objectives.ssat import mutual_information_term

pytestmark = pytest.mark.usefixtures("one_thread")

N, C, B = 64, 4, 16
KNN = {"k": 5, "metric": "cosine", "vote": "majority", "temperature": 0.1}


def tiny_model(seed: int = 0) -> ContrastiveModel:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU())
    return ContrastiveModel(encoder, 16, projection_dim=8)


def clustered_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """N images 1x8x8 in C classes: a class pattern plus noise (uint8), so a kNN can be right and be fooled."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(C, 1, 8, 8, generator=g)
    labels = torch.arange(N) % C
    images = (0.6 * patterns[labels] + 0.4 * torch.rand(N, 1, 8, 8, generator=g)).clamp(0, 1)
    return (images * 255).round().to(torch.uint8), labels


def make_recipe(model, images, labels, perturbation=None, objective=None, optimizer=None):
    env = RecipeEnv(num_train=len(labels), num_classes=C, epochs=2, eps=0.1, norm="linf", device=torch.device("cpu"),
                    model=model, optimizer=optimizer, train_images=images, train_labels=labels, knn=dict(KNN))
    return create_recipe({"labels": ("hard", {}), "perturbation": ("pgd-knn", {"steps": 3, **(perturbation or {})}),
                         "weighting": ("uniform", {}), "objective": ("ssat", objective or {})}, env)


def start_epoch(recipe, epoch=0):
    for _, part in recipe.parts():
        part.on_epoch_start(epoch)


def bank_reference(model, images):
    return F.normalize(encode(model.encoder, images), dim=1)


# --------------------------------------------------------------------------------------------------
# the mutual-information term


def test_the_term_is_the_contrastive_loss_of_the_kept_pairs_only():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    keep = torch.tensor([True, False, True, True, False, True])
    term = mutual_information_term(z1, z2, keep, "nt-xent", 0.5)
    expected = nt_xent(z1[keep], z2[keep], 0.5)
    assert torch.equal(term[~keep], torch.zeros(2))
    assert torch.allclose(term.mean(), expected.mean(), atol=1e-6)  # the batch mean is the mean over the kept pairs
    assert torch.allclose(term[keep], expected * 6 / 4, atol=1e-6)
    # the dropped rows play no part: changing them changes nothing
    z1b, z2b = z1.clone(), z2.clone()
    z1b[~keep], z2b[~keep] = 10.0, -3.0
    assert torch.allclose(mutual_information_term(z1b, z2b, keep, "nt-xent", 0.5), term)


def test_fewer_than_two_kept_pairs_give_zero_with_a_graph():
    z1, z2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    term = mutual_information_term(z1, z2, torch.tensor([False, True, False, False]), "nt-xent", 0.5)
    assert torch.equal(term.detach(), torch.zeros(4))
    term.sum().backward()  # the step's backward still runs
    assert torch.equal(z1.grad, torch.zeros(4, 3))


def test_keep_all_uses_every_pair_and_fooled_only_those_that_fool():
    images, labels = clustered_data()
    model = tiny_model()
    x, y, index = images[:B].float() / 255, labels[:B], torch.arange(B)
    terms = {}
    for keep in ("fooled", "all"):
        recipe = make_recipe(model, images, labels, objective={"keep": keep})
        start_epoch(recipe)
        torch.manual_seed(3)
        from advlab.recipes import compute_loss
        step = compute_loss(model, x, y, index, 0, recipe)
        terms[keep] = (step.terms["mutual-information"].detach(), step.views["adv"].fooled)
    term_fooled, fooled = terms["fooled"]
    term_all, _ = terms["all"]
    assert 2 <= int(fooled.sum()) < B  # some fool the kNN, some do not: the choice matters
    assert torch.equal(term_fooled != 0, fooled)
    assert bool((term_all != 0).all())


# --------------------------------------------------------------------------------------------------
# the pgd-knn perturbation


def test_the_bank_is_the_training_split_encoded_at_the_epoch_start_and_batch_rows_follow_each_step():
    images, labels = clustered_data()
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    recipe = make_recipe(model, images, labels, optimizer=opt)
    start_epoch(recipe)
    part = recipe.perturbation
    at_start = bank_reference(model, images)
    assert torch.allclose(part.bank, at_start, atol=1e-6)
    first = torch.arange(0, 8)
    train_step(model, images[first].float() / 255, labels[first], first, 0, recipe, opt)
    before_step = bank_reference(model, images)
    assert not torch.allclose(before_step, at_start, atol=1e-4)  # the step moved the encoder
    index = torch.arange(8, 8 + B)
    train_step(model, images[index].float() / 255, labels[index], index, 0, recipe, opt)
    after_step = bank_reference(model, images)
    rest = torch.ones(N, dtype=torch.bool)
    rest[index] = False
    rest[first] = False
    # the batch's rows: its clean features by the encoder that attacked it; the untouched rows: as at the epoch start
    assert torch.allclose(part.bank[index], before_step[index], atol=1e-6)
    assert torch.allclose(part.bank[rest], at_start[rest], atol=1e-6)
    start_epoch(recipe, 1)  # the next epoch re-encodes everything
    assert torch.allclose(part.bank, after_step, atol=1e-6)
    assert part.epoch_metrics()["knn_bank_refreshes"] == 1


def test_refresh_every_n_steps_re_encodes_the_whole_bank():
    images, labels = clustered_data()
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    recipe = make_recipe(model, images, labels, perturbation={"refresh_every": 2}, optimizer=opt)
    start_epoch(recipe)
    for i in range(3):
        index = torch.arange(i * B, (i + 1) * B)
        if i == 2:
            expected = bank_reference(model, images)  # the weights the third step starts from
        train_step(model, images[index].float() / 255, labels[index], index, 0, recipe, opt)
    assert torch.allclose(recipe.perturbation.bank, expected, atol=1e-6)
    assert recipe.perturbation.epoch_metrics()["knn_bank_refreshes"] == 2  # epoch start + after 2 steps


@pytest.mark.parametrize("loss", ["guide", "soft-vote"])
def test_the_attack_stays_in_the_ball_uses_the_labels_and_reports_what_fools_the_knn(loss):
    images, labels = clustered_data()
    model = tiny_model()
    recipe = make_recipe(model, images, labels, perturbation={"steps": 5, "loss": loss})
    start_epoch(recipe)
    x, y, index = images[:B].float() / 255, labels[:B], torch.arange(B)
    torch.manual_seed(0)
    views = recipe.perturbation.perturb(_step(model, x, y, index))
    adv = views["adv"]
    assert float((adv.x - x).abs().max()) <= 0.1 + 1e-6 and float(adv.x.min()) >= 0 and float(adv.x.max()) <= 1
    knn = KNNClassifier(model.encoder, recipe.perturbation.bank.clone(), labels, C, **KNN)
    model.eval()
    with torch.no_grad():
        clean_right = knn(x).argmax(1) == y
        wrong = knn(adv.x).argmax(1) != y
    assert torch.equal(adv.fooled, wrong)
    assert int(wrong.sum()) > int((~clean_right).sum())  # the attack fools more than the clean errors
    torch.manual_seed(0)
    other = recipe.perturbation.perturb(_step(model, x, (y + 1) % C, index))
    assert not torch.allclose(other["adv"].x, adv.x)  # the labels steer the attack


def _step(model, x, y, index):
    from advlab.recipes.base import Step
    step = Step(model=model, x=x, y=y, index=index, epoch=0)
    step.attack_target = y
    return step


def test_a_recipe_without_the_training_split_is_refused_naming_the_part():
    from advlab.errors import ConfigError
    env = RecipeEnv(num_train=N, num_classes=C, epochs=1, eps=0.1, norm="linf", device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="perturbation 'pgd-knn' needs the training split"):
        create_recipe({"labels": ("hard", {}), "perturbation": ("pgd-knn", {}), "weighting": ("uniform", {}),
                      "objective": ("ssat", {})}, env)


def test_the_ssat_objective_needs_the_fooled_fact():
    from advlab.errors import ConfigError
    images, labels = clustered_data()
    env = RecipeEnv(num_train=N, num_classes=C, epochs=1, eps=0.1, norm="linf", device=torch.device("cpu"),
                    train_images=images, train_labels=labels)
    with pytest.raises(ConfigError, match="objective 'ssat' needs fooled of view 'adv'"):
        create_recipe({"labels": ("hard", {}), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
                      "objective": ("ssat", {})}, env)


# --------------------------------------------------------------------------------------------------
# what the method is for: the MI term pulls x and x' together


def _pair_similarity(model, x, x_adv) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cosine_similarity(model.features(x), model.features(x_adv)).mean())


def test_the_mutual_information_term_raises_the_similarity_of_clean_and_adversarial_representations():
    images, labels = clustered_data()
    model = tiny_model()
    x, y, index = images[:32].float() / 255, labels[:32], torch.arange(32)
    recipe = make_recipe(model, images, labels, perturbation={"steps": 5}, objective={"keep": "all"})
    start_epoch(recipe)
    torch.manual_seed(0)
    x_adv = recipe.perturbation.perturb(_step(model, x, y, index))["adv"].x  # fixed pairs, crafted before training
    before = _pair_similarity(model, x, x_adv)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recipe = make_recipe(model, images, labels, perturbation={"steps": 5}, objective={"keep": "all"}, optimizer=opt)
    start_epoch(recipe)
    for _ in range(15):
        train_step(model, x, y, index, 0, recipe, opt)
    after = _pair_similarity(model, x, x_adv)
    assert after > before + 0.02, (before, after)


@pytest.mark.slow
def test_ssat_kill_and_resume_reproduce_the_metrics(tmp_path, whole_and_resumed, training_rows, fashion_mnist):
    from advlab.config import load_config

    config = load_config("ssat", ["data.train_size=100", "batch_size=50", "perturbation.steps=2", "validation.n=20",
                                  "device=cpu", "epochs=2", "knn.k=5", "perturbation.refresh_every=1"])
    whole, resumed = whole_and_resumed(config, tmp_path, stop_after=1)
    a, b = training_rows(whole), training_rows(resumed)
    assert a == b
    assert a[-1]["knn_bank_refreshes"] == 2  # epoch start + after the first of two steps
