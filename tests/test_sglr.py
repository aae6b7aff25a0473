"""Label refinement (SGLR, self-adaptive training): the soft-label bank, its EMA rule, index handling,
the hard-label warm-up, the confidence weights, and that the bank survives checkpoints and resume."""
import math

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError, ConfigError
from advlab.recipes import (PerturbationPart, Recipe, RecipeEnv, Step, View, create_recipe, check_recipe,
                            compute_loss, part_options, soft_cross_entropy)
from advlab.recipes.labels.hard import HardLabels
from advlab.recipes.labels.self_adaptive import SelfAdaptiveLabels, SelfAdaptiveOptions
from advlab.recipes.labels.sglr import SGLRLabels, SGLROptions
from advlab.recipes.labels.soft_label_bank import SoftLabelBank, resolve_start_epoch
from advlab.recipes.objectives.ce import CrossEntropy
from advlab.recipes.objectives.mart import Mart
from advlab.recipes.objectives.trades import Trades, TradesOptions
from advlab.recipes.weighting.self_adaptive import SelfAdaptiveWeighting, SelfAdaptiveWeightingOptions
from advlab.recipes.weighting.uniform import UniformWeighting

N, C, D = 12, 3, 5


def env(**kw) -> RecipeEnv:
    base = dict(num_train=N, num_classes=C, epochs=10, eps=0.1, norm="linf", device=torch.device("cpu"),
                first_decay_epoch=5)
    base.update(kw)
    return RecipeEnv(**base)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C))


def plain_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, C))


