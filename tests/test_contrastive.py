"""Self-supervised contrastive training: the losses against closed forms written by hand, SimCLR's two-view
augmentation against exact geometry and reference colour operations, the label-free ``contrastive-pgd`` attack
(in the ball, up the loss, no labels), the objectives, the recipe and config checks, and a tiny ``simclr`` /
``ssat-instance`` run through the trainer (kNN summary, exact resume)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from advlab.data.contrastive_augment import (JITTER_OPS, ViewAugment, adjust, apply_params, augment, crop_and_flip,
                                             draw_params, hsv_to_rgb, jitter_ops, rgb_to_hsv)
from advlab.errors import AdvlabError, ConfigError
from advlab.models import ContrastiveModel
from advlab.recipes import RecipeEnv, Step, create_recipe, compute_loss
from advlab.recipes.contrastive import contrastive_top1, info_nce, nt_xent

E = torch.eye(4)
T = 0.5  # 1 / T = 2 in every closed form below


# -- the losses, by hand ---------------------------------------------------------------------------------------
def test_nt_xent_of_orthonormal_and_opposite_vectors_is_the_closed_form():
    # z2 = z1 = e1..e4: every anchor's positive has similarity 1, its 6 negatives 0:
    # -log(e^{1/T} / (e^{1/T} + 6)) = log(1 + 6 e^{-2})
    assert nt_xent(E, E.clone(), T).tolist() == pytest.approx([math.log(1 + 6 * math.exp(-2))] * 4, rel=1e-5)
    # the positive of sample 0 opposite (-e1): both its anchors score -1 against 6 orthogonal negatives
    z2 = E.clone()
    z2[0] = -E[0]
    expected = [math.log(1 + 6 * math.exp(2))] + [math.log(1 + 6 * math.exp(-2))] * 3
    assert nt_xent(E, z2, T).tolist() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_counts_other_images_of_both_views_as_negatives():
    # z1 = e1, e2, e3, e4; z2 = e1, e1, e3, e4: sample 1's second view is sample 0's image
    z2 = torch.stack([E[0], E[0], E[2], E[3]])
    sample0 = math.log(2 + 5 * math.exp(-2))  # both anchors (e1): positive 1, negative z2[1] = e1 also 1, 5 zeros
    # anchor z1[1] = e2: positive e1 scores 0, all 6 negatives 0 -> log 7;
    # anchor z2[1] = e1: positive e2 scores 0, negatives z1[0] = e1 and z2[0] = e1 score 1, 4 zeros
    sample1 = 0.5 * (math.log(7) + math.log(5 + 2 * math.exp(2)))
    other = math.log(1 + 6 * math.exp(-2))
    assert nt_xent(E, z2, T).tolist() == pytest.approx([sample0, sample1, other, other], rel=1e-5)
    # the temperature divides every similarity: at T = 0.25, e^{1/T} = e^4
    assert nt_xent(E, E.clone(), 0.25).tolist() == pytest.approx([math.log(1 + 6 * math.exp(-4))] * 4, rel=1e-5)
    # the scale of a representation does not matter (cosine similarities)
    assert torch.allclose(nt_xent(3 * E, 0.5 * z2, T), nt_xent(E, z2, T))


def test_nt_xent_is_symmetric_in_its_views_and_descends_toward_the_positive():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert torch.allclose(nt_xent(z1, z2, T), nt_xent(z2, z1, T), atol=1e-6)
    z1.requires_grad_(True)
    loss = nt_xent(z1, z2, T).sum()
    (grad,) = torch.autograd.grad(loss, z1)
    moved = (z1 - 0.1 * grad).detach()
    cos = nn.functional.cosine_similarity
    assert nt_xent(moved, z2, T).sum() < loss
    assert (cos(moved, z2) > cos(z1.detach(), z2)).all()  # every positive pair got closer


def test_info_nce_scores_against_the_other_view_only():
    z2 = torch.stack([E[0], E[0], E[2], E[3]])
    # sample 0: anchor u0 = e1 against v = (e1, e1, e3, e4): -log(e^2 / (2 e^2 + 2));
    #           anchor v0 = e1 against u = (e1, e2, e3, e4): -log(e^2 / (e^2 + 3))
    sample0 = 0.5 * (math.log(2 + 2 * math.exp(-2)) + math.log(1 + 3 * math.exp(-2)))
    sample1 = 0.5 * (math.log(4) + math.log(math.exp(2) + 3))  # u1 = e2 scores 0 everywhere; v1 = e1 meets u0
    other = math.log(1 + 3 * math.exp(-2))
    assert info_nce(E, z2, T).tolist() == pytest.approx([sample0, sample1, other, other], rel=1e-5)


@pytest.mark.parametrize("loss", [nt_xent, info_nce])
def test_contrastive_losses_refuse_what_they_cannot_score(loss):
    with pytest.raises(AdvlabError, match="at least 2"):
        loss(E[:1], E[:1], T)
    with pytest.raises(AdvlabError, match="same shape"):
        loss(E, E[:, :3], T)
    with pytest.raises(AdvlabError, match="temperature"):
        loss(E, E, 0.0)


def test_contrastive_top1_is_the_positive_nearest_of_the_other_two_b_minus_one():
    assert contrastive_top1(E, E.clone()).tolist() == [True] * 4
    # sample 0 ties with the negative z2[1] = e1 (a tie counts as wrong); sample 1's positive is orthogonal
    z2 = torch.stack([E[0], E[0], E[2], E[3]])
    assert contrastive_top1(E, z2).tolist() == [False, False, True, True]


# -- the augmentation ------------------------------------------------------------------------------------------
IDENTITY = ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.0, jitter_p=0.0, grayscale_p=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, c: int = 3, size: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_keep_shape_dtype_and_pixel_range_and_differ(channels):
    x = images(c=channels)
    a, pa = augment(x, ViewAugment(), gen(3))
    b, _ = augment(x, ViewAugment(), gen(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b) and not torch.allclose(a, x)
    assert torch.equal(augment(x, ViewAugment(), gen(3))[0], a)  # same generator state, same view
    assert torch.equal(x, images(c=channels))  # the input is untouched


def test_the_identity_settings_give_the_images_back_and_a_forced_flip_mirrors_them():
    x = images()
    out, _ = augment(x, IDENTITY, gen())
    assert torch.allclose(out, x, atol=1e-6)
    params = draw_params(len(x), IDENTITY, gen())
    params.flip = torch.tensor([True, False] * 4)
    out = apply_params(x, params)
    assert torch.allclose(out[::2], x[::2].flip(-1), atol=1e-6)
    assert torch.allclose(out[1::2], x[1::2], atol=1e-6)


def test_the_crop_reads_exactly_the_drawn_window():
    # ramps (j + 0.5) / W along columns and rows: bilinear sampling of a ramp is the ramp at the sampled point, so
    # output column j of a crop (x0, w) reads clamp(x0 + w (j + 0.5) / W) (clamped at the outer pixel centres)
    n, size = 64, 16
    centres = (torch.arange(size) + 0.5) / size
    ramp_x = centres.expand(n, 1, size, size).clone()
    ramp_y = centres[:, None].expand(n, 1, size, size).clone()
    params = draw_params(n, ViewAugment(scale=(0.1, 1.0), flip=False), gen(5))
    x0, y0, w, h = params.crop.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 1 + 1e-6).all() and (y0 + h <= 1 + 1e-6).all()
    lo, hi = 0.5 / size, 1 - 0.5 / size
    want_x = (x0[:, None] + w[:, None] * centres).clamp(lo, hi)
    want_y = (y0[:, None] + h[:, None] * centres).clamp(lo, hi)
    assert torch.allclose(crop_and_flip(ramp_x, params.crop, params.flip)[:, 0, 0, :], want_x, atol=1e-5)
    assert torch.allclose(crop_and_flip(ramp_y, params.crop, params.flip)[:, 0, :, 0], want_y, atol=1e-5)


def test_the_crop_area_and_aspect_ratio_stay_in_their_ranges():
    params = draw_params(4000, ViewAugment(scale=(0.3, 0.6), ratio=(3 / 4, 4 / 3)), gen(6))
    area = params.area
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 0.6 + 1e-6
    assert area.min() < 0.31 and area.max() > 0.59  # the whole range is drawn
    ratio = params.crop[:, 2] / params.crop[:, 3]  # s r <= 0.8 < 1: no crop is clipped, so w / h = r
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert ratio.min() < 0.76 and ratio.max() > 1.32
    # a full-image scale near 1 still fits: the area is the drawn one and the crop stays inside
    params = draw_params(1000, ViewAugment(scale=(0.9, 1.0)), gen(7))
    assert params.area.min() >= 0.9 - 1e-6 and (params.crop[:, 2] <= 1).all() and (params.crop[:, 3] <= 1).all()


def test_one_channel_images_get_brightness_and_contrast_only():
    assert jitter_ops(1) == ("brightness", "contrast") and jitter_ops(3) == JITTER_OPS
    x = images(16, c=1)
    settings = ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.5, jitter_p=1.0, grayscale_p=1.0)
    params = draw_params(len(x), settings, gen(8))
    out = apply_params(x, params)
    for i in range(len(x)):  # a reference: each sample's brightness and contrast in its own order, nothing else
        ref = x[i]
        for k in params.order[i].tolist():
            f = params.factors[i, k].item()
            if JITTER_OPS[k] == "brightness":
                ref = (f * ref).clamp(0, 1)
            elif JITTER_OPS[k] == "contrast":
                ref = (f * ref + (1 - f) * ref.mean()).clamp(0, 1)
        assert torch.allclose(out[i], ref, atol=1e-5), i
    assert not torch.allclose(out, x, atol=1e-3)


def test_colour_images_get_grayscale_saturation_and_hue():
    x = images(8, c=3)
    settings = ViewAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.0, grayscale_p=1.0)
    out, _ = augment(x, settings, gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        assert torch.allclose(out[:, c], luma, atol=1e-6)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(adjust(red, "hue", torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1),
                          atol=1e-5)
    gray = adjust(x, "saturation", torch.zeros(len(x)))  # saturation 0 is the grayscale image
    assert torch.allclose(gray, luma[:, None].expand_as(x), atol=1e-6)


def test_settings_out_of_range_are_refused():
    for bad in (dict(scale=(0.0, 1.0)), dict(scale=(0.8, 0.5)), dict(ratio=(2.0, 1.0)), dict(jitter=-1.0),
                dict(jitter_p=1.5)):
        with pytest.raises(AdvlabError):
            ViewAugment(**bad)


# -- the parts -------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Conv + batch norm on 1 x 8 x 8 images -> 16 features."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, 16))

    def forward(self, x):
        return self.net(x)


def tiny_model(channels: int = 1) -> ContrastiveModel:
    torch.manual_seed(0)
    return ContrastiveModel(Encoder(channels), 16, projection_dim=8)


@pytest.fixture(scope="module")
def pretrained(one_thread) -> ContrastiveModel:
    """The tiny model after 20 SimCLR steps on a batch (at initialisation its representations are nearly
    collinear, so no attack can move the loss much)."""
    x, y, i = batch(32)
    model = tiny_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    simclr = recipe()
    for _ in range(20):
        loss = compute_loss(model, x, y, i, 0, simclr).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def env(dataset: str | None = None, eps: float = 0.1, norm: str = "linf", seed: int = 0) -> RecipeEnv:
    return RecipeEnv(num_train=32, num_classes=4, epochs=2, eps=eps, norm=norm, device=torch.device("cpu"),
                     seed=seed, dataset=dataset)


def recipe(perturbation=("augment", {}), objective=("contrastive", {}), weighting=("uniform", {}), **env_kw):
    return create_recipe({"labels": ("hard", {}), "perturbation": perturbation, "weighting": weighting,
                         "objective": objective}, env(**env_kw))


def batch(n: int = 16, channels: int = 1, seed: int = 2):
    g = gen(seed)
    return torch.rand(n, channels, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g), torch.arange(n)


NO_CROP = {"scale_min": 1.0, "ratio_min": 1.0, "ratio_max": 1.0, "jitter": 0.0, "grayscale_p": 0.0}


def test_auto_flip_follows_the_dataset_record():
    x, y, i = batch(32, channels=3)
    model = tiny_model(3)

    def flipped(dataset, flip="auto"):
        r = recipe(("augment", dict(NO_CROP, flip=flip)), dataset=dataset)
        views = compute_loss(model, x, y, i, 0, r).views
        v = torch.cat([views["view1"].x, views["view2"].x])
        xx = torch.cat([x, x])
        same = (v - xx).flatten(1).abs().amax(1) < 1e-6
        mirrored = (v - xx.flip(-1)).flatten(1).abs().amax(1) < 1e-6
        assert (same | mirrored).all()
        return int((mirrored & ~same).sum())

    assert flipped("fashion-mnist") == 0 and flipped("mnist") == 0 and flipped("svhn") == 0  # forbid flips
    assert flipped(None) == 0  # unknown dataset: no flip
    assert 16 <= flipped("cifar10") <= 48  # about half of 64
    assert flipped("fashion-mnist", flip=True) > 0 and flipped("cifar10", flip=False) == 0


def test_views_are_fixed_by_seed_and_epoch_and_start_each_epoch_afresh():
    x, y, i = batch()
    model = tiny_model()

    def views(r, epoch):
        r.perturbation.on_epoch_start(epoch)
        step = compute_loss(model, x, y, i, epoch, r)
        return step.views["view1"].x, step.views["view2"].x

    a, b = recipe(), recipe()
    first = views(a, 0)
    views(a, 0)  # a second batch in epoch 0 draws other views ...
    assert not torch.equal(views(a, 0)[0], views(b, 1)[0])
    assert all(torch.equal(u, v) for u, v in zip(views(a, 0), first))  # ... and a new epoch 0 the same again
    assert all(torch.equal(u, v) for u, v in zip(views(b, 0), first))  # another part with the same seed: the same
    assert not torch.equal(views(recipe(seed=1), 0)[0], first[0])  # another seed: others
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_contrastive_pgd_stays_in_the_ball_and_raises_the_contrastive_loss(norm, eps, pretrained):
    x, y, i = batch(32)
    model = copy.deepcopy(pretrained).train()
    r = recipe(("contrastive-pgd", {"steps": 5}), ("contrastive-adv", {}), eps=eps, norm=norm)
    running = model.encoder.net[1].running_mean.clone()
    views = r.perturbation.perturb(Step(model=model, x=x, y=y, index=i, epoch=0))
    assert model.training and all(p.requires_grad for p in model.parameters())  # flags restored
    assert torch.equal(model.encoder.net[1].running_mean, running)  # eval mode: statistics untouched
    v1, v2, adv = views["view1"].x, views["view2"].x, views["adv"].x
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - v1).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all() and size.max() > 0.5 * eps
    assert views["adv"].steps == 5 and views["adv"].steps_taken.tolist() == [5] * 32
    model.eval()
    with torch.no_grad():
        z1, z2, za = model(v1), model(v2), model(adv)
    clean, attacked = nt_xent(z1, z2, 0.5).mean(), nt_xent(za, z2, 0.5).mean()
    assert attacked > clean + 0.2, (clean, attacked)  # about 4.0 -> 4.4 (l2) to 5 (linf)


def test_contrastive_pgd_aims_at_the_other_views_projection(pretrained):
    x, y, i = batch()
    model = copy.deepcopy(pretrained).train()
    part = recipe(("contrastive-pgd", {"steps": 3}), ("contrastive-adv", {})).perturbation
    seen = []
    loss = part.attack_loss
    part.attack_loss = lambda output, target: seen.append(target) or loss(output, target)
    views = part.perturb(Step(model=model, x=x, y=y, index=i, epoch=0))
    with torch.no_grad():
        z2 = model.eval()(views["view2"].x)
    assert len(seen) == 3 and all(torch.allclose(t, z2, atol=1e-6) and not t.requires_grad for t in seen)


def test_contrastive_pgd_reads_no_labels_and_makes_the_augment_views():
    x, y, i = batch()
    model = tiny_model()
    spec = (("contrastive-pgd", {"steps": 2}), ("contrastive-adv", {}))
    a = compute_loss(copy.deepcopy(model), x, y, i, 0, recipe(*spec))  # copies: the step's forward moves BN statistics
    b = compute_loss(copy.deepcopy(model), x, y[torch.randperm(len(y), generator=gen(3))], i, 0, recipe(*spec))
    assert (b.y != a.y).any()
    for name in ("view1", "view2", "adv"):
        assert torch.equal(a.views[name].x, b.views[name].x), name
    assert torch.equal(a.loss, b.loss) and a.loss_targets == {} == b.loss_targets
    plain = compute_loss(model, x, y, i, 0, recipe())  # the augment part, same seed: the same two views
    assert torch.equal(plain.views["view1"].x, a.views["view1"].x)
    assert torch.equal(plain.views["view2"].x, a.views["view2"].x)


def test_objective_terms_are_the_loss_of_their_pairs_from_one_forward():
    x, y, i = batch()
    model = tiny_model()
    r = recipe(("contrastive-pgd", {"steps": 2}), ("contrastive-adv", {"adv_weight": 0.25, "temperature": 0.2}))
    step = compute_loss(model.train(), x, y, i, 0, r)
    v = step.views
    z = model(torch.cat([v["view1"].x, v["view2"].x, v["adv"].x])).split(len(x))  # one forward: shared BN statistics
    assert torch.allclose(step.terms["contrastive"], nt_xent(z[0], z[1], 0.2), atol=1e-5)
    assert torch.allclose(step.terms["adversarial"], nt_xent(z[2], z[1], 0.2), atol=1e-5)
    assert step.terms["contrastive"].shape == (16,)
    expected = step.terms["contrastive"].mean() + 0.25 * step.terms["adversarial"].mean()
    assert torch.allclose(step.loss, expected)
    assert torch.equal(r.objective.correct(step), contrastive_top1(z[0].detach(), z[1].detach()))
    metrics = r.objective.epoch_metrics()
    assert metrics["contrastive_loss"] == pytest.approx(step.terms["contrastive"].mean().item(), rel=1e-5)
    assert metrics["contrastive_adv_loss"] == pytest.approx(step.terms["adversarial"].mean().item(), rel=1e-5)
    assert 0 <= metrics["contrastive_adv_top1"] <= 1


@pytest.mark.parametrize("perturbation, objective, weighting, names", [
    ("pgd", "contrastive", "uniform", ("objective 'contrastive'", "perturbation 'pgd'", "view1")),
    ("augment", "ce", "uniform", ("objective 'ce'", "perturbation 'augment'", "'adv'")),
    ("augment", "contrastive-adv", "uniform", ("objective 'contrastive-adv'", "perturbation 'augment'", "'adv'")),
    ("contrastive-pgd", "contrastive-adv", "gair", ("weighting 'gair'", "perturbation 'contrastive-pgd'", "kappa")),
])
def test_parts_that_cannot_feed_each_other_are_refused_naming_both(perturbation, objective, weighting, names):
    with pytest.raises(ConfigError) as err:
        recipe((perturbation, {}), (objective, {}), (weighting, {}))
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize("kind, options, match", [
    ("perturbation", ("augment", {"scale_min": 0.9, "scale_max": 0.5}), "perturbation.scale_min"),
    ("perturbation", ("augment", {"flip": "sometimes"}), "perturbation.flip"),
    ("perturbation", ("contrastive-pgd", {"loss": "triplet"}),
     "perturbation.loss: unknown contrastive loss 'triplet'; allowed: info-nce, nt-xent"),
    ("objective", ("contrastive", {"loss": "triplet"}), "objective.loss: unknown contrastive loss"),
    ("objective", ("contrastive", {"temperature": 0}), "objective.temperature"),
])
def test_bad_options_are_one_config_error_naming_the_key(kind, options, match):
    spec = {"perturbation": ("augment", {}), "objective": ("contrastive", {})}
    spec[kind] = options
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        recipe(spec["perturbation"], spec["objective"])


def test_the_model_head_must_match_what_the_objective_reads():
    from advlab.config import load_config
    from advlab.engine.config_checks import check_config

    with pytest.raises(ConfigError, match="model.head: objective 'contrastive' reads a representation"):
        check_config(load_config("simclr", ["model.head=linear", "device=cpu"]))
    with pytest.raises(ConfigError, match="model.head: objective 'ce' reads class logits"):
        check_config(load_config("pgd-at", ["model.head=projection", "device=cpu"]))
    for preset in ("simclr", "ssat-instance"):
        check_config(load_config(preset, ["device=cpu"]))


# -- runs ------------------------------------------------------------------------------------------------------
TINY = ["data.train_size=100", "batch_size=50", "validation.n=40", "evaluation.n=40", "evaluation.attacks=[pgd20]",
        "evaluation.sanity=false", "knn.k=10", "device=cpu"]


def test_a_tiny_simclr_run_is_evaluated_by_its_knn_classifier(tmp_path, fashion_mnist, one_thread):
    from advlab.engine.train import train

    import json

    train("simclr", tmp_path / "simclr", overrides=TINY + ["epochs=1"], progress=False)
    summary = json.loads((tmp_path / "simclr" / "summary.json").read_text())
    for which in ("best", "last"):
        assert summary[which]["classifier"]["kind"] == "knn"
        assert summary[which]["classifier"]["bank"] == 100 and summary[which]["classifier"]["k"] == 10
    (row,) = summary["history_tail"]
    assert row["contrastive_loss"] == pytest.approx(row["train_loss"], rel=1e-5)
    assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_robust"] <= row["val_clean"] <= 1


@pytest.mark.slow
def test_a_stopped_and_resumed_ssat_instance_run_ends_with_the_uninterrupted_metrics(
        tmp_path, fashion_mnist, one_thread, whole_and_resumed, training_rows):
    from advlab.config import load_config
    from advlab.runs import load_checkpoint

    config = load_config("ssat-instance", TINY + ["epochs=2", "perturbation.steps=2"])
    whole, resumed = whole_and_resumed(config, tmp_path, stop_after=1)
    assert len(training_rows(whole)) == 2 and training_rows(resumed) == training_rows(whole)  # exactly: same views, starts and steps
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(resumed / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
