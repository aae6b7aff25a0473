"""The speed options change how the step runs, never what it computes: compile, channels-last, attack precision,
and ``advlab bench``."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from advlab.config import load_config
from advlab.engine.acceleration import COMPILE_MODES, as_step_input, step_model
from advlab.engine.bench import FlopCount, measure
from advlab.models import create_model
from advlab.recipes import RecipeEnv, create_recipe, compute_loss


def _recipe(preset: str, batch: int):
    c = load_config(preset, ["device=cpu"])
    env = RecipeEnv(num_train=batch, num_classes=10, epochs=c.epochs, eps=c.eps, norm=c.norm,
                    device=torch.device("cpu"), seed=0)
    return create_recipe(c.recipe_spec(), env)


def _batch(n=32, shape=(1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g), torch.arange(n)


def _step(model, preset="pgd-at", channels_last=False, **kwargs):
    x, y, index = _batch()
    torch.manual_seed(1)  # the attack's random start
    model.train()
    return compute_loss(model, as_step_input(x, channels_last), y, index, 0, _recipe(preset, len(y)), **kwargs)


def _conv_net() -> torch.nn.Module:
    # small and quick to compile; small-cnn compiles correctly too as the attack runs it (parameters frozen),
    # but torch 2.13.0's CPU inductor gets its backward wrong when input and parameters both need gradients
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 13 * 13, 10))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
def test_compiled_step_gives_the_same_attack_and_loss_as_eager(one_thread):
    from advlab.engine.acceleration import check_compiled

    torch.manual_seed(0)
    eager = _conv_net()
    compiled_copy = copy.deepcopy(eager)
    compiled = step_model(compiled_copy, "default")
    assert compiled is not compiled_copy  # really a compiled module
    a, b = _step(eager), _step(compiled)
    x_a, x_b = a.views["adv"].x, b.views["adv"].x
    # sign steps: a gradient entry within rounding of 0 may flip; all but a handful of pixels are identical
    differ = (x_a - x_b).abs() > 1e-6
    assert differ.float().mean() < 1e-3, f"{int(differ.sum())} of {x_a.numel()} pixels differ"
    assert torch.allclose(a.loss, b.loss, rtol=1e-4, atol=1e-5), (a.loss.item(), b.loss.item())
    assert torch.allclose(a.outputs["adv"], b.outputs["adv"], rtol=1e-3, atol=1e-4)
    # gradients reach the shared parameters through the compiled module, the same as eager's
    a.loss.backward()
    b.loss.backward()
    for p, q in zip(eager.parameters(), compiled_copy.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-6)
    x, y, _ = _batch()
    found = check_compiled(compiled_copy, compiled, x, y)
    assert found["input_gradient_cosine"] > 1 - 1e-6 and found["logits_error"] < 1e-5


class _ZeroInputGradient(torch.autograd.Function):
    """Identity forward, no gradient to the input: the fault of torch 2.13.0's CPU inductor on small-cnn when its
    parameters require gradients too."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class _Faulty(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_ZeroInputGradient.apply(x))


def test_check_compiled_refuses_a_wrong_gradient():
    from advlab.engine.acceleration import check_compiled
    from advlab.errors import AdvlabError

    torch.manual_seed(0)
    eager = _conv_net()
    x, y, _ = _batch()
    assert check_compiled(eager, eager, x, y) == {"logits_error": 0.0, "input_gradient_cosine": pytest.approx(1.0)}
    with pytest.raises(AdvlabError, match="input gradient cosine 0 < 0.99.*compile=none"):
        check_compiled(eager, _Faulty(eager), x, y)


