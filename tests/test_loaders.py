"""The two loaders behind one interface: the streaming loader gives the in-memory loader's batches (order,
samples, augmentation) for the same data and seed, with any number of workers, on every shard, and from any
batch after ``start_at``; bad files surface as one error naming the file; ``auto`` picks by the memory budget."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from layouts import write_folder

import advlab.data as data
from advlab.data.transforms import crop_box
from advlab.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders") / "imgs"
    write_folder(root, train=23, test=2, size=12)
    data.clear_cache()
    return root


def both(folder, batch_size=16, padding=2, flip=True, workers=0, seed=3):
    """A DeviceLoader and a StreamLoader over the same training split."""
    split = data.training_split("folder", root=folder, val_per_class=1, lazy=True)
    images, _ = split.images.materialize()
    memory = data.DeviceLoader(images, split.labels, batch_size, crop_padding=padding, flip=flip, seed=seed)
    stream = data.StreamLoader(split.images, split.labels, batch_size, seed=seed, workers=workers,
                               augmentation=data.Augmentation("crop", padding, flip))
    return memory, stream


def epoch(loader, e):
    loader.set_epoch(e)
    return list(loader)


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y) and torch.equal(x.index, y.index)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_and_memory_give_the_same_batches_every_epoch(folder, workers):
    memory, stream = both(folder, workers=workers)
    assert len(memory) == len(stream) == 5 and memory.num_items == stream.num_items == 66
    for e in (0, 1):
        batches = epoch(stream, e)
        same(epoch(memory, e), batches)
        assert batches[0].x.dtype == torch.float32 and 0 <= batches[0].x.min() and batches[0].x.max() <= 1
    assert not torch.equal(epoch(stream, 0)[0].index, epoch(stream, 1)[0].index)  # a new order each epoch
    plain_memory, plain_stream = both(folder, padding=0, flip=False, workers=workers)
    same(epoch(plain_memory, 0), epoch(plain_stream, 0))


def test_start_at_gives_the_uninterrupted_epochs_batches_from_there_then_starts_at_zero(folder):
    _, stream = both(folder)
    whole = epoch(stream, 4)
    stream.set_epoch(4)
    stream.start_at(3)
    same(list(stream), whole[3:])
    same(list(stream), whole)  # the next iteration starts at 0 again
    stream.start_at(len(stream))
    assert list(stream) == []
    with pytest.raises(DataError, match="start_at"):
        stream.start_at(6)


def test_shards_of_two_ranks_together_are_one_process(folder):
    _, whole = both(folder, batch_size=10)
    ranks = []
    for r in range(2):
        _, s = both(folder, batch_size=10)
        s.shard(r, 2)
        ranks.append(epoch(s, 1))
    for one, a, b in zip(epoch(whole, 1), *ranks):
        assert torch.equal(torch.cat([a.x, b.x]), one.x) and torch.equal(torch.cat([a.index, b.index]), one.index)
        assert abs(len(a.y) - len(b.y)) <= 1


def test_resized_crop_draws_torchvisions_box_and_does_not_depend_on_the_workers(folder):
    rng = random.Random(5)
    for height, width in [(40, 60), (224, 224), (300, 90), (7, 7)]:
        for _ in range(200):
            top, left, h, w = crop_box(height, width, rng)
            assert 0 <= top <= height - h and 0 <= left <= width - w and h >= 1 and w >= 1
            ratio, area = w / h, h * w / (height * width)
            fallback = (top, left) == ((height - h) // 2, (width - w) // 2)
            assert fallback or (3 / 4 - 0.2 < ratio < 4 / 3 + 0.2 and 0.08 * 0.7 < area <= 1)
    split = data.training_split("folder", root=folder, val_per_class=1, lazy=True)
    aug = data.Augmentation("resized-crop", 0, True, 10)
    runs = [epoch(data.StreamLoader(split.images, split.labels, 16, seed=1, workers=w, augmentation=aug), 2)
            for w in (0, 2)]
    same(*runs)
    assert runs[0][0].x.shape[1:] == (3, 10, 10)


def test_a_file_that_breaks_mid_epoch_is_one_error_naming_it(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, train=10, test=2, size=12)
    split = data.training_split("folder", root=root, val_per_class=1, lazy=True)
    bad = split.images.name(7)
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    for workers in (0, 2):
        loader = data.StreamLoader(split.images, split.labels, 8, workers=workers)
        with pytest.raises(DataError) as info:
            epoch(loader, 0)
        assert bad in str(info.value) and "\n" not in str(info.value)


def test_materialize_with_workers_equals_decoding_here(folder):
    split = data.training_split("folder", root=folder, val_per_class=1, lazy=True)
    here, n_here = split.images.materialize(0)
    there, n_there = split.images.materialize(2)
    assert torch.equal(here, there) and n_here == n_there == 0


def test_auto_holds_the_split_in_memory_when_it_fits_the_budget_and_streams_otherwise():
    crop, rrc = data.Augmentation("crop", 4, True), data.Augmentation("resized-crop", 0, True, 224)
    gib = 1 << 30
    assert data.choose_loader("auto", gib, crop, "cpu", gib=1.5) == "memory"
    assert data.choose_loader("auto", 2 * gib, crop, "cpu", gib=1.5) == "stream"
    assert data.choose_loader("auto", 1, rrc, "cpu", gib=100) == "stream"  # crops the full-size files
    assert data.choose_loader("memory", 10 * gib, crop, "cpu", gib=1) == "memory"  # asked for: held
    with pytest.raises(DataError, match="resized-crop"):
        data.choose_loader("memory", 1, rrc, "cpu")
    budget = data.memory_budget("cpu")
    total = int(open("/proc/meminfo").read().split("MemTotal:")[1].split()[0]) << 10
    assert 0 < budget <= total // 4
    assert math.isclose(data.memory_budget("cpu", 0.5), gib / 2)


def test_run_training_split_decodes_for_memory_and_stays_lazy_for_stream(folder):
    settings = {"dataset": "folder", "root": str(folder), "val_per_class": 1, "workers": 0}
    memory = data.run_training_split({**settings, "loader": "memory"}, 0)
    stream = data.run_training_split({**settings, "loader": "stream"}, 0)
    assert isinstance(memory.images, torch.Tensor) and isinstance(stream.images, data.LazyImages)
    assert memory.record["loader"] == "memory" and stream.record["loader"] == "stream"
    assert isinstance(data.create_loader(stream, settings, 8, "cpu", 0), data.StreamLoader)
    assert isinstance(data.create_loader(memory, settings, 8, "cpu", 0), data.DeviceLoader)
    assert torch.equal(stream.images[:], memory.images) and np.array_equal(stream.labels, memory.labels)
