"""advlab.data.training_split: meta split, train_size, imbalance and label noise on the real Fashion-MNIST."""
import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import advlab.data as data
from advlab.data.scenarios import long_tail_counts
from advlab.data.splits import validation_indices
from advlab.errors import DataError

needs_fmnist = pytest.mark.usefixtures("fashion_mnist")  # found through advlab's search path (tests/conftest.py)
WEIGHTS = torch.randint(-2**62, 2**62, (98,), generator=torch.Generator().manual_seed(0)) | 1


def row_hash(x: torch.Tensor) -> torch.Tensor:
    """An integer fingerprint per 1x28x28 uint8 image: its 784 bytes as 98 int64 words, mixed."""
    return (x.reshape(len(x), -1).view(torch.int64) * WEIGHTS).sum(1)


def split(**kwargs) -> data.TrainingSplit:
    return data.training_split("fashion-mnist", **kwargs)


@pytest.fixture(scope="module")
def train_part(fashion_mnist):
    return data.load("fashion-mnist", "train", root=fashion_mnist)


# ---------------------------------------------------------------- the real data, all steps
@needs_fmnist
def test_symmetric_40_percent_on_fashion_mnist(train_part, fashion_mnist):
    from advlab.data.idx import read_idx

    val_before = data.load("fashion-mnist", "val", root=fashion_mnist)
    test_before = data.load("fashion-mnist", "test", root=fashion_mnist)
    s = split(meta_size=1000, label_noise={"kind": "symmetric", "rate": 0.4, "seed": 0})
    rec = s.record
    json.loads(json.dumps(rec))
    noise = rec["label_noise"]

    # the realised rate, overall and per class, is recorded and is what the labels show
    changed = s.labels != s.clean_labels
    assert abs(noise["realised_rate"] - 0.4) < 0.01
    assert noise["realised_rate"] == pytest.approx(changed.float().mean().item())
    assert noise["num_flipped"] == int(changed.sum())
    measured = [changed[s.clean_labels == c].float().mean().item() for c in range(10)]
    assert noise["realised_rate_per_class"] == pytest.approx(measured)
    assert max(abs(r - 0.4) for r in measured) < 0.03
    assert noise["counts_before"] == rec["class_counts"] == torch.bincount(s.clean_labels).tolist()
    assert noise["counts_after"] == rec["label_counts"] == torch.bincount(s.labels).tolist()

    # the training samples are the train split minus the meta split, with their file labels as clean labels
    x_tr, y_tr = train_part
    assert rec["source_size"] == 59_000 and rec["size"] == len(s.labels) == 58_000
    assert torch.equal(s.images, x_tr[s.indices]) and torch.equal(s.clean_labels, y_tr[s.indices])
    assert (s.indices.diff() > 0).all()  # file order

    # meta: clean, class-balanced, disjoint from training
    assert torch.equal(s.meta_labels, y_tr[s.meta_indices]) and torch.equal(s.meta_images, x_tr[s.meta_indices])
    assert rec["meta_counts"] == [100] * 10 == torch.bincount(s.meta_labels).tolist()
    # the documented rule: the validation split's, applied to the train split (rank-major, not the first images)
    assert s.meta_indices.tolist() == validation_indices(y_tr.numpy(), 10, 100).tolist()
    assert torch.bincount(s.meta_labels[:10]).tolist() == [1] * 10
    assert not set(s.meta_indices.tolist()) & set(s.indices.tolist())
    assert not set(row_hash(s.meta_images).tolist()) & set(row_hash(s.images).tolist())

    # val and test are untouched: same as before, val from the training file, test the test file
    val_after = data.load("fashion-mnist", "val", root=fashion_mnist)
    test_after = data.load("fashion-mnist", "test", root=fashion_mnist)
    assert torch.equal(val_after[1], val_before[1]) and torch.equal(val_after[0], val_before[0])
    assert torch.equal(test_after[1], test_before[1])
    raw_x, raw_y = read_idx(*data.info("fashion-mnist").source.locate(fashion_mnist, "test"))
    assert torch.equal(test_after[1], torch.from_numpy(raw_y)) and torch.equal(test_after[0],
                                                                                torch.from_numpy(raw_x.copy()))
    train_x, _ = read_idx(*data.info("fashion-mnist").source.locate(fashion_mnist, "train"))
    val_hashes = set(row_hash(val_after[0]).tolist())
    assert val_hashes <= set(row_hash(torch.from_numpy(train_x.copy())).tolist())
    assert not val_hashes & (set(row_hash(s.images).tolist()) | set(row_hash(s.meta_images).tolist()))


