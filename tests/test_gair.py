"""GAIR weights, their burn-in and lambda schedules, early-stopped PGD (FAT) and the GAIRAT presets."""
import json
import math

import pytest
import torch

from advlab.errors import AdvlabError, ConfigError
from advlab.recipes import RecipeEnv, Step, View, create_recipe, combine, part_options
from advlab.recipes.weighting.gair import GairOptions, GairWeighting, gair_weights


# methods.md part A 5.3: GAIR weights for K = 10 before normalisation
TABLE = {
    -1.0: [.9997, .9975, .9820, .8808, .5000, .1192, .0180, .0025, .0003, 4.5e-5, 6.1e-6],
    0.0: [1.000, .9997, .9975, .9820, .8808, .5000, .1192, .0180, .0025, .0003, 4.5e-5],
    3.0: [1.000, 1.000, 1.000, 1.000, .9997, .9975, .9820, .8808, .5000, .1192, .0180],
}


def env(epochs=10, eps=0.1):
    return RecipeEnv(num_train=100, num_classes=10, epochs=epochs, eps=eps, norm="linf", device=torch.device("cpu"))


def gair(epochs=10, **options):
    return GairWeighting(GairOptions(**options), env(epochs))


def step_with(kappa, steps_taken=None, steps=10):
    """A step whose ``adv`` view carries ``kappa``, K = ``steps`` and the steps each sample took."""
    kappa = torch.as_tensor(kappa, dtype=torch.int64)
    taken = torch.full_like(kappa, 10) if steps_taken is None else torch.as_tensor(steps_taken)
    x = torch.zeros(len(kappa), 1)
    step = Step(model=None, x=x, y=torch.zeros_like(kappa), index=torch.arange(len(kappa)), epoch=0)
    step.views = {"clean": View(x=x), "adv": View(x=x, kappa=kappa, steps=steps, steps_taken=taken)}
    return step


# -- the weights ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lam", sorted(TABLE))
def test_weights_match_the_reference_table_and_normalise_to_mean_one(lam):
    kappa = torch.arange(11)
    raw = gair_weights(kappa, 10, lam, normalize=False)
    assert torch.allclose(raw, torch.tensor(TABLE[lam], dtype=torch.float64), atol=1e-4, rtol=0)
    w = gair_weights(kappa, 10, lam)
    assert abs(w.mean().item() - 1.0) < 1e-12
    assert torch.allclose(w, raw / raw.mean(), rtol=1e-10)
    part_w = gair(burn_in=0, lam=lam).weights(step_with(kappa))  # what the objective gets: float32
    assert part_w.dtype == torch.float32 and abs(part_w.double().mean().item() - 1.0) < 1e-6


def test_sigmoid_and_discrete_forms():
    kappa = torch.arange(11)
    sig = gair_weights(kappa, 10, -1.0, "sigmoid", normalize=False)
    assert torch.allclose(sig, torch.sigmoid(-1.0 + 5 * (5 - kappa.double()) / 5))
    disc = gair_weights(kappa, 10, 123.0, "discrete", normalize=False)  # lambda plays no part
    assert torch.allclose(disc, (11 - kappa.double()) / 11)
    for form in ("tanh", "sigmoid", "discrete"):
        assert abs(gair_weights(kappa[:7], 10, 0.5, form).mean().item() - 1) < 1e-12


@pytest.mark.parametrize("form", ["tanh", "sigmoid", "discrete"])
def test_weights_stay_finite_and_positive_for_any_lambda(form):
    mixed = torch.tensor([0, 1, 5, 9, 10, 10, 3])
    all_k = torch.full((8,), 10)
    lams = [float(v) for v in torch.linspace(-20, 20, 81)] + [-1e30, 1e30, -math.inf, math.inf]
    for lam in lams:
        for kappa in (mixed, all_k):
            w = gair_weights(kappa, 10, lam, form)
            assert torch.isfinite(w).all() and (w > 0).all(), (lam, kappa)
            assert abs(w.mean().item() - 1) < 1e-12
        assert torch.allclose(gair_weights(all_k, 10, lam, form), torch.ones(8, dtype=torch.float64))
    for lam in (-20.0, -1.0, 20.0, -math.inf, math.inf):  # what the objective gets: float32, still positive
        w = gair(burn_in=0, lam=lam, form=form).weights(step_with(mixed))
        assert torch.isfinite(w).all() and (w > 0).all() and abs(w.double().mean().item() - 1) < 1e-6
    with pytest.raises(AdvlabError):
        gair_weights(mixed, 10, math.nan)


