"""advlab.data: the real Fashion-MNIST splits, subsets, scenarios and the device loader."""
import json

import pytest
import torch

import advlab.data as data
from advlab.data.scenarios import long_tail_counts
from advlab.errors import AdvlabError, DataError

needs_fmnist = pytest.mark.usefixtures("fashion_mnist")  # found through advlab's search path (tests/conftest.py)


# ---------------------------------------------------------------- real Fashion-MNIST
@pytest.fixture(scope="module")
def fmnist(fashion_mnist):
    return {split: data.load("fashion-mnist", split, root=fashion_mnist) for split in data.SPLITS}


@needs_fmnist
def test_fashion_mnist_splits(fmnist):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = fmnist["train"], fmnist["val"], fmnist["test"]
    assert (len(x_tr), len(x_va), len(x_te)) == (59_000, 1_000, 10_000)
    for x, y in fmnist.values():
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28) and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (len(x),) and 0 <= y.min() and y.max() <= 9
    assert torch.bincount(y_va).tolist() == [100] * 10
    assert torch.bincount(y_va[:50]).tolist() == [5] * 10  # every prefix of 10k images is balanced
    assert torch.bincount(y_te).tolist() == [1000] * 10


@needs_fmnist
def test_fashion_mnist_val_and_train_partition_the_training_file(fmnist, fashion_mnist):
    from advlab.data.idx import read_idx

    images, labels = read_idx(*data.info("fashion-mnist").source.locate(fashion_mnist, "train"))
    full_x, full_y = torch.from_numpy(images.copy()), torch.from_numpy(labels)
    (x_tr, y_tr), (x_va, y_va) = fmnist["train"], fmnist["val"]
    assert torch.equal(torch.bincount(torch.cat([y_tr, y_va])), torch.bincount(full_y))

    weights = torch.randint(-2**62, 2**62, (98,), generator=torch.Generator().manual_seed(0)) | 1

    def row_hash(x):  # an integer fingerprint per image: its 784 bytes as 98 int64 words, mixed
        return (x.reshape(len(x), -1).view(torch.int64) * weights).sum(1)

    assert torch.equal(torch.sort(torch.cat([row_hash(x_tr), row_hash(x_va)])).values,
                       torch.sort(row_hash(full_x)).values)
    # train is the training file minus val, in file order: its first images are the file's first ones
    val_set = set(row_hash(x_va).tolist())
    file_order = [h for h in row_hash(full_x[:200]).tolist() if h not in val_set]
    assert row_hash(x_tr[: len(file_order)]).tolist() == file_order


@needs_fmnist
def test_fashion_mnist_val_is_deterministic(fmnist):
    data.clear_cache()
    x, y = data.load("fashion-mnist", "val")  # found through the Debian folder, parsed again
    assert torch.equal(x, fmnist["val"][0]) and torch.equal(y, fmnist["val"][1])


def test_info_and_registry():
    assert data.DATASETS.names() == ["cifar10", "cifar100", "fashion-mnist", "folder", "imagenet", "mnist", "stl10",
                                     "svhn", "tensors", "tiny-imagenet"]
    c10, fm = data.info("cifar10"), data.info("fashion-mnist")
    assert (c10.num_classes, c10.in_channels, c10.image_size, c10.flip, c10.crop_padding) == (10, 3, 32, True, 4)
    assert (fm.num_classes, fm.in_channels, fm.image_size, fm.flip, fm.crop_padding) == (10, 1, 28, False, 0)
    assert data.info("cifar100").num_classes == 100 and data.info("svhn").flip is False
    assert len(data.info("svhn").mean) == 3 and len(fm.std) == 1
    with pytest.raises(DataError, match="allowed: cifar10, cifar100, fashion-mnist, folder, imagenet, mnist"):
        data.info("cifar-10")


def test_every_published_file_has_a_download_source():
    for name in data.DATASETS.names():
        record = data.info(name)
        for part in ("train", "test"):
            for filename in record.source.published(part):
                remote = record.remote(filename)
                assert remote.urls and all(u.startswith("http") and u.endswith(filename) for u in remote.urls)
                assert len(remote.md5) == 32 and int(remote.md5, 16) >= 0
    assert data.info("mnist").remote("t10k-images-idx3-ubyte.gz").md5 == "9fb629c4189551a2d022fa330f9573f3"
    assert data.info("cifar100").source.published("test") == ("cifar-100-python.tar.gz",)
    with pytest.raises(DataError, match="no download source for train_32x32.mat"):
        data.info("mnist").remote("train_32x32.mat")