class Table(nn.Module):
    """Logits looked up by the sample id held in the input's first feature (known predictions)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].round().long()]


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    x_adv = (x + 0.05 * torch.randn(N, D, generator=g)).clamp(0, 1)
    return x, y, x_adv


def step(model, x, y, index, epoch, labels, x_adv=None, outputs=None) -> Step:
    """A hand-made step up to the objective's forward: views clean/adv (``x_adv`` given, not attacked) and
    the model ``outputs`` the labels part reads; for calling ``labels.loss_targets`` directly."""
    s = Step(model=model, x=x, y=y, index=index, epoch=epoch)
    s.attack_target = labels.attack_target(s)
    s.views = {"clean": View(x=x), "adv": View(x=x if x_adv is None else x_adv)}
    s.outputs = dict(outputs or {})
    return s


class GivenAdv(PerturbationPart):
    """A perturbation whose ``adv`` view is the inputs it was given (the losses stay closed-form)."""

    def __init__(self, x_adv: torch.Tensor) -> None:
        super().__init__(None, env())
        self.x_adv = x_adv

    def perturb(self, step: Step) -> dict[str, View]:
        return {"adv": View(x=self.x_adv)}


def loss_step(model, x, y, index, epoch, labels, objective=None, weighting=None, x_adv=None) -> Step:
    """One step of the real pipeline (``compute_loss``) with ``x_adv`` given instead of attacked."""
    recipe = Recipe(labels=labels, perturbation=GivenAdv(x if x_adv is None else x_adv),
                    weighting=weighting or UniformWeighting(None, env()),
                    objective=objective or CrossEntropy(None, env()))
    check_recipe(recipe)
    return compute_loss(model, x, y, index, epoch, recipe)


def sglr(**kw) -> SGLRLabels:
    e = kw.pop("env", env())
    return SGLRLabels(SGLROptions(**kw), e)


# --------------------------------------------------------------------------------------------------
# start epoch


@pytest.mark.parametrize("option, first_decay, epochs, expected", [
    (None, 5, 10, 4), (None, 0, 1, 0), (None, None, 20, 9), (0.0, 5, 10, 0), (0.5, 5, 10, 5), (3.0, 5, 10, 3),
])
def test_start_epoch_resolution(option, first_decay, epochs, expected):
    assert resolve_start_epoch(option, env(first_decay_epoch=first_decay, epochs=epochs)) == expected


@pytest.mark.parametrize("option", [-1.0, 2.5, math.inf])
def test_bad_start_epoch_is_a_config_error(option):
    with pytest.raises(ConfigError, match="start_epoch"):
        resolve_start_epoch(option, env())


@pytest.mark.parametrize("name, key", [
    ("sglr", "clean_share"), ("sglr", "one_hot_share"), ("sglr", "momentum"), ("self-adaptive", "momentum")])
def test_bad_share_is_a_config_error(name, key):
    # ranges are declared on the Options fields and checked where options are built (config, create_recipe)
    with pytest.raises(ConfigError, match=rf"^labels\.{key}: must be in \[0, 1\], got 1.5"):
        part_options("labels", name, {key: 1.5})
    spec = {"labels": (name, {key: 1.5}), "perturbation": ("pgd", {}), "weighting": ("uniform", {}),
            "objective": ("ce", {})}
    with pytest.raises(ConfigError, match=rf"labels\.{key}"):
        create_recipe(spec, env())


# --------------------------------------------------------------------------------------------------
# SGLR


def test_before_start_the_loss_is_plain_pgd_at():
    model = bn_net()
    x, y, x_adv = data()
    index = torch.arange(N)
    hard, soft = HardLabels(None, env()), sglr()
    assert soft.start == 4
    for epoch in (0, 3):
        a = loss_step(model, x, y, index, epoch, hard, x_adv=x_adv).loss
        s = loss_step(model, x, y, index, epoch, soft, x_adv=x_adv)
        assert torch.equal(a, s.loss)
        assert torch.equal(s.attack_target, y) and torch.equal(s.loss_targets["adv"], y)
    # rows were recorded as one-hot of the given labels and never moved
    assert torch.equal(soft.bank.targets, nn.functional.one_hot(y, C).float())
    assert torch.equal(soft.bank.given, y)
    assert soft.epoch_metrics()["labels_updated"] == 0


def test_after_start_the_bank_moves_by_the_ema_rule():
    # sample 0: q_adv = (.5, .25, .25), q_clean = (.25, .5, .25), given label 0
    q_adv = torch.tensor([[0.5, 0.25, 0.25]])
    q_clean = torch.tensor([[0.25, 0.5, 0.25]])
    model = Table(q_clean.log())
    x = torch.zeros(1, D)  # sample id 0 in the first feature
    y, index = torch.tensor([0]), torch.tensor([7])
    part = sglr(start_epoch=0)
    expected = [[0.945, 0.03, 0.025], [0.8955, 0.057, 0.0475]]  # 0.9 S + 0.1 (0.2 q_clean + 0.8 q_adv)
    for want in expected:
        s = step(model, x, y, index, 0, part, outputs={"adv": q_adv.log()})
        # one call gives every view its target from one update (the prediction on the first view)
        targets = part.loss_targets(s, ("adv", "clean"))
        target = targets["adv"]
        assert torch.allclose(target, torch.tensor([want]), atol=1e-6)
        assert torch.equal(targets["clean"], target)
        assert torch.allclose(part.bank.targets[7], torch.tensor(want), atol=1e-6)
    assert part.bank.targets[[0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]].abs().sum() == 0  # other rows untouched

    # the loss uses the updated row: -(S * log_softmax(z_adv)).sum(1).mean(); the step updates the bank once
    part2 = sglr(start_epoch=0)
    table = Table(torch.cat([q_clean, q_adv]).log())  # id 0: clean prediction, id 1: adversarial
    s = loss_step(table, x, y, index, 0, part2, x_adv=torch.ones(1, D))
    want = -(torch.tensor(expected[0]) * q_adv.log()).sum()
    assert torch.allclose(s.loss, want, atol=1e-6)
    assert torch.allclose(part2.bank.targets[7], torch.tensor(expected[0]), atol=1e-6)


def test_paper_form_keeps_a_share_of_the_one_hot_label():
    q_adv = torch.tensor([[0.5, 0.25, 0.25]])
    q_clean = torch.tensor([[0.25, 0.5, 0.25]])
    part = sglr(start_epoch=0, one_hot_share=0.5)
    s = step(Table(q_clean.log()), torch.zeros(1, D), torch.tensor([0]), torch.tensor([2]), 0, part,
             outputs={"adv": q_adv.log()})
    target = part.loss_targets(s, ("adv",))["adv"]
    # q = 0.5 (0.45, 0.3, 0.25) + 0.5 (1, 0, 0) = (0.725, 0.15, 0.125); S = 0.9 e_0 + 0.1 q
    assert torch.allclose(target, torch.tensor([[0.9725, 0.015, 0.0125]]), atol=1e-6)


def test_trades_view_uses_the_clean_logits_and_an_adversarial_forward():
    q_clean = torch.tensor([[0.6, 0.2, 0.2]])
    q_adv = torch.tensor([[0.2, 0.2, 0.6]])
    part = sglr(start_epoch=0)
    x_adv = torch.zeros(1, D)
    # an objective that forwards only the clean view: the adversarial prediction is one extra forward of x_adv
    s = step(Table(q_adv.log()), torch.ones(1, D) * 5, torch.tensor([1]), torch.tensor([4]), 0, part, x_adv=x_adv,
             outputs={"clean": q_clean.log()})
    target = part.loss_targets(s, ("clean",))["clean"]
    q = 0.2 * q_clean + 0.8 * q_adv
    assert torch.allclose(target, 0.9 * torch.tensor([[0.0, 1.0, 0.0]]) + 0.1 * q, atol=1e-6)
    # with the adversarial outputs of the objective's own forward (TRADES) there is no extra forward
    part2 = sglr(start_epoch=0)

    class NoForward(nn.Module):
        def forward(self, inp):
            raise AssertionError("no forward expected")

    s2 = step(NoForward(), x_adv, torch.tensor([1]), torch.tensor([4]), 0, part2, x_adv=x_adv,
              outputs={"clean": q_clean.log(), "adv": q_adv.log()})
    assert torch.allclose(part2.loss_targets(s2, ("clean",))["clean"], target, atol=1e-7)


def test_trades_sglr_runs_through_the_trades_objective():
    model = bn_net()
    x, y, x_adv = data()
    part = sglr(start_epoch=0)
    s = loss_step(model, x, y, torch.arange(N), 0, part, Trades(TradesOptions(), env()), x_adv=x_adv)
    assert torch.isfinite(s.loss) and s.outputs["adv"].shape == (N, C)
    assert set(s.loss_targets) == {"clean"} and s.loss_targets["clean"].shape == (N, C)  # the natural term's
    assert part.epoch_metrics()["labels_updated"] == N


def test_indices_are_honoured_under_shuffling():
    model = plain_net()
    x, y, x_adv = data()

    def run(order: torch.Tensor, batch: int, epochs: int) -> SGLRLabels:
        part = sglr(start_epoch=0)
        for epoch in range(epochs):
            for chunk in order.split(batch):
                loss_step(model, x[chunk], y[chunk], chunk, epoch, part, x_adv=x_adv[chunk])
        return part

    alone = run(torch.arange(N), 1, 1)  # each row from its own sample, one at a time
    shuffled = run(torch.randperm(N, generator=torch.Generator().manual_seed(3)), 5, 1)
    assert torch.equal(shuffled.bank.given, y)
    assert torch.allclose(shuffled.bank.targets, alone.bank.targets, atol=1e-6)
    # the same after two updates per row, with a different shuffle and batch size
    twice_in_order = run(torch.arange(N), 4, 2)
    twice_shuffled = run(torch.randperm(N, generator=torch.Generator().manual_seed(4)), 5, 2)
    assert torch.allclose(twice_shuffled.bank.targets, twice_in_order.bank.targets, atol=1e-6)
    assert not torch.allclose(twice_in_order.bank.targets, alone.bank.targets, atol=1e-3)
    # and every two rows differ by far more than the tolerance, so a mix-up would show
    gaps = torch.cdist(alone.bank.targets, alone.bank.targets, p=1) + torch.eye(N)
    assert gaps.min() > 2e-5


@pytest.mark.parametrize("mode, moves", [("eval", False), ("batch", False), ("train", True)])
def test_clean_forward_batch_norm_modes(mode, moves):
    model = bn_net()
    model.train()
    x, y, x_adv = data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    part = sglr(start_epoch=0, clean_bn=mode)
    logits_adv = model(x_adv)  # the objective's forward (train mode)
    s = step(model, x, y, torch.arange(N), 0, part, x_adv=x_adv, outputs={"adv": logits_adv})
    after_objective = {k: v.clone() for k, v in model.state_dict().items()}
    target = part.loss_targets(s, ("adv",))["adv"]
    changed = any(not torch.equal(after_objective[k], v) for k, v in model.state_dict().items())
    assert changed == moves
    soft_cross_entropy(logits_adv, target).mean().backward()  # the extra forward left the graph usable
    assert model[0].weight.grad is not None
    assert model.training and all(m.training for m in model.modules())
    assert not torch.equal(before["1.running_mean"], after_objective["1.running_mean"])  # sanity


def test_batch_mode_predicts_with_batch_statistics_and_eval_mode_with_running_ones():
    from advlab.recipes.labels.sglr import predict

    model = bn_net()
    x, _, _ = data()
    model.train()
    with torch.no_grad():
        model(x * 3)  # move the running statistics away from x's batch statistics
        train_p = model(x).softmax(1)
        model.eval()
        eval_p = model(x).softmax(1)
    model.train()
    stats = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    assert torch.allclose(predict(model, x, "batch"), train_p, atol=1e-6)
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].num_batches_tracked, stats[1])
    assert torch.allclose(predict(model, x, "eval"), eval_p, atol=1e-6)
    assert not torch.allclose(train_p, eval_p, atol=1e-3)


def test_epoch_metrics_report_drift_from_the_given_labels():
    part = sglr(start_epoch=0)
    bank = part.bank
    bank.record(torch.arange(4), torch.tensor([0, 1, 2, 0]))
    part.on_epoch_start(0)
    bank.update(torch.tensor([0, 1]), torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), 0.0)
    m = part.epoch_metrics()
    assert m["labels_updated"] == 2
    assert m["labels_given_mass"] == pytest.approx(0.5)  # row 0: 0 on class 0; row 1: 1 on class 1
    assert m["labels_flipped"] == pytest.approx(0.5)
    part.on_epoch_start(1)
    assert part.epoch_metrics()["labels_updated"] == 0


def test_state_dict_round_trip_is_bit_exact():
    model = plain_net()
    x, y, x_adv = data()
    part = sglr(start_epoch=0)
    loss_step(model, x, y, torch.arange(N), 0, part, x_adv=x_adv)
    state = part.state_dict()
    saved = state["bank"]["targets"].clone()
    loss_step(model, x, y, torch.arange(N), 1, part, x_adv=x_adv)
    assert torch.equal(state["bank"]["targets"], saved)  # the state is a copy, not live
    fresh = sglr(start_epoch=0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bank.targets, saved) and torch.equal(fresh.bank.given, y)
    loss_step(model, x, y, torch.arange(N), 1, fresh, x_adv=x_adv)
    assert torch.equal(fresh.bank.targets, part.bank.targets)
    with pytest.raises(AdvlabError, match="train_size"):
        sglr(env=env(num_train=N + 1)).load_state_dict(state)


# --------------------------------------------------------------------------------------------------
# self-adaptive training


def sat(**kw) -> SelfAdaptiveLabels:
    return SelfAdaptiveLabels(SelfAdaptiveOptions(**kw), env())


def sat_weights(**kw) -> SelfAdaptiveWeighting:
    return SelfAdaptiveWeighting(SelfAdaptiveWeightingOptions(**kw), env())


def test_self_adaptive_target_uses_the_view_of_the_loss():
    model = bn_net()
    x, y, x_adv = data()
    index = torch.arange(N)
    for objective, source in ((CrossEntropy(None, env()), x_adv), (Trades(TradesOptions(), env()), x)):
        labels, weighting = sat(start_epoch=0), sat_weights()
        loss_step(model, x, y, index, 0, labels, objective, weighting, x_adv=x_adv)
        with torch.no_grad():  # BN batch statistics are the same for the same batch
            p = model(source).softmax(1)
        want = 0.9 * nn.functional.one_hot(y, C).float() + 0.1 * p
        assert torch.allclose(labels.bank.targets, want, atol=1e-6)


def test_self_adaptive_weights_go_on_the_natural_term():
    weighting = sat_weights()  # term: auto, the supervised terms
    assert weighting.weighted_terms(CrossEntropy.term_specs) == ["adversarial"]  # the whole CE loss
    assert weighting.weighted_terms(Trades.term_specs) == ["natural"]  # TRADES_SAT: the clean CE, not the KL
    assert weighting.weighted_terms(Mart.term_specs) == ["adversarial"]  # the boosted CE


def test_self_adaptive_weights_average_one():
    model = bn_net()
    x, y, x_adv = data()
    labels, weighting = sat(), sat_weights()
    s = loss_step(model, x, y, torch.arange(N), 2, labels, weighting=weighting, x_adv=x_adv)
    assert s.weights == {"adversarial": None}  # before the start epoch the targets are hard: uniform
    labels.bank.targets[:4] = torch.tensor([0.4, 0.3, 0.3])  # make the confidences differ
    s = loss_step(model, x, y, torch.arange(N), 4, labels, weighting=weighting, x_adv=x_adv)
    w = s.weights["adversarial"]
    assert w.shape == (N,) and w.mean().item() == pytest.approx(1.0, abs=1e-6)
    t = s.loss_targets["adv"]
    assert torch.equal(t, labels.bank.targets)  # the rows after this step's update
    assert torch.allclose(w, t.max(1).values * N / t.max(1).values.sum())
    assert w[:4].max() < w[4:].min()
    manual = (w * -(t * s.outputs["adv"].log_softmax(1)).sum(1)).mean()
    assert torch.allclose(s.loss, manual)


@pytest.mark.parametrize("labels", ["hard", "noilin"])
def test_self_adaptive_weighting_needs_soft_targets(labels):
    # the old design raised at the first step unless labels was self-adaptive; now the recipe check refuses
    # any labels part without soft targets when the recipe is built, naming both parts
    spec = {"labels": (labels, {}), "perturbation": ("pgd", {}), "weighting": ("self-adaptive", {}),
            "objective": ("ce", {})}
    with pytest.raises(ConfigError) as info:
        create_recipe(spec, env())
    assert (f"weighting 'self-adaptive' reads soft loss targets, which labels '{labels}' does not give"
            in str(info.value))


def test_self_adaptive_weighting_also_reads_sglr_targets():
    spec = {"labels": ("sglr", {"start_epoch": 0}), "perturbation": ("none", {}),
            "weighting": ("self-adaptive", {}), "objective": ("ce", {})}
    recipe = create_recipe(spec, env())
    x, y, _ = data()
    s = compute_loss(plain_net(), x, y, torch.arange(N), 0, recipe)
    t = s.loss_targets["adv"]
    assert t.is_floating_point()
    assert torch.allclose(s.weights["adversarial"], t.max(1).values * N / t.max(1).values.sum())


def test_bank_record_only_first_sight_sets_the_row():
    bank = SoftLabelBank(4, 3, "cpu")
    bank.record(torch.tensor([1, 2]), torch.tensor([2, 0]))
    bank.update(torch.tensor([1]), torch.tensor([[1.0, 0.0, 0.0]]), 0.5)
    bank.record(torch.tensor([1, 3]), torch.tensor([2, 1]))
    assert torch.equal(bank.given, torch.tensor([-1, 2, 0, 1]))
    assert torch.equal(bank.targets, torch.tensor([[0, 0, 0], [0.5, 0, 0.5], [1, 0, 0], [0, 1, 0.0]]))


# --------------------------------------------------------------------------------------------------
# presets and a real run




@pytest.mark.parametrize("preset, labels, weighting, objective", [
    ("sglr", "sglr", "uniform", "ce"), ("trades-sglr", "sglr", "uniform", "trades"),
    ("self-adaptive", "self-adaptive", "self-adaptive", "ce"),
    ("trades-self-adaptive", "self-adaptive", "self-adaptive", "trades"),
])
def test_presets(preset, labels, weighting, objective):
    from advlab.config import load_config

    c = load_config(preset)
    assert (c.labels.name, c.weighting.name, c.objective.name) == (labels, weighting, objective)
    assert c.description
    assert load_config(preset, ["labels.start_epoch=0"]).labels.options["start_epoch"] == 0.0


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist")
def test_resume_restores_the_bank_bit_for_bit(tmp_path, one_thread, whole_and_resumed):
    from advlab.config import load_config
    from advlab.runs import load_checkpoint

    overrides = ["data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=50",
                 "device=cpu", "epochs=3", "labels.start_epoch=0"]
    config = load_config("sglr", overrides)
    full, part = whole_and_resumed(config, tmp_path, 1)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    bank_a, bank_b = a["parts"]["labels"]["bank"], b["parts"]["labels"]["bank"]
    assert torch.equal(bank_a["targets"], bank_b["targets"])
    assert torch.equal(bank_a["given"], bank_b["given"])
    assert (bank_a["given"] >= 0).all()
    assert bank_a["targets"].sum(1).sub(1).abs().max() < 1e-5  # rows stay distributions
    assert bank_a["targets"].max(1).values.min() < 1  # and have moved off one-hot
    assert a["history"][-1]["labels_updated"] == 200