def test_smaller_lambda_is_sharper():
    kappa = torch.tensor([0, 2, 4, 6, 8, 10])
    ess = [1 / (gair_weights(kappa, 10, lam) ** 2).mean().item() for lam in (3.0, 0.0, -1.0, -3.0)]
    assert ess == sorted(ess, reverse=True) and ess[0] < 1


# -- burn-in and lambda schedules ---------------------------------------------------------------------

def test_burn_in_fraction_epochs_and_none():
    part = gair(epochs=10, burn_in=0.5)
    assert [part.active(e) for e in range(10)] == [False] * 5 + [True] * 5
    part = gair(epochs=120, burn_in=0.5)  # GAIRAT's 60 of 120
    assert not part.active(59) and part.active(60)
    part = gair(epochs=10, burn_in=3)
    assert not part.active(2) and part.active(3)
    assert gair(epochs=10, burn_in=0).active(0)
    part = gair(epochs=10, burn_in=0.5)
    part.on_epoch_start(4)
    assert part.weights(step_with([0, 10])) is None and part.lam() is None
    part.on_epoch_start(5)
    assert part.weights(step_with([0, 10])) is not None and part.lam() == -1.0


def test_lambda_schedules_give_what_their_names_say():
    fixed = gair(epochs=120, burn_in=0.5, lam=-1.0, lam_schedule="fixed")
    assert [fixed.lam(e) for e in (0, 59, 60, 90, 119)] == [None, None, -1.0, -1.0, -1.0]

    linear = gair(epochs=11, burn_in=0.5, lam=-1.0, lam_schedule="linear", lam_start=4.0)
    # active epochs 6..10: lambda goes 4 -> -1 in equal steps, -1 at the last epoch
    assert linear.lam(5) is None
    assert [linear.lam(e) for e in range(6, 11)] == pytest.approx([4.0, 2.75, 1.5, 0.25, -1.0])
    assert all(math.isfinite(linear.lam(e)) for e in range(6, 11))
    with pytest.raises(ConfigError):
        gair(lam_schedule="linear", lam_start=math.inf)  # the official default that yields NaN

    piecewise = gair(epochs=120, burn_in=0.5, lam=-1.0, lam_schedule="piecewise")  # intended official schedule
    assert [piecewise.lam(e) for e in (59, 60, 89, 90, 109, 110, 119)] == [None, -1.0, -1.0, -2.0, -2.0, -2.5, -2.5]
    custom = gair(epochs=10, burn_in=2, lam=0.0, lam_schedule="piecewise", lam_pieces=[[6, -3.0], [0.4, -1.0]])
    assert [custom.lam(e) for e in range(10)] == [None, None, 0.0, 0.0, -1.0, -1.0, -3.0, -3.0, -3.0, -3.0]


def test_bad_options_are_config_errors():
    # ranges are declared on the Options fields and checked where options are built (config, create_recipe)
    with pytest.raises(ConfigError, match=r"^weighting\.burn_in: must be >= 0, got -1"):
        part_options("weighting", "gair", {"burn_in": -1})
    with pytest.raises(ConfigError, match=r"^weighting\.steps: must be >= 1, got 0"):
        part_options("weighting", "gair", {"steps": 0})
    assert part_options("weighting", "gair", {"burn_in": 0, "steps": 1}) == GairOptions(burn_in=0, steps=1)
    # checks across fields or inside list values stay in the part
    with pytest.raises(ConfigError, match=r"weighting\.lam_pieces\[0\]"):
        gair(lam_schedule="piecewise", lam_pieces=[[0.5]])
    with pytest.raises(ConfigError, match=r"weighting\.lam"):
        gair(lam=math.nan)


