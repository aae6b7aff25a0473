"""Models by name: every architecture with every activation trains, errors are clear, normalisation is a layer."""
import math

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.models import (
    MODELS, Normalize, SmallCNN, count_parameters, create_activation, create_model, list_activations, list_models,
    register_model, with_normalization,
)

BUILT_IN = ["preact-resnet18", "resnet18", "resnet18-imagenet", "resnet50-imagenet", "small-cnn", "wide-resnet",
            "wide-resnet-28-10", "wide-resnet-34-10"]
ACTIVATION_TYPES = {
    "relu": nn.ReLU, "softplus": nn.Softplus, "parametric-softplus": nn.Softplus, "silu": nn.SiLU,
    "gelu": nn.GELU, "elu": nn.ELU, "leaky-relu": nn.LeakyReLU,
}
HEAVY = {"wide-resnet-34-10", "wide-resnet-28-10", "resnet50-imagenet"}  # checked alone, at batch 1
SMALL_KWARGS = {"wide-resnet": {"depth": 10, "widen_factor": 2}}  # the generic WRN defaults to WRN-34-10
SHAPES = [(1, 28), (3, 32)]


pytestmark = pytest.mark.usefixtures("one_thread")


def check_forward_backward(model: nn.Module, in_channels: int, size: int, batch: int, num_classes: int = 10):
    torch.manual_seed(0)
    x = torch.rand(batch, in_channels, size, size, requires_grad=True)
    before, version = x.detach().clone(), x._version
    out = model(x)
    assert out.shape == (batch, num_classes)
    assert torch.isfinite(out).all()
    assert x._version == version and torch.equal(x.detach(), before), "the model changed its input in place"
    nn.functional.cross_entropy(out, torch.arange(batch) % num_classes).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def activation_types(model: nn.Module) -> set[type]:
    kinds = set(ACTIVATION_TYPES.values())
    return {type(m) for m in model.modules() if type(m) in kinds}


# --------------------------------------------------------------------------------------------------
def test_registry_lists_the_built_in_models_and_activations():
    assert list_models() == BUILT_IN
    assert list_models("wide-*") == ["wide-resnet", "wide-resnet-28-10", "wide-resnet-34-10"]
    assert list_activations() == sorted(ACTIVATION_TYPES)


@pytest.mark.parametrize("name", [n for n in list_models() if n not in HEAVY])
@pytest.mark.parametrize("activation", list_activations())
@pytest.mark.parametrize("in_channels,size", SHAPES)
def test_forward_backward_with_every_activation(name, activation, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels, activation=activation, **SMALL_KWARGS.get(name, {}))
    check_forward_backward(model, in_channels, size, batch=2)
    kinds = activation_types(model)
    assert kinds == {ACTIVATION_TYPES[activation]}, f"{name} mixes activations: {kinds}"


@pytest.mark.parametrize("name", sorted(HEAVY - {"resnet50-imagenet"}))
def test_heavy_wide_resnets(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert 30e6 < count_parameters(model) < 50e6
    check_forward_backward(model, 3, 32, batch=1)
    del model
    # the 1x28x28 path and every activation run on the small generic wide-resnet, which shares the code
    model = create_model(name, in_channels=1, activation="silu")
    assert activation_types(model) == {nn.SiLU}


# torchvision's published parameter counts (the num_params of ResNet18_Weights / ResNet50_Weights.IMAGENET1K_V1)
TORCHVISION_PARAMS = {"resnet18-imagenet": 11_689_512, "resnet50-imagenet": 25_557_032}
# nonlinearities of torchvision's layout: the stem's, 2 per basic block (8), 3 per bottleneck (16)
TORCHVISION_ACTIVATIONS = {"resnet18-imagenet": 1 + 2 * 8, "resnet50-imagenet": 1 + 3 * 16}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_imagenet_resnets_have_torchvisions_parameters_stem_and_activations(name):
    model = create_model(name, num_classes=1000)
    assert count_parameters(model) == TORCHVISION_PARAMS[name]
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d) and model.maxpool.stride == 2
    silu = create_model(name, num_classes=10, activation="silu")
    assert activation_types(silu) == {nn.SiLU}
    acts = [m for m in silu.modules() if isinstance(m, nn.SiLU)]
    assert len(acts) == TORCHVISION_ACTIVATIONS[name] and len({id(m) for m in acts}) == len(acts)
    if name == "resnet18-imagenet":  # 224 px: the stem and max-pool take it to 56, the last stage to 7 (torchvision's)
        sizes = {}
        for layer in ("layer1", "layer4"):
            getattr(silu, layer).register_forward_hook(lambda m, i, o, k=layer: sizes.update({k: o.shape[-1]}))
        check_forward_backward(silu, 3, 224, batch=1)
        assert sizes == {"layer1": 56, "layer4": 7}
    else:
        check_forward_backward(silu, 3, 64, batch=1)