# ---------------------------------------------------------------- class_balanced_subset
def test_class_balanced_subset_takes_the_first_per_class():
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 1, 0, 2, 0])
    assert data.class_balanced_subset(labels, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert data.class_balanced_subset(labels, 7).tolist() == [0, 1, 2, 3, 4, 5, 7]  # class 0 gets one more
    assert data.class_balanced_subset(labels, 0).tolist() == []
    keep = data.class_balanced_subset(labels, 9)
    assert keep.dtype == torch.int64 and torch.bincount(labels[keep]).tolist() == [3, 3, 3]
    assert data.class_balanced_subset(labels, 10).tolist() == list(range(10))  # quotas 4, 3, 3
    with pytest.raises(DataError, match="class 1: 1 < 2"):
        data.class_balanced_subset(torch.tensor([0, 0, 0, 1, 2, 2, 2]), 6)
    with pytest.raises(AdvlabError):
        data.class_balanced_subset(labels, 11)


# ---------------------------------------------------------------- scenarios
def test_label_noise_realised_rate_is_exact_and_never_self():
    labels = torch.arange(1000) % 10
    for rate in (0.0, 0.2, 0.37, 1.0):
        noisy, rec = data.label_noise(labels, rate, 10, seed=3)
        changed = noisy != labels
        assert int(changed.sum()) == round(rate * 1000) == rec.num_flipped
        assert rec.realised_rate == round(rate * 1000) / 1000
        assert sorted(changed.nonzero().flatten().tolist()) == rec.flipped_indices
        t = torch.tensor(rec.transitions)
        assert t.sum() == 1000 and t.trace() == 1000 - rec.num_flipped
        json.loads(json.dumps(rec.to_dict()))
    first, rec = data.label_noise(labels, 0.37, 10, seed=3)
    again, rec2 = data.label_noise(labels, 0.37, 10, seed=3)
    assert torch.equal(first, again) and rec == rec2
    assert rec.flipped_indices != data.label_noise(labels, 0.37, 10, seed=4)[1].flipped_indices


def test_label_noise_pair_and_symmetric_spread():
    labels = torch.arange(5000) % 10
    noisy, rec = data.label_noise(labels, 0.4, 10, kind="pair-flip", seed=0)
    changed = noisy != labels
    assert torch.equal(noisy[changed], (labels[changed] + 1) % 10)
    alias, rec_alias = data.label_noise(labels, 0.4, 10, kind="pair", seed=0)  # NoiLIn's name for it
    assert torch.equal(alias, noisy) and rec_alias.kind == rec.kind == "pair-flip" and rec.targets is None
    noisy, rec = data.label_noise(labels, 0.4, 10, kind="symmetric", seed=0)
    t = torch.tensor(rec.transitions)
    off = t - torch.diag(t.diag())
    assert (off.sum(1) > 0).all() and (off > 0).sum() > 80  # flips reach (almost) every other class
    with pytest.raises(DataError):
        data.label_noise(labels, 1.5, 10)
    with pytest.raises(DataError, match="allowed: symmetric, pair-flip, two-class"):
        data.label_noise(labels, 0.1, 10, kind="asymmetric")


def test_label_noise_record_per_class():
    labels = torch.cat([torch.zeros(100), torch.ones(300), torch.full((600,), 2)]).long()[
        torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    noisy, rec = data.label_noise(labels, 0.3, 4, seed=1)  # class 3 has no sample
    changed = noisy != labels
    assert rec.counts_before == [100, 300, 600, 0] and rec.counts_after == torch.bincount(noisy, minlength=4).tolist()
    expected = [changed[labels == c].float().mean().item() for c in range(3)]
    assert rec.realised_rate_per_class[:3] == pytest.approx(expected) and rec.realised_rate_per_class[3] is None
    assert len(set(rec.realised_rate_per_class[:3])) == 3  # per class, not the overall rate repeated
    d = rec.to_dict(indices=False)
    assert "flipped_indices" not in d and json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("kind", list(data.NOISE_KINDS) + ["pair"])
def test_every_kind_always_changes_a_flipped_label(kind):
    labels = torch.arange(3000) % 10
    noisy, rec = data.label_noise(labels, 1.0, 10, kind=kind, seed=2)
    assert (noisy != labels).all() and rec.realised_rate_per_class == [1.0] * 10
    targets = data.two_class_targets(10, 2) if kind == "two-class" else None
    flipped = data.flip_labels(labels, 1.0, 10, kind=kind, generator=torch.Generator().manual_seed(2),
                               targets=targets)
    assert (flipped != labels).all()


def test_two_class_noise():
    table = data.two_class_targets(10, 7)
    assert table.shape == (10, 2) and table.dtype == torch.int64
    assert (table != torch.arange(10)[:, None]).all() and (table[:, 0] != table[:, 1]).all()
    assert torch.equal(table, data.two_class_targets(10, 7))
    assert not torch.equal(table, data.two_class_targets(10, 8))
    assert len({tuple(sorted(r)) for r in table.tolist()}) > 5  # drawn per class, not one shared pair
    labels = torch.arange(20_000) % 10
    noisy, rec = data.label_noise(labels, 0.5, 10, kind="two-class", seed=7)
    assert rec.targets == table.tolist()
    t = torch.tensor(rec.transitions)
    for c in range(10):
        row = t[c].clone()
        row[c] = 0
        assert row.nonzero().flatten().tolist() == sorted(table[c].tolist())
        assert 0.44 < row[table[c, 0]] / row.sum() < 0.56  # ~1,000 flips: half to each target
    # per batch: the table is passed in, and flips land on it
    g = torch.Generator().manual_seed(0)
    flipped = data.flip_labels(labels, 0.5, 10, kind="two-class", generator=g, targets=table)
    changed = flipped != labels
    assert abs(changed.float().mean().item() - 0.5) < 0.02
    assert ((flipped[changed][:, None] == table[labels[changed]]).any(1)).all()
    with pytest.raises(DataError, match="needs targets"):
        data.flip_labels(labels, 0.5, 10, kind="two-class")
    with pytest.raises(DataError, match="two distinct classes other than c"):
        data.flip_labels(labels, 0.5, 10, kind="two-class", targets=torch.arange(10)[:, None].repeat(1, 2))
    with pytest.raises(DataError, match="at least 3 classes"):
        data.two_class_targets(2, 0)


def test_flip_labels_rate_and_generator():
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    noisy = data.flip_labels(labels, 0.3, 10, generator=g)
    assert abs((noisy != labels).float().mean().item() - 0.3) < 0.005
    assert noisy.dtype == labels.dtype and noisy.device == labels.device
    pair = data.flip_labels(labels, 0.3, 10, kind="pair", generator=g)
    changed = pair != labels
    assert torch.equal(pair[changed], (labels[changed] + 1) % 10)
    # only the given generator is used: same state, same result; the global RNG is untouched
    state = torch.get_rng_state()
    a = data.flip_labels(labels[:100], 0.5, 10, generator=torch.Generator().manual_seed(7))
    b = data.flip_labels(labels[:100], 0.5, 10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    # a persistent generator gives different draws on consecutive batches
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(data.flip_labels(labels[:100], 0.5, 10, generator=g),
                           data.flip_labels(labels[:100], 0.5, 10, generator=g))


def test_long_tail_follows_the_profile():
    labels = torch.arange(5000) % 10
    images = torch.arange(5000, dtype=torch.uint8).view(-1, 1, 1, 1).expand(5000, 1, 2, 2).contiguous()
    x, y, rec = data.long_tail(images, labels, 100.0, 10, seed=0)
    expected = [round(500 * 100 ** (-c / 9)) for c in range(10)]
    assert rec.counts_after == expected == torch.bincount(y).tolist() == long_tail_counts(500, 100.0, 10)
    assert expected[0] == 500 and expected[-1] == 5 and rec.counts_before == [500] * 10
    json.loads(json.dumps(rec.to_dict()))
    x2, y2, _ = data.long_tail(images, labels, 100.0, 10, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(data.long_tail(images, labels, 100.0, 10, seed=1)[0], x)
    assert data.long_tail(images, labels, 1.0, 10)[2].counts_after == [500] * 10
    with pytest.raises(DataError):
        data.long_tail(images, labels, 0.5, 10)
    with pytest.raises(DataError, match="allowed: fixed, shuffled"):
        data.long_tail(images, labels, 2.0, 10, class_order="random")


def test_long_tail_shuffled_order_permutes_the_counts():
    labels = torch.arange(5000) % 10
    images = labels.view(-1, 1, 1, 1)
    profile = long_tail_counts(500, 50.0, 10)
    _, y, rec = data.long_tail(images, labels, 50.0, 10, seed=3, class_order="shuffled")
    counts = torch.bincount(y).tolist()
    assert counts == rec.counts_after == [profile[r] for r in rec.ranks] and rec.profile == profile
    assert sorted(rec.ranks) == list(range(10)) and rec.ranks != list(range(10))
    assert data.long_tail(images, labels, 50.0, 10, seed=3, class_order="shuffled")[2] == rec
    assert data.long_tail(images, labels, 50.0, 10, seed=4, class_order="shuffled")[2].ranks != rec.ranks
    assert data.long_tail(images, labels, 50.0, 10, seed=3)[2].ranks == list(range(10))


def test_long_tail_keeps_image_label_pairs_in_order():
    labels = torch.arange(255) % 3
    images = torch.arange(255).to(torch.uint8).view(-1, 1, 1, 1)  # pixel value = position
    x, y, rec = data.long_tail(images, labels, 10.0, 3, seed=2)
    position = x.flatten().long()
    assert torch.equal(y, labels[position]) and (position.diff() > 0).all()
    assert rec.counts_after == [85, 27, 8] and rec.n_max == 85


# ---------------------------------------------------------------- DeviceLoader
def _dataset(n=103, shape=(1, 6, 6)):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (n, *shape), dtype=torch.uint8, generator=g)  # no zero pixel
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_yields_every_index_once_with_matching_samples():
    images, labels = _dataset()
    loader = data.DeviceLoader(images, labels, 16, seed=5)
    assert len(loader) == 7
    batches = _epoch(loader, 0)
    assert len(batches) == 7 and [len(b.y) for b in batches] == [16] * 6 + [7]
    index = torch.cat([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(103)) and index.dtype == torch.int64
    assert index.tolist() != list(range(103))  # shuffled
    for x, y, i in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, images[i].float() / 255) and torch.equal(y, labels[i])
    assert len(data.DeviceLoader(images, labels, 16, drop_last=True)) == 6
    assert [len(b.y) for b in data.DeviceLoader(images, labels, 16, drop_last=True)] == [16] * 6
    plain = data.DeviceLoader(images, labels, 50, shuffle=False)
    assert torch.cat([b.index for b in plain]).tolist() == list(range(103))


def test_loader_is_deterministic_per_seed_and_epoch():
    images, labels = _dataset()
    make = lambda seed=5: data.DeviceLoader(images, labels, 16, crop_padding=2, flip=True, seed=seed)  # noqa: E731
    a, b = make(), make()  # b plays a restarted process: it never saw epochs 0..2
    for e in range(3):
        _epoch(a, e)
    first, second = _epoch(a, 3), _epoch(b, 3)
    assert all(torch.equal(p.x, q.x) and torch.equal(p.index, q.index) for p, q in zip(first, second))
    other = _epoch(a, 4)
    assert not torch.equal(torch.cat([p.index for p in other]), torch.cat([p.index for p in first]))
    assert not torch.equal(_epoch(make(6), 3)[0].index, first[0].index)
    # the order does not depend on the augmentation settings
    bare = _epoch(data.DeviceLoader(images, labels, 16, seed=5), 3)
    assert all(torch.equal(p.index, q.index) for p, q in zip(first, bare))


def _shift_of(view: torch.Tensor, image: torch.Tensor, pad: int):
    """The (dy, dx) with which ``view`` is a crop of the zero-padded ``image``, or None."""
    padded = torch.nn.functional.pad(image, (pad,) * 4)
    h, w = image.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[..., dy:dy + h, dx:dx + w], view):
                return dy, dx
    return None


def test_crop_is_a_shifted_padded_image():
    images, labels = _dataset(n=64)
    loader = data.DeviceLoader(images, labels, 64, crop_padding=2, seed=1)
    (x, y, index), = _epoch(loader, 0)
    assert x.shape == (64, 1, 6, 6) and torch.equal(y, labels[index])
    shifts = []
    for view, i in zip(x, index):
        shift = _shift_of((view * 255).round().to(torch.uint8), images[i], 2)
        assert shift is not None
        shifts.append(shift)
    assert len(set(shifts)) > 10 and (2, 2) in shifts  # per-sample shifts, identity included


def test_flip_mirrors_about_half_the_samples():
    images, labels = _dataset(n=200, shape=(3, 5, 7))
    loader = data.DeviceLoader(images, labels, 100, flip=True, seed=2)
    flipped = 0
    for x, _, index in _epoch(loader, 0):
        u8 = (x * 255).round().to(torch.uint8)
        same = (u8 == images[index]).flatten(1).all(1)
        mirrored = (u8 == images[index].flip(-1)).flatten(1).all(1)
        assert (same | mirrored).all()
        flipped += int((mirrored & ~same).sum())
    assert 60 < flipped < 140


def test_crop_and_flip_together_on_rgb():
    images, labels = _dataset(n=40, shape=(3, 8, 8))
    (x, _, index), = _epoch(data.DeviceLoader(images, labels, 40, crop_padding=3, flip=True, seed=0), 0)
    kinds = set()
    for view, i in zip((x * 255).round().to(torch.uint8), index):
        if _shift_of(view, images[i], 3) is not None:
            kinds.add("plain")
        elif _shift_of(view.flip(-1), images[i], 3) is not None:
            kinds.add("flipped")
        else:
            pytest.fail("a view is neither a crop nor a mirrored crop of its image")
    assert kinds == {"plain", "flipped"}


def test_loader_rejects_bad_inputs():
    images, labels = _dataset()
    with pytest.raises(DataError):
        data.DeviceLoader(images.float(), labels, 8)
    with pytest.raises(DataError):
        data.DeviceLoader(images, labels[:-1], 8)
    with pytest.raises(DataError):
        data.DeviceLoader(images, labels, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_loader_and_flip_labels_on_cuda():
    images, labels = _dataset()
    loader = data.DeviceLoader(images, labels, 16, device="cuda", crop_padding=2, flip=True)
    cpu = data.DeviceLoader(images, labels, 16, device="cpu", crop_padding=2, flip=True)
    for p, q in zip(_epoch(loader, 1), _epoch(cpu, 1)):  # same order and augmentation on both devices
        assert p.x.is_cuda and p.y.is_cuda and p.index.is_cuda and torch.equal(p.index.cpu(), q.index)
        # CUDA divides by 255 through a reciprocal, so compare pixels, not float bits
        assert torch.equal((p.x * 255).round().cpu(), (q.x * 255).round())
    (x, _, index), = _epoch(data.DeviceLoader(images, labels, 200, device="cuda"), 0)
    assert torch.equal(x, images.cuda()[index].float() / 255)
    noisy = data.flip_labels(labels.cuda(), 0.5, 10, generator=torch.Generator().manual_seed(0))
    assert noisy.is_cuda and torch.equal(noisy.cpu(), data.flip_labels(labels, 0.5, 10,
                                                                       generator=torch.Generator().manual_seed(0)))


def test_missing_fashion_mnist_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    """The shared fixture finds the data through advlab's search path; without it CI fails, a laptop skips."""
    from conftest import require_fashion_mnist

    from advlab.data import paths

    monkeypatch.setattr(paths, "SYSTEM_FOLDERS", {"fashion-mnist": (tmp_path / "none",)})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    outcomes = (pytest.fail.Exception, pytest.skip.Exception)  # caught here, so neither ends this test
    monkeypatch.setenv("CI", "true")
    with pytest.raises(outcomes, match="apt-get install dataset-fashion-mnist") as failed:
        require_fashion_mnist()
    monkeypatch.delenv("CI")
    with pytest.raises(outcomes, match="apt-get install dataset-fashion-mnist") as skipped:
        require_fashion_mnist()
    assert failed.type is pytest.fail.Exception and skipped.type is pytest.skip.Exception
    # found through $ADVLAB_DATA like advlab.data.load finds it: the four IDX files in <base>/fashion-mnist
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "data"))
    assert require_fashion_mnist() == folder