# -- kappa and K from the perturbation ---------------------------------------------------------------

def recipe_spec(**parts):
    spec = {"labels": ("hard", {}), "perturbation": ("pgd", {}), "weighting": ("gair", {}), "objective": ("ce", {})}
    spec.update(parts)
    return spec


def test_without_kappa_gair_is_refused_when_the_recipe_is_built():
    # the old design failed at the first step (even in the burn-in); now the recipe check refuses it before
    # any step, naming both parts, the missing fact and the perturbations that give it
    with pytest.raises(ConfigError) as info:
        create_recipe(recipe_spec(perturbation=("none", {})), env())
    message = str(info.value)
    assert "weighting 'gair'" in message and "perturbation 'none'" in message
    assert "kappa" in message and "pgd" in message
    for perturbation in ("pgd", "fat", "fgsm"):  # every attack gives kappa
        create_recipe(recipe_spec(perturbation=(perturbation, {})), env())


def test_number_of_steps_from_option_or_the_adv_view():
    kappa = [0, 3, 5]
    assert gair(steps=5).steps(step_with(kappa, steps=7)) == 5  # the option wins
    assert gair().steps(step_with(kappa, steps=7)) == 7
    # K is the steps the attack was given, not the steps the samples took (early-stopped or not)
    assert gair().steps(step_with(kappa, steps_taken=[6, 6, 6], steps=7)) == 7
    assert gair().steps(step_with(kappa, steps_taken=[2, 6, 6], steps=7)) == 7
    with pytest.raises(AdvlabError, match="weighting.steps"):
        gair().steps(step_with(kappa, steps=None))  # a view with kappa but no K
    assert gair(steps=7).steps(step_with(kappa, steps=None)) == 7
    with pytest.raises(AdvlabError, match="kappa outside"):
        gair(burn_in=0, steps=4).weights(step_with(kappa))