@needs_fmnist
def test_steps_run_in_the_documented_order():
    """meta -> train_size -> imbalance -> noise: each step's input is visible in the record."""
    s = split(meta_size=500, train_size=3000, imbalance={"ratio": 10.0, "class_order": "fixed", "seed": 1},
              label_noise={"kind": "pair-flip", "rate": 0.3, "seed": 2})
    rec, tail, noise = s.record, s.record["imbalance"], s.record["label_noise"]
    # train_size came before imbalance: the profile starts at train_size / C
    assert tail["counts_before"] == [300] * 10 and tail["n_max"] == 300
    # imbalance came before noise: the *clean* labels follow the profile, the noise saw the long-tailed set
    assert rec["class_counts"] == tail["counts_after"] == long_tail_counts(300, 10.0, 10)
    assert noise["counts_before"] == rec["class_counts"] and rec["size"] == sum(rec["class_counts"])
    assert noise["num_flipped"] == round(0.3 * rec["size"])
    # the meta split came first: clean, balanced, and the same as without any scenario
    assert rec["meta_counts"] == [50] * 10
    assert torch.equal(s.meta_indices, split(meta_size=500).meta_indices)
    # train_size takes the first images per class of what the meta split left
    plain = split(meta_size=500, train_size=3000)
    assert set(s.indices.tolist()) <= set(plain.indices.tolist())
    assert torch.equal(plain.indices, plain.indices.sort().values) and plain.record["class_counts"] == [300] * 10


# ---------------------------------------------------------------- imbalance
@needs_fmnist
def test_long_tail_counts_follow_the_ratio_fixed_and_shuffled():
    ratio = 20.0
    profile = [round(500 * ratio ** (-c / 9)) for c in range(10)]
    fixed = split(train_size=5000, imbalance={"ratio": ratio, "class_order": "fixed", "seed": 0})
    assert fixed.record["class_counts"] == profile == torch.bincount(fixed.labels).tolist()
    assert fixed.record["imbalance"]["ranks"] == list(range(10))
    assert torch.equal(fixed.labels, fixed.clean_labels) and fixed.record["label_noise"] is None

    shuffled = split(train_size=5000, imbalance={"ratio": ratio, "class_order": "shuffled", "seed": 0})
    counts = shuffled.record["class_counts"]
    assert sorted(counts, reverse=True) == profile and counts != profile
    assert counts == [profile[r] for r in shuffled.record["imbalance"]["ranks"]]
    again = split(train_size=5000, imbalance={"ratio": ratio, "class_order": "shuffled", "seed": 0})
    assert torch.equal(again.indices, shuffled.indices) and again.record == shuffled.record
    other = split(train_size=5000, imbalance={"ratio": ratio, "class_order": "shuffled", "seed": 1})
    assert other.record["class_counts"] != counts and sorted(other.record["class_counts"], reverse=True) == profile


# ---------------------------------------------------------------- two-class noise
@needs_fmnist
def test_two_class_noise_lands_on_two_fixed_classes():
    s = split(train_size=20_000, label_noise={"kind": "two-class", "rate": 0.4, "seed": 5})
    targets = s.record["label_noise"]["targets"]
    assert targets == data.two_class_targets(10, 5).tolist()
    changed = s.labels != s.clean_labels
    for c in range(10):
        landed = s.labels[changed & (s.clean_labels == c)]
        first = (landed == targets[c][0]).float().mean().item()
        assert set(landed.tolist()) == set(targets[c]) and c not in targets[c]
        assert 0.44 < first < 0.56  # ~800 flips per class: half each, within 3.5 standard deviations
    assert abs(changed.float().mean().item() - 0.4) < 0.001