def test_parameter_counts():
    assert count_parameters(create_model("small-cnn", in_channels=1)) == 312_202  # TRADES' SmallCNN on MNIST
    assert count_parameters(create_model("small-cnn", in_channels=3)) == 427_978
    assert count_parameters(create_model("resnet18")) == 11_173_962
    assert count_parameters(create_model("preact-resnet18")) == 11_172_170
    assert count_parameters(create_model("wide-resnet", depth=16, widen_factor=4)) == 2_748_890
    model = create_model("small-cnn")
    model.classifier.fc3.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 427_978 - 2000


@pytest.mark.parametrize("name", ["small-cnn", "preact-resnet18", "resnet18", "wide-resnet"])
def test_hundred_classes_and_eval_determinism(name):
    model = create_model(name, num_classes=100, **SMALL_KWARGS.get(name, {}))
    check_forward_backward(model, 3, 16 if name != "small-cnn" else 32, batch=2, num_classes=100)
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ["preact-resnet18", "resnet18", "wide-resnet"])
def test_no_hidden_nonlinearity(name):
    """With identity activations a ResNet in eval mode is affine, so no functional relu is left in forward."""
    torch.manual_seed(0)
    model = create_model(name, activation=nn.Identity, **SMALL_KWARGS.get(name, {})).double().eval()
    a, b = torch.randn(2, 3, 16, 16, dtype=torch.float64).unbind(0)
    with torch.no_grad():
        f = lambda x: model(x.unsqueeze(0))  # noqa: E731
        lhs, rhs = f(a) + f(b), f(a + b) + f(torch.zeros_like(a))
    assert torch.allclose(lhs, rhs, atol=1e-8 * (1 + lhs.abs().max().item()))


@pytest.mark.parametrize("name", ["preact-resnet18", "resnet18", "wide-resnet"])
@pytest.mark.parametrize("size", [8, 20])
def test_any_input_size_from_8(name, size):
    model = create_model(name, **SMALL_KWARGS.get(name, {})).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


def test_small_cnn_image_size():
    assert create_model("small-cnn", in_channels=1).classifier.fc1.in_features == 1024
    assert create_model("small-cnn", in_channels=3).classifier.fc1.in_features == 1600
    model = create_model("small-cnn", in_channels=1, image_size=32, dropout=0.0)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(AdvlabError, match="image_size"):
        model(torch.rand(2, 1, 28, 28))
    with pytest.raises(AdvlabError, match="image_size"):
        create_model("small-cnn", image_size=12)


def test_swapping_the_activation_replaces_every_module():
    relu = create_model("preact-resnet18")
    silu = create_model("preact-resnet18", activation="silu")
    n_relu = sum(isinstance(m, nn.ReLU) for m in relu.modules())
    assert n_relu > 0
    assert not any(isinstance(m, nn.ReLU) for m in silu.modules())
    assert sum(isinstance(m, nn.SiLU) for m in silu.modules()) == n_relu
    # a fresh module per nonlinearity, never one shared instance
    acts = [m for m in silu.modules() if isinstance(m, nn.SiLU)]
    assert len({id(m) for m in acts}) == len(acts)


