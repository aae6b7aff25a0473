"""The kNN classifier (advlab.models.knn), the classifier choice (advlab.evaluation.classifier), the ``knn-guide``
guide attack (advlab.evaluation.knn_attack) and the defence success rate, against oracles written here:
a brute-force kNN in plain Python loops (float64), guides chosen by loops, flags counted by hand."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.evaluation import EVAL_ATTACKS, AttackSetup, EvalResult, as_classifier, classifier_kind, evaluate
from advlab.evaluation.classifier import describe_classifier
from advlab.evaluation.knn_attack import GuideAttack
from advlab.models.knn import guide_features
from advlab.evaluation.result import AttackOutcome
from advlab.models import ContrastiveModel, KNNClassifier, create_model, feature_extractor, strip_head
from advlab.models.knn import encode

pytestmark = pytest.mark.usefixtures("one_thread")

C, D, N = 4, 6, 40  # classes, feature width, bank size


def brute_force(features: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, k: int, metric: str, vote: str,
                temperature: float) -> tuple[list[int], list[list[int]], list[list[int]], list[list[float]]]:
    """Per query, by loops in float64: the predicted class, the k nearest bank indices (nearest first), the
    label counts and the soft vote (each class's share of exp(similarity / T) over the k nearest).

    majority: the largest count; a tie of counts goes to the larger soft vote, then the smaller class.
    weighted: the largest soft vote, ties to the smaller class."""
    preds, nearest, all_counts, all_soft = [], [], [], []
    for f in features.double().tolist():
        sims = []
        for row in bank.double().tolist():
            if metric == "cosine":
                dot = sum(a * b for a, b in zip(f, row))
                sims.append(dot / (math.sqrt(sum(a * a for a in f)) * math.sqrt(sum(b * b for b in row))))
            else:
                sims.append(-math.sqrt(sum((a - b) ** 2 for a, b in zip(f, row))))
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        counts, weight = [0] * C, [0.0] * C
        for i in order:
            counts[int(labels[i])] += 1
            weight[int(labels[i])] += math.exp(sims[i] / temperature)
        soft = [w / sum(weight) for w in weight]
        if vote == "majority":
            pred = max(range(C), key=lambda c: (counts[c], soft[c], -c))
        else:
            pred = max(range(C), key=lambda c: (soft[c], -c))
        preds.append(pred)
        nearest.append(order)
        all_counts.append(counts)
        all_soft.append(soft)
    return preds, nearest, all_counts, all_soft


def random_bank(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random bank (N, D) with labels (N,) and queries shaped as 1x2x3 images (flattened: D = 6 features)."""
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(N, D, generator=g)
    labels = torch.arange(N) % C
    queries = torch.randn(60, 1, 2, 3, generator=g)
    return bank, labels, queries


@pytest.mark.parametrize("vote", ["majority", "weighted"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_predictions_neighbours_counts_and_soft_vote_equal_a_brute_force_knn(metric, vote):
    bank, labels, x = random_bank()
    k, temperature = 7, 0.5
    knn = KNNClassifier(nn.Flatten(), bank, labels, C, k=k, metric=metric, vote=vote, temperature=temperature)
    preds, nearest, counts, soft = brute_force(x.flatten(1), bank, labels, k, metric, vote, temperature)
    with torch.no_grad():
        assert knn(x).argmax(1).tolist() == preds
        _, _, index = knn.neighbours(x.flatten(1))
        got_counts, got_soft = knn.votes(x.flatten(1))
    assert index.tolist() == nearest
    assert got_counts.tolist() == counts
    torch.testing.assert_close(got_soft.double(), torch.tensor(soft, dtype=torch.float64), atol=1e-5, rtol=0)
    # the tie rule is exercised: some queries have two classes with the largest count
    ties = sum(sorted(c)[-1] == sorted(c)[-2] for c in counts)
    assert ties >= 3, ties
    if vote == "majority":  # the prediction is a largest count, never a class with fewer votes
        assert all(c[p] == max(c) for c, p in zip(counts, preds))


def test_majority_vote_holds_when_the_soft_vote_underflows():
    """Two near neighbours of class 0 and three far ones of class 1 (L2, k = 5, T = 0.1): the soft vote puts
    all its weight (to float32 resolution) on class 0, but the majority is class 1."""
    bank = torch.tensor([[5.0], [5.1], [0.0], [0.1], [0.2]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    knn = KNNClassifier(nn.Identity(), bank, labels, 2, k=5, metric="l2", vote="majority", temperature=0.1)
    x = torch.tensor([[5.05]])
    counts, soft = knn.votes(x)
    assert counts.tolist() == [[2, 3]] and soft[0, 0] > 0.999999
    assert knn(x).argmax(1).tolist() == [1]
    weighted = KNNClassifier(nn.Identity(), bank, labels, 2, k=5, metric="l2", vote="weighted", temperature=0.1)
    assert weighted(x).argmax(1).tolist() == [0]


@pytest.mark.parametrize("vote", ["majority", "weighted"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_soft_vote_gives_an_input_gradient_where_the_hard_vote_is_constant(metric, vote):
    """At queries whose k-th and (k+1)-th neighbours are well apart, small perturbations leave the neighbours'
    counts and the prediction unchanged (the hard vote is piecewise constant there) while the score of the
    predicted class has a non-zero input gradient, and that gradient predicts how the score changes (finite
    differences)."""
    bank, labels, x = random_bank(1)
    knn = KNNClassifier(nn.Flatten(), bank, labels, C, k=7, metric=metric, vote=vote, temperature=0.5)
    with torch.no_grad():
        sims = knn.similarities(x.flatten(1)).sort(1, descending=True).values
    apart = (sims[:, 6] - sims[:, 7]) > 0.02
    assert apart.sum() >= 10
    x = x[apart][:10].clone().requires_grad_(True)
    scores = knn(x)
    pred = scores.argmax(1)
    grad, = torch.autograd.grad(scores.gather(1, pred[:, None]).sum(), x)
    with torch.no_grad():
        counts = knn.votes(x.flatten(1))[0]
        assert not counts.requires_grad
        g = torch.Generator().manual_seed(2)
        for _ in range(5):
            delta = torch.randn(x.shape, generator=g)
            delta = 1e-3 * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            moved = knn(x + delta)
            assert torch.equal(knn.votes((x + delta).flatten(1))[0], counts)  # hard vote constant
            assert torch.equal(moved.argmax(1), pred)
            change = (moved - scores).gather(1, pred[:, None]).squeeze(1).double()
            predicted = (grad * delta).flatten(1).sum(1).double()
            torch.testing.assert_close(change, predicted, atol=5e-6, rtol=0.05)
    norms = grad.flatten(1).norm(dim=1)
    assert (norms > 1e-4).all(), norms


def test_bad_arguments_are_one_clear_advlab_error():
    bank, labels, _ = random_bank()
    enc = nn.Flatten()
    bad = [
        (dict(k=N + 1), rf"k must be an integer in \[1, {N}\] \(the bank's size\), got {N + 1}"),
        (dict(k=0), r"k must be an integer in \[1, 40\]"),
        (dict(k=True), r"k must be an integer"),
        (dict(k=2.0), r"k must be an integer"),
        (dict(metric="manhattan"), "metric must be one of cosine, l2, got 'manhattan'"),
        (dict(vote="median"), "vote must be one of majority, weighted, got 'median'"),
        (dict(temperature=0), "temperature must be a finite number > 0, got 0"),
        (dict(temperature=-1.0), "temperature must be a finite number > 0"),
        (dict(temperature=float("inf")), "temperature must be a finite number > 0"),
        (dict(temperature=True), "temperature must be a finite number > 0"),
    ]
    for options, message in bad:
        with pytest.raises(AdvlabError, match=message) as info:
            KNNClassifier(enc, bank, labels, C, **options)
        assert "\n" not in str(info.value)
    with pytest.raises(AdvlabError, match="encoder must be an nn.Module"):
        KNNClassifier(lambda x: x, bank, labels, C)
    with pytest.raises(AdvlabError, match="num_classes must be an integer >= 2"):
        KNNClassifier(enc, bank, labels * 0, 1)
    with pytest.raises(AdvlabError, match="bank labels must be in \\[0, 4\\), got 0..4"):
        KNNClassifier(enc, bank, labels + (labels == 3).long(), C, k=3)
    with pytest.raises(AdvlabError, match=r"float features \(N, D\) and integer labels \(N,\)"):
        KNNClassifier(enc, bank, labels[:-1], C)
    with pytest.raises(AdvlabError, match="integer labels"):
        KNNClassifier(enc, bank, labels.float(), C)
    with pytest.raises(AdvlabError, match="float features"):
        KNNClassifier(enc, bank[:, 0], labels, C)
    knn = KNNClassifier(nn.Flatten(), bank, labels, C, k=3)
    with pytest.raises(AdvlabError, match=r"encoder returned \(2, 12\); it must return features \(B, 6\)"):
        knn(torch.rand(2, 1, 3, 4))


def test_the_bank_moves_with_to_and_stays_out_of_the_state_dict():
    bank, labels, _ = random_bank()
    knn = KNNClassifier(nn.Sequential(nn.Flatten(), nn.Linear(D, D)), bank, labels, C, k=3, metric="l2")
    assert set(knn.state_dict()) == {"encoder.1.weight", "encoder.1.bias"}
    torch.testing.assert_close(knn.bank_features, bank)  # l2 keeps the features; cosine normalises them
    knn.to("meta")
    assert knn.bank_features.device.type == knn.bank_labels.device.type == "meta"
    assert knn.encoder[1].weight.device.type == "meta"
    cosine = KNNClassifier(nn.Flatten(), bank, labels, C, k=3)
    torch.testing.assert_close(cosine.bank_features.norm(dim=1), torch.ones(N))
    with torch.inference_mode():  # built under inference mode, it can still be attacked
        inside = KNNClassifier(nn.Flatten(), bank.clone(), labels.clone(), C, k=3)
    assert not inside.bank_features.is_inference() and not inside.bank_labels.is_inference()


def test_encode_runs_the_encoder_in_eval_mode_and_restores_its_flags():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten())
    encoder.train()
    encoder[1].eval()  # mixed flags must come back exactly
    flags = [m.training for m in encoder.modules()]
    stats = encoder[1].running_mean.clone()
    images = torch.randint(0, 256, (7, 1, 5, 5), dtype=torch.uint8)
    features = encode(encoder, images, batch_size=3)
    assert [m.training for m in encoder.modules()] == flags
    assert torch.equal(encoder[1].running_mean, stats)
    encoder.eval()
    with torch.no_grad():
        expected = encoder(images.float() / 255)
    torch.testing.assert_close(features, expected)  # eval mode (no dropout), uint8 / 255, batches joined


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small-cnn", num_classes=C, in_channels=1).eval()


def test_classifier_choices_linear_knn_and_auto():
    images = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(30) % C
    classifier = tiny_classifier()
    encoder, width = strip_head(create_model("small-cnn", num_classes=C, in_channels=1))
    contrastive = ContrastiveModel(encoder, width, 16).eval()

    with pytest.raises(AdvlabError, match="classifier linear: this model has a projection head"):
        as_classifier(contrastive, "linear", images, labels, C)
    with pytest.raises(AdvlabError, match="classifier must be one of auto, linear, knn, got 'softmax'"):
        classifier_kind("softmax", classifier)  # the old name is read in configs and flags only
    assert classifier_kind("auto", contrastive) == "knn" and classifier_kind("auto", classifier) == "linear"
    assert as_classifier(classifier, "auto", images, labels, C) is classifier
    assert describe_classifier(classifier) == {"kind": "linear"}
    knn = as_classifier(contrastive, "auto", images, labels, C, {"k": 5, "metric": "l2"})
    assert isinstance(knn, KNNClassifier) and knn.encoder is contrastive.encoder  # the encoder, not the head
    assert (knn.k, knn.metric, len(knn.bank_labels)) == (5, "l2", 30)
    with torch.no_grad():
        torch.testing.assert_close(knn.bank_features, contrastive.features(images.float() / 255))
    assert as_classifier(knn, "knn", None, None, C) is knn  # a kNN already
    with pytest.raises(AdvlabError, match="a kNN classifier already"):
        as_classifier(knn, "linear", None, None, C)
    with pytest.raises(AdvlabError, match="needs the training split"):
        as_classifier(classifier, "knn", None, None, C)
    d = describe_classifier(knn)
    assert d["kind"] == "knn" and d["bank"] == 30 and "hard vote" in d["prediction"] and "soft" in d["gradient"]


def test_feature_extractor_of_a_classifier_is_its_penultimate_features_and_leaves_it_intact():
    classifier = tiny_classifier()
    x = torch.rand(3, 1, 28, 28)
    seen = {}
    last = [m for m in classifier.modules() if isinstance(m, nn.Linear)][-1]
    hook = last.register_forward_hook(lambda m, inputs, out: seen.update(features=inputs[0].detach()))
    with torch.no_grad():
        logits = classifier(x)
    hook.remove()
    features = feature_extractor(classifier)
    with torch.no_grad():
        torch.testing.assert_close(features(x), seen["features"])
        torch.testing.assert_close(classifier(x), logits)  # still the classifier: its head is in place
    assert isinstance([m for m in classifier.modules() if isinstance(m, nn.Linear)][-1], nn.Linear)
    assert features(x).shape == seen["features"].shape != logits.shape
    knn = as_classifier(classifier, "knn", torch.rand(10, 1, 28, 28), torch.arange(10) % C, C, {"k": 3})
    assert knn.encoder is not classifier  # a copy: the evaluated kNN cannot change the model


# ---------------------------------------------------------------------------------------------------------
# knn-guide

def clusters(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 1x4x4 images around pixel levels 0.3, 0.5, 0.7 (+- 0.05 per pixel, noise 0.03): at
    least 0.1 apart per pixel, so a linf eps of 0.15 reaches another class and 0.005 stays far from one."""
    levels = torch.tensor([0.3, 0.5, 0.7])[:, None] + 0.1 * (torch.rand(3, 16, generator=torch.Generator()
                                                                         .manual_seed(0)) - 0.5)
    y = torch.arange(n) % 3
    return (levels[y] + 0.03 * torch.randn(n, 16, generator=g)).clamp(0, 1).reshape(n, 1, 4, 4), y


def toy_knn(metric: str) -> tuple[KNNClassifier, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xb, yb = clusters(60, g)
    xt, yt = clusters(30, g)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    return KNNClassifier(encoder, encode(encoder, xb), yb, 3, k=5, metric=metric, temperature=0.1), xt, yt


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_pgd_knn_breaks_a_knn_where_the_budget_reaches_another_class_and_not_where_it_does_not(metric):
    knn, x, y = toy_knn(metric)
    big = evaluate(knn, x, y, 0.15, "linf", attacks=["knn-guide"], progress=False, sanity=False)
    small = evaluate(knn, x, y, 0.005, "linf", attacks=["knn-guide"], progress=False, sanity=False)
    assert big.accuracy("clean") == 1.0
    assert big.accuracy("knn-guide") <= 0.1
    assert small.accuracy("knn-guide") == 1.0
    l2 = evaluate(knn, x, y, 0.6, "l2", attacks=["knn-guide"], progress=False, sanity=False)  # 0.15 * sqrt(16)
    assert l2.accuracy("knn-guide") <= 0.2


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_pgd_knn_moves_the_representation_toward_its_guides_and_raises_the_target_vote(metric):
    knn, x, y = toy_knn(metric)
    setup = AttackSetup(knn, 0.05, "linf", torch.device("cpu"), 0, 3)
    attack = EVAL_ATTACKS.get("knn-guide")(setup)
    x_adv = attack(x, y)
    # the vote of every bank row (k = N): continuous, unlike the k nearest rows' (0 until a target row enters)
    wide = KNNClassifier(knn.encoder, knn.bank_features, knn.bank_labels, 3, k=len(knn.bank_labels), metric=metric,
                         temperature=knn.temperature)
    with torch.no_grad():
        clean_f, adv_f = knn.encoder(x), knn.encoder(x_adv)
        guides, target, _ = guide_features(knn, clean_f, y, attack.guides)
        _, soft_clean = wide.votes(clean_f)
        _, soft_adv = wide.votes(adv_f)
    assert (target != y).all()
    rows = torch.arange(len(y))
    assert (soft_adv[rows, target] > soft_clean[rows, target]).all()  # the target class's vote grows
    broken = knn(x_adv).argmax(1) != y
    assert 0 < broken.sum() < len(y) and torch.equal(knn(x_adv).argmax(1)[broken], target[broken])
    from advlab.models.knn import guide_similarity
    assert (guide_similarity(adv_f, guides, metric) > guide_similarity(clean_f, guides, metric)).all()


def test_guides_are_the_m_nearest_rows_of_the_most_similar_other_class():
    bank, labels, x = random_bank(3)
    knn = KNNClassifier(nn.Flatten(), bank, labels, C, k=7, metric="l2")
    f = x[:8].flatten(1)
    y = torch.arange(8) % C
    m = 3
    guides, target, _ = guide_features(knn, f, y, m)
    for i in range(8):
        best, best_mean, best_rows = None, -math.inf, None
        for c in range(C):
            if c == int(y[i]):
                continue
            dists = sorted((math.dist(f[i].tolist(), bank[j].tolist()), j) for j in range(N) if labels[j] == c)[:m]
            mean = -sum(d for d, _ in dists) / m
            if mean > best_mean:
                best, best_mean, best_rows = c, mean, [j for _, j in dists]
        assert int(target[i]) == best
        torch.testing.assert_close(guides[i], bank[best_rows])
    assert guide_features(knn, f, y, 1000)[0].shape == (8, N // C, D)  # m cut to the smallest class count


def test_pgd_knn_refuses_a_model_that_is_not_a_knn():
    setup = AttackSetup(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), 0.1, "linf", torch.device("cpu"), 0, 3)
    with pytest.raises(AdvlabError, match="knn-guide attacks a k-nearest-neighbour classifier.*--classifier knn"):
        EVAL_ATTACKS.get("knn-guide")(setup)
    knn, _, _ = toy_knn("l2")
    with pytest.raises(AdvlabError, match="guides must be a positive integer"):
        GuideAttack(AttackSetup(knn, 0.1, "linf", torch.device("cpu"), 0, 3), guides=0)


# ---------------------------------------------------------------------------------------------------------
# the defence success rate

def scripted(clean, **attacks) -> EvalResult:
    flag = lambda bits: torch.tensor(bits, dtype=torch.bool)  # noqa: E731
    return EvalResult(eps=0.1, norm="linf", labels=torch.arange(len(clean)) % 2,
                      clean=AttackOutcome("clean", flag(clean), 0.0),
                      attacks={k: AttackOutcome(k, flag(v), 0.0) for k, v in attacks.items()}, num_classes=2)


def test_defence_success_rate_on_scripted_flags():
    # correct clean: points 0..3; a: 0, 2, 3 of them (point 5 right only under attack: not counted);
    # b: 0, 1, 3; both: 0, 3
    result = scripted([1, 1, 1, 1, 0, 0], a=[1, 0, 1, 1, 0, 1], b=[1, 1, 0, 1, 1, 0])
    expected = {"a": 3 / 4, "b": 3 / 4, "robust": 2 / 4}
    assert result.defence_success_rate() == expected
    d = json.loads(result.to_json())
    assert d["defence_success_rate"] == expected
    # = robust accuracy under the attack (AND clean) / clean accuracy
    assert d["defence_success_rate"]["robust"] == pytest.approx(d["robust"]["acc"] / d["clean"]["acc"])
    line = next(l for l in result.table().splitlines() if l.startswith("defence success rate"))
    assert "4 points correct clean" in line and "a 75.00, b 75.00, robust (AND) 50.00" in line
    nobody = scripted([0, 0], a=[0, 1])
    assert nobody.defence_success_rate() == {"a": None, "robust": None}
    assert "no point is correct clean" in nobody.table()