# ---------------------------------------------------------------- seeds, options, errors
@needs_fmnist
def test_seeds_and_option_objects():
    noise = {"kind": "symmetric", "rate": 0.2}
    a, b = split(train_size=2000, label_noise=noise, seed=4), split(train_size=2000, label_noise=noise, seed=4)
    assert torch.equal(a.labels, b.labels) and a.record == b.record
    assert a.record["label_noise"]["seed"] == 4  # a missing seed falls back to training_split's seed
    c = split(train_size=2000, label_noise={**noise, "seed": 4}, seed=99)
    assert torch.equal(c.labels, a.labels)
    assert not torch.equal(split(train_size=2000, label_noise=noise, seed=5).labels, a.labels)

    @dataclass
    class NoiseConfig:  # what a config object looks like
        kind: str = "pair"
        rate: float = 0.2
        seed: int | None = 4

    obj = split(train_size=2000, label_noise=NoiseConfig(),
                imbalance=SimpleNamespace(ratio=5.0, class_order="shuffled", seed=3))
    dct = split(train_size=2000, label_noise={"kind": "pair-flip", "rate": 0.2, "seed": 4},
                imbalance={"ratio": 5.0, "class_order": "shuffled", "seed": 3})
    assert torch.equal(obj.labels, dct.labels) and obj.record == dct.record
    assert obj.record["label_noise"]["kind"] == "pair-flip"
    none = split(train_size=100)
    assert none.meta_images.shape == (0, 1, 28, 28) and none.meta_labels.shape == (0,)
    assert none.record["meta_counts"] == [0] * 10 and none.record["imbalance"] is None


@pytest.mark.parametrize("options,message", [
    ({"meta_size": 1005}, "not a multiple of the 10 classes"),
    ({"meta_size": -10}, "meta_size: must be a whole number"),
    ({"train_size": 2.5}, "train_size: must be a whole number"),
    ({"label_noise": {"kind": "asymmetric", "rate": 0.1}}, "allowed: symmetric, pair-flip, two-class"),
    ({"label_noise": {"kind": "symmetric", "rate": 1.5}}, r"rate must be a number in \[0, 1\]"),
    ({"label_noise": {"kind": "symmetric", "rate": -0.1}}, r"rate must be a number in \[0, 1\]"),
    ({"label_noise": {"kind": "symmetric"}}, "option 'rate' is required"),
    ({"label_noise": {"rate": 0.1, "ratio": 2}}, "unknown option 'ratio'"),
    ({"label_noise": {"rate": 0.1, "seed": 1.5}}, "label_noise.seed: must be an integer"),
    ({"imbalance": {"ratio": 0.5}}, "ratio must be a finite number >= 1"),
    ({"imbalance": {"ratio": float("nan")}}, "ratio must be a finite number >= 1"),
    ({"imbalance": {"ratio": 10, "class_order": "random"}}, "allowed: fixed, shuffled"),
    ({"imbalance": SimpleNamespace(class_order="fixed")}, "option 'ratio' is required"),
])
def test_check_scenarios_rejects_bad_options_without_data(options, message):
    with pytest.raises(DataError, match=message):
        data.check_scenarios(10, options.pop("meta_size", 0), options.pop("label_noise", None),
                             options.pop("imbalance", None), **options)


def test_check_scenarios_accepts_good_options_and_class_limits():
    assert data.check_scenarios(10, 1000, {"kind": "pair", "rate": 0.0}, {"ratio": 1}, train_size=0) is None
    data.check_scenarios(3, 3, {"kind": "two-class", "rate": 1.0, "seed": 0}, None)
    data.check_scenarios(10, np.int64(10), {"rate": np.float32(0.1), "seed": np.int64(1)}, {"ratio": np.float64(10)})
    with pytest.raises(DataError, match="'two-class' needs at least 3 classes"):
        data.check_scenarios(2, 0, {"kind": "two-class", "rate": 0.1}, None)


def test_options_are_checked_before_any_file_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    with pytest.raises(DataError, match="rate must be"):  # mnist is nowhere here: the options fail first
        data.training_split("mnist", root=tmp_path, label_noise={"rate": 2.0})
    with pytest.raises(DataError, match="not found"):
        data.training_split("mnist", root=tmp_path, label_noise={"rate": 0.5})


@needs_fmnist
def test_too_few_images_for_the_meta_split_or_train_size():
    with pytest.raises(DataError, match="meta_size: 5910 images per class wanted"):
        split(meta_size=59_100)
    with pytest.raises(DataError, match="train_size: 58500 wanted, but fashion-mnist has 58000"):
        split(meta_size=1000, train_size=58_500)
