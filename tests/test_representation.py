"""Encoders from every backbone: strip_head, ContrastiveModel, FrozenEncoder, feature_extractor and moving encoder
weights between heads. References are the backbones' own layers (the input of their last linear layer, read by a
forward hook), not the functions under test."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.models import (ContrastiveModel, FrozenEncoder, create_model, encoder_state_dict, feature_extractor,
                           list_models, load_encoder_state, strip_head)
from advlab.models.representation import final_linear

SMALL = {"wide-resnet": {"depth": 10, "widen_factor": 1}}


def _penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer, read by a hook (the reference for features)."""
    seen = {}
    _, linear = final_linear(model)
    handle = linear.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0].detach()))
    model(x)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("name", [n for n in list_models() if n not in ("wide-resnet-34-10", "wide-resnet-28-10")])
def test_every_backbone_becomes_an_encoder_with_a_projection_head(name, one_thread):
    channels, side = (1, 28) if name == "small-cnn" else (3, 32)
    torch.manual_seed(0)
    classifier = create_model(name, num_classes=10, in_channels=channels, **SMALL.get(name, {})).eval()
    x = torch.rand(2, channels, side, side)
    reference = _penultimate(classifier, x)
    # the same weights as an encoder: features = the classifier's penultimate features
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, head="projection", projection_dim=16,
                   **SMALL.get(name, {})).eval()
    assert isinstance(model, ContrastiveModel)
    assert torch.allclose(model.features(x), reference, atol=1e-5)
    assert model(x).shape == (2, 16)
    assert torch.allclose(feature_extractor(classifier)(x), reference, atol=1e-5)
    assert classifier(x).shape == (2, 10)  # feature_extractor left the classifier as it was


def test_a_users_encoder_works_and_a_wrong_width_is_one_error():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    model = ContrastiveModel(encoder, 7, projection_dim=3)
    assert model(torch.rand(5, 3, 2, 2)).shape == (5, 3)
    with pytest.raises(AdvlabError, match=r"expected \(B, 8\) features"):
        ContrastiveModel(encoder, 8)(torch.rand(5, 3, 2, 2))
    with pytest.raises(AdvlabError, match="no nn.Linear"):
        strip_head(nn.Conv2d(1, 1, 1))


def test_a_frozen_encoder_trains_only_its_last_linear_layer_and_keeps_batch_norm_statistics():
    torch.manual_seed(0)
    model = create_model("preact-resnet18", num_classes=10, freeze="encoder")
    assert isinstance(model, FrozenEncoder)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.linear.weight", "model.linear.bias"]
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert model.model.linear.training and not model.model.bn.training


def test_encoder_weights_move_from_a_projection_model_to_a_classifier_and_not_between_backbones():
    torch.manual_seed(0)
    ssl = create_model("small-cnn", in_channels=1, head="projection")
    torch.manual_seed(1)
    clf = create_model("small-cnn", in_channels=1)
    head_before = clf.classifier.fc3.weight.clone()
    load_encoder_state(clf, encoder_state_dict(ssl))
    x = torch.rand(3, 1, 28, 28)
    ssl.eval(), clf.eval()
    assert torch.equal(_penultimate(clf, x), ssl.features(x))
    assert torch.equal(clf.classifier.fc3.weight, head_before)  # the head keeps its own initialisation
    with pytest.raises(AdvlabError, match="holds another encoder"):
        load_encoder_state(create_model("resnet18"), encoder_state_dict(ssl))


def test_bad_head_and_freeze_values_are_one_error_each():
    with pytest.raises(AdvlabError, match="head must be one of linear, projection"):
        create_model("small-cnn", head="mlp")
    with pytest.raises(AdvlabError, match="needs head='linear'"):
        create_model("small-cnn", head="projection", freeze="encoder")