def test_channels_last_gives_the_same_loss_and_runs_channels_last(one_thread):
    torch.manual_seed(0)
    base = create_model("small-cnn", num_classes=10, in_channels=1)
    cl_model = step_model(copy.deepcopy(base), channels_last=True)
    formats = []  # the memory format of the second convolution's input (several channels: unambiguous)
    conv = [m for m in cl_model.modules() if isinstance(m, torch.nn.Conv2d)][1]
    conv.register_forward_pre_hook(lambda m, inp: formats.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    a, b = _step(base), _step(cl_model, channels_last=True)
    assert len(formats) >= 11 and all(formats)
    assert torch.allclose(a.loss, b.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(a.views["adv"].x, b.views["adv"].x.contiguous())


def test_channels_last_input_conversion():
    x = torch.rand(2, 3, 4, 4)
    assert as_step_input(x, True).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(as_step_input(x, True), x)
    assert as_step_input(x, False) is x
    flat = torch.rand(2, 5)
    assert as_step_input(flat, True) is flat


@pytest.mark.parametrize("attack_precision, attack_dtype", [("fp32", torch.float32), ("same", torch.bfloat16)])
def test_attack_precision_fp32_runs_the_attack_in_fp32_inside_a_bf16_step(attack_precision, attack_dtype, one_thread):
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    seen: list[tuple[bool, torch.dtype]] = []  # (training mode, logits dtype) of every forward
    model.register_forward_hook(lambda m, inp, out: seen.append((m.training, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _step(model, attack_precision=attack_precision)
    attack = [dtype for training, dtype in seen if not training]  # the attack runs the model in eval mode
    train = [dtype for training, dtype in seen if training]
    assert len(attack) >= 10 and train
    assert set(attack) == {attack_dtype}
    assert set(train) == {torch.bfloat16}


@pytest.mark.slow
def test_compiled_trainer_saves_the_eager_models_weights(tmp_path, fashion_mnist):
    from advlab.engine.run import create_run
    from advlab.engine.state import TrainingState, checkpoint_payload

    config = load_config("pgd-at", ["device=cpu", "compile=default", "channels_last=true", "data.train_size=20",
                                    "validation.n=10"])
    run = create_run(config, progress=False)
    assert run.step_model is not run.model
    keys = set(checkpoint_payload(run, TrainingState(epoch=1))["model"])
    assert keys == set(create_model("small-cnn", num_classes=10, in_channels=1).state_dict())
    assert not any("_orig_mod" in k for k in keys)


@pytest.mark.parametrize("key, value", [("compile", "fastest"), ("attack_precision", "fp8"), ("channels_last", "maybe")])
def test_speed_options_are_checked(key, value):
    from advlab.engine.config_checks import check_config
    from advlab.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        check_config(load_config("pgd-at", [f"{key}={value}"]))


def test_compile_choices_come_from_the_registry():
    from advlab.engine.choices import choices

    assert choices("compile") == list(COMPILE_MODES)


def test_flop_count_of_a_linear_layer_and_its_input_gradient():
    lin = torch.nn.Linear(5, 3, bias=False)
    x = torch.rand(4, 5, requires_grad=True)
    with FlopCount() as counter:
        lin(x)
    assert counter.flops == 2 * 4 * 5 * 3  # one (4x5) @ (5x3) product
    with FlopCount() as counter:
        (grad,) = torch.autograd.grad(lin(x).sum(), x)  # the attack's backward: to the input only
    assert counter.flops == 2 * (2 * 4 * 5 * 3)


def test_measure_reports_a_rate_from_its_own_timing(one_thread):
    config = load_config("pgd-at", ["device=cpu", "batch_size=8", "perturbation.steps=2"])
    result = measure(config, (1, 28, 28), batches=2, warmup=1, flops=True)
    assert result.images_per_second == pytest.approx(1000 * 8 / result.ms_per_step)
    # 2 attack steps (forward + input gradient) and a training step (forward + full backward)
    forward = FlopCount()
    model = create_model("small-cnn", num_classes=10, in_channels=1)
    with forward, torch.no_grad():
        model(torch.rand(8, 1, 28, 28))
    ratio = result.flops_per_image / (forward.flops / 8)
    assert 6 < ratio < 9, ratio
    assert result.peak_memory_mib > 0 and result.mfu is None


def test_bench_command_prints_json(capsys, one_thread):
    from advlab.cli import main

    assert main(["bench", "--batch-size", "4", "--steps", "1", "--batches", "1", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_size"] == 4 and out["images_per_second"] > 0 and out["shape"] == [1, 28, 28]


@pytest.mark.parametrize("argv, message", [
    (["bench", "--shape", "3x32"], "shape must be three"),
    (["bench", "--compile", "fastest"], "compile"),
    (["bench", "--largest-batch", "--device", "cpu", "--batches", "1", "--warmup", "0", "--batch-size", "2",
      "--steps", "1"], "needs a CUDA device"),
])
def test_bench_command_errors_are_one_line(argv, message, capsys):
    from advlab.cli import main

    with pytest.raises(SystemExit) if argv[1] == "--shape" else _no_raise():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_attack_runs_with_parameters_frozen_and_restores_them():
    torch.manual_seed(0)
    model = _conv_net()
    model[0].bias.requires_grad_(False)  # a user's frozen parameter stays frozen
    during: list[bool] = []
    model.register_forward_hook(lambda m, inp, out: during.append(
        any(p.requires_grad for p in m.parameters())) if not m.training else None)
    step = _step(model)
    assert len(during) >= 10 and not any(during)  # the backward of the attack is to the input only
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True]
    step.loss.backward()
    assert model[0].weight.grad is not None and model[0].bias.grad is None


def test_a_compiler_with_wrong_gradients_stops_the_run_before_anything_is_written(tmp_path, monkeypatch,
                                                                                   fashion_mnist, one_thread):
    import advlab.engine.run as run_module
    from advlab.engine.train import train
    from advlab.errors import AdvlabError

    monkeypatch.setattr(run_module, "step_model", lambda model, mode, channels_last: _Faulty(model))
    out = tmp_path / "run"
    with pytest.raises(AdvlabError, match="compile=none"):
        train("pgd-at", out, overrides=["device=cpu", "compile=default", "data.train_size=40",
                                                       "validation.n=10", "batch_size=20"], progress=False)
    assert not out.exists()
