"""NoiLIn labels: the realised flip rate (overall and at every batch position), the noise models, one draw
per step shared by attack and loss, the automatic rate schedule and its caps, and exact resume."""
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.errors import ConfigError
from advlab.recipes import RecipeEnv, Step, create_recipe, compute_loss
from advlab.recipes.labels.noilin import NoilinLabels, NoilinOptions, resolve_half_cap_epoch
from advlab.recipes.objectives.trades import kl_per_sample

C = 10


def env(**kw) -> RecipeEnv:
    base = dict(num_train=1000, num_classes=C, epochs=120, eps=0.1, norm="linf", device=torch.device("cpu"),
                seed=0)
    base.update(kw)
    return RecipeEnv(**base)


def noilin(env_kw: dict | None = None, **kw) -> NoilinLabels:
    return NoilinLabels(NoilinOptions(**kw), env(**(env_kw or {})))


def make_step(labels: NoilinLabels, y: torch.Tensor, model: nn.Module | None = None, x=None) -> Step:
    return Step(model=model, x=x, y=y, index=torch.arange(len(y)), epoch=0)


def draw(labels: NoilinLabels, y: torch.Tensor) -> torch.Tensor:
    """One training step's noisy labels, through the part's public entry point."""
    return labels.attack_target(make_step(labels, y))


def batches(n_batches: int, size: int = 128, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, C, (n_batches, size), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# the noise itself


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.6])
def test_realised_rate_overall_and_at_every_batch_position(rate):
    ys = batches(8000)  # 1,024,000 labels, 8,000 per batch position
    part = noilin(rate=rate)
    flips = torch.stack([draw(part, y) != y for y in ys]).float()
    assert abs(flips[:800].mean().item() - rate) < 0.005  # the first 102,400 labels
    assert abs(flips.mean().item() - rate) < 0.005
    per_position = flips.mean(0)
    assert (per_position - rate).abs().max().item() < 0.02
    assert part.epoch_metrics()["noise_flipped"] == pytest.approx(flips.mean().item())


def test_the_position_check_catches_a_generator_reseeded_per_batch():
    """The official code reseeds per batch; the same check on that scheme fails (so the test has power)."""
    from advlab.data import flip_labels

    ys = batches(2000)
    flips = torch.stack([flip_labels(y, 0.2, C, generator=torch.Generator().manual_seed(7)) != y for y in ys])
    assert (flips.float().mean(0) - 0.2).abs().max().item() > 0.5


def test_symmetric_noise_never_keeps_the_label_and_spreads_uniformly():
    ys = batches(200).flatten()
    part = noilin(rate=1.0, max_rate=1.0)
    noisy = draw(part, ys)
    assert (noisy != ys).all()
    offsets = torch.bincount((noisy - ys) % C, minlength=C).float() / len(ys)
    assert offsets[0] == 0
    assert (offsets[1:] - 1 / (C - 1)).abs().max().item() < 0.01


def test_pair_noise_moves_to_the_next_class():
    ys = batches(100).flatten()
    part = noilin(rate=0.3, kind="pair")
    noisy = draw(part, ys)
    changed = noisy != ys
    assert torch.equal(noisy[changed], (ys[changed] + 1) % C)
    assert abs(changed.float().mean().item() - 0.3) < 0.02


def test_zero_rate_is_the_hard_labels():
    y = batches(1)[0]
    part = noilin(rate=0.0, schedule="fixed")
    assert torch.equal(draw(part, y), y)


# --------------------------------------------------------------------------------------------------
# one draw per step, attack vs loss


def test_attack_and_loss_share_one_draw_per_step_and_steps_differ():
    y = batches(1)[0]
    part = noilin(rate=0.5)
    s = make_step(part, y)
    attack = part.attack_target(s)
    targets = part.loss_targets(s, ("adv", "clean"))
    assert set(targets) == {"adv", "clean"}
    assert torch.equal(targets["adv"], attack) and torch.equal(targets["clean"], attack)
    assert torch.equal(part.loss_targets(s, ("clean",))["clean"], attack)  # still the same Step: no new draw
    assert part.seen == len(y)  # drawn once
    assert not torch.equal(draw(part, y), attack)  # the next step draws afresh


