"""``advlab.evaluate`` against numbers computed by hand: the model is evaluated in eval mode, robust is the
per-sample AND over attacks (faults the rest of the suite let through: see scripts/plant_faults.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.evaluation import evaluate


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(32, 3))


def test_evaluate_runs_the_model_in_eval_mode_and_leaves_it_as_it_was():
    model = _model()
    x = torch.rand(64, 1, 4, 4)
    with torch.no_grad():  # give the batch norm running statistics far from the batch's own
        model[2].running_mean.fill_(0.3)
        model[2].running_var.fill_(4.0)
        model.eval()
        expected = (model(x).argmax(1) == 0).float().mean().item()  # by hand, in eval mode
    y = torch.zeros(64, dtype=torch.long)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for _ in range(2):  # in train mode, dropout would make two calls differ and batch norm use batch statistics
        result = evaluate(model, x, y, eps=0.05, norm="linf", attacks=("pgd20",), sanity=False, device="cpu",
                          progress=False)
        assert result.accuracy("clean") == pytest.approx(expected, abs=1e-6)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())


def test_robust_is_the_per_sample_and_of_clean_and_every_attack():
    model = _model().eval()
    torch.manual_seed(1)
    x = torch.rand(200, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:40] = (y[:40] + 1) % 3  # some clean mistakes
    result = evaluate(model, x, y, eps=0.05, norm="linf", attacks=("pgd20", "cw20"), sanity=False, device="cpu",
                      progress=False)
    flags = [result.clean.correct] + [o.correct for o in result.attacks.values()]
    by_hand = sum(all(bool(f[i]) for f in flags) for i in range(200)) / 200
    assert result.accuracy("robust") == pytest.approx(by_hand, abs=1e-6)
    # the batch tells AND from OR: the attacks turn some clean-correct points wrong
    assert by_hand < result.accuracy("clean")