def test_epoch_metrics_report_histogram_weights_and_ess():
    part = gair(burn_in=1, lam=0.0)
    part.on_epoch_start(0)
    part.weights(step_with([0, 0, 10, 5]))
    m = part.epoch_metrics()
    assert m["gair_active"] is False and m["gair_lambda"] is None and m["gair_ess"] is None
    assert m["gair_kappa_hist"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    part.on_epoch_start(1)
    batches = [torch.tensor([0, 0, 10, 5]), torch.tensor([10, 10, 3, 7])]
    ws = [part.weights(step_with(k)) for k in batches]
    m = part.epoch_metrics()
    json.dumps(m)  # goes into metrics.jsonl
    assert m["gair_active"] is True and m["gair_lambda"] == 0.0
    assert sum(m["gair_kappa_hist"]) == 8 and m["gair_kappa_hist"][10] == 3
    assert m["gair_kappa_mean"] == pytest.approx(45 / 8)
    assert m["gair_weight_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m["gair_weight_min"] == pytest.approx(min(w.min().item() for w in ws), rel=1e-6)
    assert m["gair_weight_max"] == pytest.approx(max(w.max().item() for w in ws), rel=1e-6)
    ess = [w.double().sum() ** 2 / (len(w) * (w.double() ** 2).sum()) for w in ws]
    assert m["gair_ess"] == pytest.approx(float(sum(ess) / 2), rel=1e-6)
    raw = torch.cat([gair_weights(k, 10, 0.0, normalize=False) for k in batches])
    assert m["gair_raw_weight_mean"] == pytest.approx(raw.mean().item(), rel=1e-6)


@pytest.mark.parametrize("term, weighted", [
    ("auto", {"boundary"}), ("boundary", {"boundary"}), ("natural", {"natural"}), ("all", {"natural", "boundary"})])
def test_trades_weights_go_on_the_kl_term_by_default(term, weighted):
    from advlab.recipes.labels.hard import HardLabels
    from advlab.recipes.objectives.trades import Trades, TradesOptions, kl_per_sample

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, x_adv = torch.rand(5, 4), torch.rand(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    kappa = torch.tensor([0, 2, 5, 8, 10])
    part = gair(burn_in=0, lam=0.0, term=term)
    labels, objective = HardLabels(None, env()), Trades(TradesOptions(beta=6.0), env())
    step = Step(model=model, x=x, y=y, index=torch.arange(5), epoch=0)  # the stages after the perturbation
    step.views = {"clean": View(x=x), "adv": View(x=x_adv, kappa=kappa, steps=10, steps_taken=kappa)}
    step.outputs = objective.forward(step)
    step.loss_targets = labels.loss_targets(step, objective.target_views)
    step.terms = objective.terms(step)
    step.weights = part.term_weights(step, objective.term_specs)
    loss = combine(step.terms, objective.coefficients(), step.weights)
    assert {name for name, w in step.weights.items() if w is not None} == weighted
    w = gair_weights(kappa, 10, 0.0).float()
    ce = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    kl = kl_per_sample(model(x), model(x_adv))
    natural = (ce * w) if "natural" in weighted else ce
    boundary = (kl * w) if "boundary" in weighted else kl
    expected = natural.mean() + 6.0 * boundary.mean()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_gair_terms_auto_follow_the_adversarial_view_and_old_names_are_refused():
    from advlab.recipes import part_class

    specs = {name: part_class("objective", name).term_specs for name in ("ce", "trades", "mart")}
    auto = gair()
    assert auto.weighted_terms(specs["ce"]) == ["adversarial"]
    assert auto.weighted_terms(specs["trades"]) == ["boundary"]  # GAIR-TRADES
    assert auto.weighted_terms(specs["mart"]) == ["adversarial", "boundary"]
    for old in ("robust", "both"):  # the values of the old design name no term
        with pytest.raises(ConfigError, match=f"weights term '{old}', which objective 'trades' does not have"):
            create_recipe(recipe_spec(weighting=("gair", {"term": old}), objective=("trades", {})), env())


# -- presets ----------------------------------------------------------------------------------------

def test_presets_resolve_to_their_parts():
    from advlab.config import load_config

    expected = {
        "gairat": ("pgd", "gair", "ce", -1.0), "gair-trades": ("pgd", "gair", "trades", 3.0),
        "gair-mart": ("pgd", "gair", "mart", -1.0), "gair-fat": ("fat", "gair", "ce", 0.0),
        "fat": ("fat", "uniform", "ce", None),
    }
    for name, (perturbation, weighting, objective, lam) in expected.items():
        c = load_config(name)
        assert c.description
        assert (c.perturbation.name, c.weighting.name, c.objective.name) == (perturbation, weighting, objective)
        assert c.evaluation.attacks == ["pgd20", "cw20", "pgd20-scaled", "autoattack"]
        if lam is not None:
            assert c.weighting.options["lam"] == lam and c.weighting.options["burn_in"] == 0.5
    assert load_config("gair-trades").perturbation.options["loss"] == "kl"
    assert load_config("gair-fat").perturbation.options["dynamic_tau"] == "gair-fat"
    assert load_config("fat").perturbation.options["dynamic_tau"] == "fat"


# -- FAT: early-stopped PGD ---------------------------------------------------------------------------

def fat(epochs=10, **options):
    from advlab.recipes.perturbation.fat import FATOptions, FATPerturbation

    return FATPerturbation(FATOptions(**options), env(epochs, eps=1.0))


def test_fat_tau_schedules():
    official = fat(epochs=120, dynamic_tau="fat")  # FAT.py: 0 (t <= 50), 1 (t <= 90), 2
    assert [official.tau(e) for e in (0, 49, 50, 89, 90, 119)] == [0, 0, 1, 1, 2, 2]
    gair_fat = fat(epochs=120, dynamic_tau="gair-fat")  # GAIR_FAT.py: 0 (t <= 40), 3 (t <= 70), 6
    assert [gair_fat.tau(e) for e in (39, 40, 69, 70, 119)] == [0, 3, 3, 6, 6]
    pairs = fat(epochs=10, tau=1, tau_schedule=[[0.5, 3], [8, 4]])
    assert [pairs.tau(e) for e in range(10)] == [1] * 5 + [3] * 3 + [4] * 2
    assert fat(tau=2).tau(7) == 2
    pairs.on_epoch_start(6)
    assert pairs.early_stop() == 3
    with pytest.raises(ConfigError):
        fat(tau_schedule=[[0, 1]], dynamic_tau="fat")
    with pytest.raises(ConfigError):
        fat(tau_schedule=[[0, 1.5]])


class Threshold(torch.nn.Module):
    """Two classes split at pixel value 0.5; PGD against class 0 raises the pixel by one step each iteration."""

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        return torch.stack([0.5 - v, v - 0.5], 1) * 10


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_fat_stops_each_example_tau_steps_after_its_first_misclassification(tau):
    K, alpha = 10, 0.05
    first_wrong = torch.tensor([0, 1, 2, 4, 7, 9])  # iterate x^(j) is wrong iff j >= first_wrong
    x = (0.5 - alpha / 2 - alpha * (first_wrong - 1).double()).float().clamp(0, 1).view(-1, 1, 1, 1)
    y = torch.zeros(len(x), dtype=torch.int64)
    part = fat(tau=tau, steps=K, step_size=alpha, random_start="none")
    step = Step(model=Threshold(), x=x, y=y, index=torch.arange(len(x)), epoch=0)
    step.attack_target = y
    views = part.perturb(step)
    assert set(views) == {"adv"}
    adv = views["adv"]
    taken = torch.clamp(first_wrong + tau, max=K)
    assert adv.steps_taken.tolist() == taken.tolist()
    assert torch.allclose(adv.x.flatten(), (x.flatten() + alpha * taken).clamp(0, 1), atol=1e-5)
    assert adv.kappa.tolist() == first_wrong.clamp(max=K).tolist()
    assert adv.steps == K
    assert part.epoch_metrics() == {"fat_tau": tau, "fat_mean_steps": pytest.approx(taken.double().mean().item())}


def test_gair_reads_k_from_fat_when_examples_stop_early():
    x = torch.tensor([0.525, 0.375, 0.075]).view(-1, 1, 1, 1)  # first wrong at iterates 0, 3 and 9
    y = torch.zeros(3, dtype=torch.int64)
    weighting = gair(burn_in=0, lam=0.0)
    step = Step(model=Threshold(), x=x, y=y, index=torch.arange(3), epoch=0)
    step.attack_target = y
    step.views = {"clean": View(x=x), **fat(tau=0, steps=10, step_size=0.05, random_start="none").perturb(step)}
    assert step.views["adv"].steps_taken.tolist() == [0, 3, 9]  # none took all K = 10 steps
    w = weighting.weights(step)
    assert torch.allclose(w.double(), gair_weights(torch.tensor([0, 3, 9]), 10, 0.0), rtol=1e-6)


# -- end to end --------------------------------------------------------------------------------------

@pytest.mark.usefixtures("fashion_mnist")
@pytest.mark.slow
def test_gairat_trains_and_logs_its_diagnostics(tmp_path):
    from advlab.engine.train import train

    overrides = ["data.train_size=100", "batch_size=50", "perturbation.steps=2", "validation.n=20",
                 "device=cpu", "epochs=2", "weighting.burn_in=1"]
    train("gairat", tmp_path / "gairat", overrides=overrides, progress=False, evaluate=False)
    rows = [json.loads(line) for line in (tmp_path / "gairat" / "metrics.jsonl").read_text().splitlines()]
    assert [r["gair_active"] for r in rows] == [False, True]
    for r in rows:
        assert len(r["gair_kappa_hist"]) == 3 and sum(r["gair_kappa_hist"]) == 100
    assert rows[1]["gair_lambda"] == -1.0 and 0 < rows[1]["gair_ess"] <= 1
    assert rows[1]["gair_weight_min"] <= 1 <= rows[1]["gair_weight_max"]