@pytest.mark.parametrize("apply_to, attack_noisy, loss_noisy", [
    ("both", True, True), ("attack", True, False), ("loss", False, True)])
def test_apply_to_picks_the_targets_and_keeps_the_stream(apply_to, attack_noisy, loss_noisy):
    y = batches(1)[0]
    reference = noilin(rate=0.5)
    part = noilin(rate=0.5, apply_to=apply_to)
    for _ in range(3):
        want = draw(reference, y)
        s = make_step(part, y)
        a, l = part.attack_target(s), part.loss_targets(s, ("adv",))["adv"]
        assert torch.equal(a, want if attack_noisy else y)
        assert torch.equal(l, want if loss_noisy else y)


def test_loss_targets_alone_draw_the_noise():
    y = batches(1)[0]
    a, b = noilin(rate=0.5), noilin(rate=0.5)
    assert torch.equal(b.loss_targets(make_step(b, y), ("adv",))["adv"], draw(a, y))


def test_trades_noise_reaches_only_the_clean_cross_entropy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, C))
    x = torch.rand(64, 6)
    y = torch.randint(0, C, (64,))
    recipe = create_recipe({"labels": ("noilin", {"rate": 0.5, "max_rate": 0.5, "apply_to": "loss"}),
                           "perturbation": ("pgd", {"steps": 2, "loss": "kl"}), "weighting": ("uniform", {}),
                           "objective": ("trades", {"beta": 6.0})}, env())
    s = compute_loss(model, x, y, torch.arange(64), 0, recipe)
    assert torch.equal(s.attack_target, y)
    assert set(s.loss_targets) == {"clean"}
    noisy = s.loss_targets["clean"]
    assert torch.equal(noisy, draw(noilin(rate=0.5, max_rate=0.5), y))  # the step's one draw of the stream
    assert (noisy != y).any() and recipe.labels.seen == 64
    x_adv = s.views["adv"].x
    assert not torch.equal(x_adv, x)
    want = nn.functional.cross_entropy(model(x), noisy) + 6.0 * kl_per_sample(model(x), model(x_adv)).mean()
    assert torch.allclose(s.loss, want, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# the automatic schedule


def run_schedule(part: NoilinLabels, accuracies: list[float]) -> tuple[list[float], list[int]]:
    """Feed validation accuracies epoch by epoch; return the rate trained with in each epoch and the raises."""
    rates, raised = [], []
    for epoch, acc in enumerate(accuracies):
        part.on_epoch_start(epoch)
        part.on_validation(epoch, {"val_clean": 0.9, "val_robust": acc})
        m = part.epoch_metrics()
        rates.append(m["noise_rate"])
        if m["noise_raised"]:
            raised.append(epoch)
        assert m["noise_rate_next"] == part.rate
    return rates, raised


def official_raises(accuracies: list[float], tau: int) -> list[int]:
    """The official rule: a circular buffer of tau zeros; raise when the window's sum drops."""
    buffer, out = [0.0] * tau, []
    for epoch, acc in enumerate(accuracies):
        before = sum(buffer)
        buffer[epoch % tau] = acc
        if before > sum(buffer):
            out.append(epoch)
    return out


def test_rate_rises_exactly_after_a_drop_below_tau_epochs_earlier():
    accs = [0.30, 0.32, 0.34, 0.29, 0.33, 0.34, 0.28, 0.20, 0.35, 0.27]
    part = noilin(rate=0.05, gamma=0.05, tau=3, half_cap_until=None)
    rates, raised = run_schedule(part, accs)
    assert raised == [3, 6, 7, 9]  # 0.29<0.30, 0.28<0.29, 0.20<0.33, 0.27<0.28; 0.34 vs 0.34 is no drop
    expected, r = [], 0.05
    for epoch in range(len(accs)):
        expected.append(r)
        if epoch in raised:
            r *= 1.05
    assert rates == pytest.approx(expected, rel=1e-12)
    assert part.rate == pytest.approx(0.05 * 1.05 ** 4)
    assert part.raises == 4


def test_no_raise_in_the_first_tau_epochs():
    part = noilin(tau=10)
    _, raised = run_schedule(part, [0.5 - 0.01 * e for e in range(15)])
    assert raised == list(range(10, 15))


@pytest.mark.parametrize("tau", [1, 3, 10])
def test_rule_matches_the_official_window_sum(tau):
    g = torch.Generator().manual_seed(tau)
    accs = (torch.randint(200, 600, (120,), generator=g) / 1000).tolist()
    _, raised = run_schedule(noilin(tau=tau), accs)
    assert raised == official_raises(accs, tau)
    assert raised and all(e >= tau for e in raised)


def test_both_caps():
    # doubling on every drop, half cap (0.3) after epochs 0..5, then the cap 0.6
    part = noilin(rate=0.05, gamma=1.0, tau=1, max_rate=0.6, half_cap_until=5.0, env_kw={"epochs": 12})
    accs = [0.5 - 0.01 * e for e in range(12)]  # always dropping: a raise after every epoch from 1 on
    rates, raised = run_schedule(part, accs)
    assert raised == list(range(1, 12))
    assert rates == pytest.approx([0.05, 0.05, 0.1, 0.2, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6, 0.6, 0.6])
    assert max(rates[:7]) <= 0.3 and max(rates) <= 0.6


def test_half_cap_default_is_three_quarters_of_the_run():
    part = noilin(rate=0.05, gamma=1.0, tau=1, env_kw={"epochs": 120})
    assert part.half_cap_epoch == 90
    rates, _ = run_schedule(part, [1.0 - 0.001 * e for e in range(120)])
    assert max(rates[:92]) == pytest.approx(0.3)  # epochs 0..91 train under the half cap (official epoch <= 90)
    assert rates[92] == pytest.approx(0.6)


def test_fixed_schedule_keeps_the_rate():
    part = noilin(rate=0.2, schedule="fixed", tau=1)
    rates, raised = run_schedule(part, [0.5 - 0.01 * e for e in range(6)])
    assert rates == [0.2] * 6 and raised == []


@pytest.mark.parametrize("value, epochs, expected", [
    (0.75, 120, 90), (0.75, 10, 8), (0.0, 10, 0), (50.0, 120, 50), (None, 120, -1)])
def test_half_cap_epoch_resolution(value, epochs, expected):
    assert resolve_half_cap_epoch(value, epochs) == expected


@pytest.mark.parametrize("kw, key", [
    ({"rate": 1.5}, "rate"), ({"rate": -0.1}, "rate"), ({"max_rate": -0.1}, "max_rate"),
    ({"rate": 0.5, "max_rate": 0.4}, "rate"),
    ({"gamma": -1.0}, "gamma"), ({"tau": 0}, "tau"), ({"half_cap_until": 2.5}, "half_cap_until"),
    ({"half_cap_until": -1.0}, "half_cap_until")])
def test_bad_options_are_config_errors(kw, key):
    # ranges are checked on the Options fields, cross-field checks by the part: both when the recipe is built
    spec = {"labels": ("noilin", kw), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
            "objective": ("ce", {})}
    with pytest.raises(ConfigError, match=rf"^labels\.{key}\b"):
        create_recipe(spec, env())


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_state_dict_round_trip_continues_stream_and_schedule():
    y = batches(1)[0]
    accs = [0.40, 0.42, 0.39, 0.41, 0.37, 0.43, 0.36, 0.36]
    a = noilin(tau=2, gamma=0.5)
    for epoch in range(4):
        a.on_epoch_start(epoch)
        for _ in range(3):
            draw(a, y)
        a.on_validation(epoch, {"val_clean": 0.9, "val_robust": accs[epoch]})
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = noilin(tau=2, gamma=0.5)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert b.rate == a.rate and b.window == a.window and b.rate > 0.05
    for epoch in range(4, 8):
        rows = []
        for part in (a, b):
            part.on_epoch_start(epoch)
            noisy = [draw(part, y) for _ in range(3)]
            part.on_validation(epoch, {"val_clean": 0.9, "val_robust": accs[epoch]})
            rows.append((noisy, part.epoch_metrics()))
        (na, ma), (nb, mb) = rows
        assert all(torch.equal(p, q) for p, q in zip(na, nb))
        assert ma == mb


def test_state_of_another_tau_is_refused():
    a = noilin(tau=2)
    with pytest.raises(ConfigError, match="tau"):
        noilin(tau=3).load_state_dict(a.state_dict())


# --------------------------------------------------------------------------------------------------
# presets and a real run


def test_presets():
    from advlab.config import load_config

    c = load_config("noilin")
    assert (c.labels.name, c.objective.name, c.perturbation.options["loss"]) == ("noilin", "ce", "ce")
    assert c.labels.options["apply_to"] == "both" and c.labels.options["max_rate"] == 0.6
    t = load_config("trades-noilin")
    assert (t.labels.name, t.objective.name, t.perturbation.options["loss"]) == ("noilin", "trades", "kl")
    assert t.labels.options["apply_to"] == "loss" and t.labels.options["max_rate"] == 0.4
    assert c.description and t.description
    example = Path(__file__).resolve().parents[1] / "configs" / "examples" / "gairat-noilin.yaml"
    g = load_config(str(example))
    assert (g.labels.name, g.weighting.name, g.objective.name) == ("noilin", "gair", "ce")
    assert g.preset == "gairat-noilin" and g.description


TIMING = {"seconds", "train_seconds", "images_per_second"}


def metric_rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist")
def test_resumed_run_continues_the_same_noise_schedule(tmp_path, monkeypatch, whole_and_resumed):
    """A real tiny run stopped after epoch 2 and resumed logs what an uninterrupted run logs.

    Validation is scripted (robust accuracy 0.30, 0.20, 0.10: with tau 1 the rate doubles after epochs 1
    and 2), so the schedule moves for sure and the test does not spend its time on validation attacks;
    training, noise, checkpoints and resume are the real ones.
    """
    from advlab.config import load_config
    from advlab.runs import load_checkpoint
    from advlab.engine import loop

    script = [0.30, 0.20, 0.10]  # by epoch (0-indexed), which the labels part knows once the epoch started
    monkeypatch.setattr(loop, "validate", lambda run: {"val_clean": 0.5, "val_robust": script[run.recipe.labels.epoch]})
    overrides = ["data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=50",
                 "device=cpu", "epochs=3", "labels.tau=1", "labels.gamma=1.0", "labels.half_cap_until=null"]
    config = load_config("noilin", overrides)

    def stopped_after_two(run_dir):
        assert [r["noise_rate_next"] for r in metric_rows(run_dir)] == [0.05, 0.1]

    full, part = whole_and_resumed(config, tmp_path, 2, stopped_after_two)
    a, b = metric_rows(full), metric_rows(part)
    assert [r["noise_rate"] for r in a] == [r["noise_rate"] for r in b] == [0.05, 0.05, 0.1]
    assert [r["noise_raised"] for r in a] == [0, 1, 1]
    assert a == b  # every logged number, including the realised flip fraction and the training loss
    assert all(0.0 < r["noise_flipped"] < 0.3 for r in a)
    sa = load_checkpoint(full / "last.pt")["parts"]["labels"]
    sb = load_checkpoint(part / "last.pt")["parts"]["labels"]
    assert sa["rate"] == sb["rate"] == 0.2 and sa["window"] == sb["window"] == [0.10]
    assert torch.equal(sa["generator"], sb["generator"])