def test_activations():
    for name, kind in ACTIVATION_TYPES.items():
        assert type(create_activation(name)) is kind
    assert create_activation("softplus").beta == 1
    assert create_activation("parametric-softplus").beta == 10
    assert create_activation("parametric-softplus", alpha=5).beta == 5
    assert create_activation("leaky-relu").negative_slope == 0.1
    model = create_model("small-cnn", activation="parametric-softplus", activation_kwargs={"alpha": 3.0})
    assert {m.beta for m in model.modules() if isinstance(m, nn.Softplus)} == {3.0}
    model = create_model("resnet18", activation=nn.Tanh)  # any callable returning a module
    assert activation_types(model) == set() and any(isinstance(m, nn.Tanh) for m in model.modules())


def test_errors_name_the_allowed_choices():
    with pytest.raises(AdvlabError, match="unknown model 'resnet19'.*preact-resnet18.*small-cnn"):
        create_model("resnet19")
    with pytest.raises(AdvlabError, match="unknown activation 'swish'.*gelu.*silu"):
        create_model("small-cnn", activation="swish")
    with pytest.raises(AdvlabError, match="unknown activation"):
        create_activation("tanhh")


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 18}, "depth"),
    ({"name": "small-cnn", "widht": 3}, "widht.*accepted: image_size, dropout"),
    ({"name": "small-cnn", "dropout": 1.5}, "dropout"),
    ({"name": "small-cnn", "image_size": "28"}, "image_size"),
    ({"name": "resnet18", "depth": 34}, "depth"),
    ({"name": "resnet18", "num_classes": 0}, "num_classes"),
    ({"name": "resnet18", "in_channels": 2.0}, "in_channels"),
    ({"name": "resnet18", "activation": 3}, "activation"),
    ({"name": "small-cnn", "activation": "parametric-softplus", "activation_kwargs": {"alpha": -1}}, "alpha"),
    ({"name": "small-cnn", "activation": "relu", "activation_kwargs": {"alpha": 2}}, "alpha"),
    ({"name": "small-cnn", "normalize": (0.5,)}, "normalize"),
    ({"name": "small-cnn", "normalize": ((0.5, 0.5), (1, 1))}, "channels"),
    ({"name": "small-cnn", "normalize": (0.5, 0.0)}, "std"),
])
def test_bad_arguments_raise_advlab_error(kwargs, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "wide-resnet")
    with pytest.raises(AdvlabError, match=match):
        create_model(name, **kwargs)


def test_wide_resnet_depth_message():
    with pytest.raises(AdvlabError, match=r"6n \+ 4"):
        create_model("wide-resnet", depth=30, widen_factor=1)


def test_normalize_layer_matches_manual_normalisation():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(0)
    wrapped = create_model("small-cnn", normalize=(mean, std)).eval()
    plain = create_model("small-cnn").eval()
    plain.load_state_dict(wrapped.model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), plain(manual), atol=1e-6)
    state = wrapped.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor(std))
    assert wrapped.double().normalize.mean.dtype == torch.float64  # buffers move with the model
    assert create_model("small-cnn").state_dict().keys() == wrapped.model.state_dict().keys()


def test_normalize_broadcasts_one_value():
    layer = Normalize(0.5, 0.25)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(layer(x), (x - 0.5) / 0.25)


def test_user_modules_work_like_built_ins(monkeypatch):
    class Toy(nn.Module):
        def __init__(self, num_classes, in_channels, activation, hidden=8):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), activation(), nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.net(x)

    monkeypatch.setitem(MODELS._items, "toy", Toy)
    assert "toy" in list_models()
    model = create_model("toy", num_classes=4, in_channels=1, activation="gelu", hidden=5, normalize=(0.5, 0.5))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)
    assert count_parameters(model) == 28 * 28 * 5 + 5 + 5 * 4 + 4
    with pytest.raises(AdvlabError, match="hidden"):
        create_model("toy", hiden=5)
    wrapped = with_normalization(SmallCNN(), 0.1307, 0.3081)
    assert wrapped(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_register_model_decorator(monkeypatch):
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))

    @register_model("linear-probe")
    def linear_probe(num_classes, in_channels, activation, size=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, num_classes))

    model = create_model("linear-probe", in_channels=3)
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    assert math.isclose(count_parameters(model), 3 * 64 * 10 + 10)
