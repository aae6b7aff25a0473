"""Every data source reads small files written in its real layout (tests/layouts.py: ImageFolder, tensor files,
STL-10's binary files, Tiny-ImageNet, ImageNet's three validation layouts), gives back what is on disk, and names
the file in one line when a file is bad."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from layouts import WNIDS, pattern, save, write_folder, write_imagenet, write_stl10, write_tensor_file, \
    write_tiny_imagenet
from PIL import Image

import advlab.data as data
from advlab.data.folder import TEST_STREAM
from advlab.data.splits import position_keys
from advlab.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def stacked(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images))


def rank_major(items: list, labels: list[int]) -> list:
    """``items`` stored class by class, read the first of each class, then the second of each, ... (the documented
    test order of class folders)."""
    by_class = [[it for it, y in zip(items, labels) if y == c] for c in sorted(set(labels))]
    return [group[r] for r in range(max(map(len, by_class))) for group in by_class if r < len(group)]


def pil_view(path, size: int) -> np.ndarray:
    """torchvision's Resize(round(size * 256 / 224)) + CenterCrop(size) on a Pillow image, transcribed from
    torchvision/transforms/functional.py (_compute_resized_output_size, center_crop): the shorter side to the
    target, the longer int(target * long / short); the crop's offset int(round((side - size) / 2))."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short = round(size * 256 / 224)
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(new, Image.BILINEAR)
    top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------------------- folder
def test_folder_with_train_and_test_reads_every_image_with_imagefolders_labels(tmp_path):
    written = write_folder(tmp_path / "imgs", train=20, test=6)
    facts = data.dataset_facts("folder", tmp_path / "imgs")
    assert facts.classes == ("cat", "dog", "frog") and facts.shape == (3, 16, 16) and facts.preprocessing == "none"
    assert facts.val_per_class == 2  # min(1000 // 3, smallest class // 10)
    x_te, y_te = data.load("folder", "test", root=tmp_path / "imgs")
    images, labels, _ = written["test"]
    assert torch.equal(x_te, stacked(rank_major(images, labels)))  # PNG: exact pixels
    assert y_te.tolist() == rank_major(labels, labels) == [0, 1, 2] * 6  # the first n hold every class
    x_tr, y_tr = data.load("folder", "train", root=tmp_path / "imgs")
    x_va, y_va = data.load("folder", "val", root=tmp_path / "imgs")
    assert len(x_tr) + len(x_va) == 60 and torch.bincount(y_va).tolist() == [2, 2, 2]
    everything = {bytes(im.tobytes()) for im in written["train"][0]}
    assert {bytes(x.numpy().tobytes()) for x in torch.cat([x_tr, x_va])} == everything


def test_folder_of_class_folders_carves_the_test_split_by_the_documented_rule(tmp_path):
    write_folder(tmp_path / "imgs", train=20, test=0)
    opened = data.open_split("folder", "test", tmp_path / "imgs", options=data.OpenOptions(test_fraction=0.25))
    images, labels, facts = opened
    assert torch.bincount(labels).tolist() == [5, 5, 5]
    # the rule, applied here from its definition: per class the 5 smallest keys of stream TEST_STREAM
    keys = position_keys(60, start=TEST_STREAM)
    expected = sorted(int(c * 20 + i) for c in range(3) for i in np.argsort(keys[c * 20:(c + 1) * 20])[:5])
    names = [str(tmp_path / "imgs" / ["cat", "dog", "frog"][p // 20] / f"{p % 20:04d}.png") for p in expected]
    assert [images.name(j) for j in range(15)] == rank_major(names, [p // 20 for p in expected])
    train, _, _ = data.open_split("folder", "train", tmp_path / "imgs", options=data.OpenOptions(test_fraction=0.25))
    val, _, _ = data.open_split("folder", "val", tmp_path / "imgs", options=data.OpenOptions(test_fraction=0.25))
    names = lambda s: {s.name(j) for j in range(len(s))}  # noqa: E731
    assert not names(images) & (names(train) | names(val)) and len(names(train) | names(val)) == 45
    split = data.training_split("folder", root=tmp_path / "imgs", options=data.OpenOptions(test_fraction=0.25))
    carved = split.record["images"]["source"]["test"]
    assert carved["fraction"] == 0.25 and carved["size"] == 15 and len(carved["sha256"]) == 64


def test_folder_val_subfolder_counts_as_the_test_split_and_jpeg_decodes_as_pillow_does(tmp_path):
    write_folder(tmp_path / "imgs", train=10, test=3, ext="jpg", test_name="val")
    x_te, y_te = data.load("folder", "test", root=tmp_path / "imgs")
    files = rank_major(sorted((tmp_path / "imgs" / "val").rglob("*.jpg")), [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert len(x_te) == 9 and y_te.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    want = np.asarray(Image.open(files[4]).convert("RGB")).transpose(2, 0, 1).copy()
    assert torch.equal(x_te[4], torch.from_numpy(want))


def test_grayscale_and_palette_images_in_a_colour_set_are_converted_and_counted(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, train=12, test=2)
    odd = [root / "train" / "dog" / "0003.png", root / "train" / "frog" / "0005.png", root / "train" / "cat" / "0007.png"]
    for path, mode in zip(odd, ("L", "P", "RGBA")):
        Image.open(path).convert(mode).save(path)
    split = data.training_split("folder", root=root, val_per_class=1)
    assert split.images.shape[1] == 3 and split.record["images"]["converted"] == 3
    x_val, _ = data.load("folder", "val", root=root, val_per_class=1)
    whole = torch.cat([split.images, x_val])
    for path in odd:  # each is Pillow's own conversion to RGB
        want = torch.from_numpy(np.asarray(Image.open(path).convert("RGBA").convert("RGB")).transpose(2, 0, 1).copy())
        assert any(torch.equal(want, x) for x in whole)


def test_a_folder_of_grayscale_images_is_a_one_channel_set(tmp_path):
    root = tmp_path / "gray"
    for c in ("a", "b"):
        for i in range(10):
            save(pattern(0, i, 12, channels=1), root / c / f"{i}.png")
    facts = data.dataset_facts("folder", root)
    assert facts.in_channels == 1 and facts.image_size == 12
    assert data.load("folder", "train", root=root, val_per_class=1)[0].shape[1:] == (1, 12, 12)


def test_unlabeled_folder_is_an_unlabeled_split_appended_after_the_labelled_images(tmp_path):
    written = write_folder(tmp_path / "imgs", train=10, test=2, unlabeled=7)
    x, y = data.load("folder", "unlabeled", root=tmp_path / "imgs")
    assert torch.equal(x, stacked(written["unlabeled"])) and y.tolist() == [-1] * 7
    split = data.training_split("folder", root=tmp_path / "imgs", unlabeled=True, val_per_class=1, meta_size=3,
                                label_noise={"rate": 0.5})
    assert split.record["unlabeled"] == 7 and len(split.labels) == 27 - 3 + 7
    assert split.labels[-7:].tolist() == [-1] * 7 and (split.labels[:-7] >= 0).all()
    assert torch.equal(split.images[-7:], x) and split.num_labelled == 24
    bank_images, bank_labels = split.labelled()
    assert len(bank_images) == 24 and torch.equal(bank_labels, split.labels[:24])
    assert split.record["label_noise"]["num_flipped"] == 12  # noise on the 24 labelled images only


@pytest.mark.parametrize("fault", ["truncated", "not-an-image", "other-size", "empty-class", "no-classes",
                                   "unknown-test-class", "no-root"])
def test_a_bad_folder_is_one_error_naming_the_file(tmp_path, fault):
    root = tmp_path / "imgs"
    write_folder(root, train=10, test=2)
    bad = root / "train" / "dog" / "0004.png"
    named = str(bad)
    if fault == "truncated":
        bad.write_bytes(bad.read_bytes()[:60])
    elif fault == "not-an-image":
        bad.write_text("not a png")
    elif fault == "other-size":
        save(pattern(1, 4, 20), bad)
    elif fault == "empty-class":
        (root / "train" / "zebra").mkdir()
        named = str(root / "train" / "zebra")
    elif fault == "no-classes":
        root = tmp_path / "flat"
        save(pattern(0, 0, 8), root / "a.png")
        named = str(root)
    elif fault == "unknown-test-class":
        save(pattern(0, 0, 16), root / "test" / "zebra" / "0.png")
        named = str(root / "test" / "zebra")
    with pytest.raises(DataError) as info:
        if fault == "no-root":
            data.load("folder", "train")
        elif fault == "unknown-test-class":
            data.load("folder", "test", root=root)
        else:
            data.training_split("folder", root=root, val_per_class=1)
    message = str(info.value)
    assert "\n" not in message
    assert ("data.root is not set" in message) if fault == "no-root" else (named in message)


def test_with_image_size_every_image_is_resized_and_centre_cropped_as_torchvision_does(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root, train=10, test=2, size=16)
    odd = root / "test" / "cat" / "0001.png"
    save(pattern(0, 1, (30, 22)), odd)  # another size: allowed once data.image_size is set
    x, _ = data.load("folder", "test", root=root, image_size=12)
    assert x.shape[1:] == (3, 12, 12)
    assert np.array_equal(x[3].numpy(), pil_view(odd, 12))  # cat's second image: rank 1 of class 0, 1 * 3 + 0
    assert data.dataset_facts("folder", root, data.OpenOptions(image_size=12)).preprocessing == "resize-14-center-crop-12"


# ----------------------------------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("suffix,layout", [(".npz", "nhwc"), (".pt", "nchw"), (".safetensors", "nhw")])
def test_tensor_files_read_images_in_every_layout_and_their_test_file(tmp_path, suffix, layout):
    rng = np.random.default_rng(0)
    channels = 1 if layout == "nhw" else 3
    images = rng.integers(0, 256, (40, channels, 10, 10), dtype=np.uint8)
    labels = np.arange(40) % 4
    stored = {"nhwc": images.transpose(0, 2, 3, 1), "nchw": images, "nhw": images[:, 0]}[layout]
    write_tensor_file(tmp_path / f"train{suffix}", np.ascontiguousarray(stored), labels.astype(np.int64))
    write_tensor_file(tmp_path / f"test{suffix}", np.ascontiguousarray(stored[:8]), labels[:8].astype(np.int64))
    x, y = data.load("tensors", "test", root=tmp_path / f"train{suffix}", test_file=str(tmp_path / f"test{suffix}"))
    assert torch.equal(x, torch.from_numpy(images[:8])) and y.tolist() == labels[:8].tolist()
    x_tr, _ = data.load("tensors", "train", root=tmp_path / f"train{suffix}", val_per_class=2)
    assert len(x_tr) == 40 - 4 - 8  # the carved test split (10% of each class: 1 of 10) and the validation split


@pytest.mark.parametrize("fault,message", [
    ("float", "dtype float32"), ("counts", "40 images but 39 labels"), ("label", "label 7 at position 3"),
    ("header", "declares a header"), ("pickle", "weights_only=True"), ("shape", "of shape (40, 5, 10, 11)")])
def test_a_bad_tensor_file_is_one_error_naming_it(tmp_path, fault, message):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 3, 10, 10), dtype=np.uint8), np.arange(40) % 4
    path = tmp_path / ("data.pt" if fault == "pickle" else "data.safetensors" if fault == "header" else "data.npz")
    test_labels = None
    if fault == "float":
        images = images.astype(np.float32)
    elif fault == "counts":
        labels = labels[:39]
    elif fault == "shape":
        images = rng.integers(0, 256, (40, 5, 10, 11), dtype=np.uint8)
    elif fault == "label":
        test_labels = labels.copy()
        test_labels[3] = 7
    if fault == "pickle":
        import torch as t

        t.save({"images": t.from_numpy(images), "labels": t.from_numpy(labels), "code": print}, path)
    else:
        write_tensor_file(path, images, labels)
    test = None
    if test_labels is not None:
        test = tmp_path / "test.npz"
        write_tensor_file(test, images, test_labels)
    if fault == "header":
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as info:
        data.load("tensors", "test" if test else "train", root=path, test_file=str(test) if test else None,
                  val_per_class=1)
    assert message in str(info.value) and str(test or path) in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------------- STL-10
def test_stl10_reads_column_major_images_labels_1_to_10_and_the_unlabeled_file(tmp_path):
    written = write_stl10(tmp_path, train=30, test=20, unlabeled=12)
    x_te, y_te = data.load("stl10", "test", root=tmp_path)
    assert torch.equal(x_te, torch.from_numpy(written["test"][0])) and y_te.tolist() == written["test"][1].tolist()
    x_u, y_u = data.load("stl10", "unlabeled", root=tmp_path)
    assert torch.equal(x_u, torch.from_numpy(written["unlabeled"][0])) and (y_u == -1).all()
    split = data.training_split("stl10", root=tmp_path, val_per_class=1, unlabeled=True)
    assert len(split.labels) == 30 - 10 + 12 and split.record["unlabeled"] == 12
    assert split.facts.classes[0] == "airplane" and split.facts.preprocessing == "none"
    lazy = data.training_split("stl10", root=tmp_path, val_per_class=1, unlabeled=True, lazy=True)
    assert isinstance(lazy.images, data.LazyImages) and torch.equal(lazy.images[:], split.images)


@pytest.mark.parametrize("fault", ["label", "truncated", "count"])
def test_bad_stl10_files_are_one_error_naming_the_file(tmp_path, fault):
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    if fault == "label":
        y = np.fromfile(folder / "train_y.bin", dtype=np.uint8)
        y[5] = 11
        y.tofile(folder / "train_y.bin")
        bad, text = folder / "train_y.bin", "label 11 at position 5"
    elif fault == "truncated":
        (folder / "train_X.bin").write_bytes((folder / "train_X.bin").read_bytes()[:-100])
        bad, text = folder / "train_X.bin", "not a whole number"
    else:
        np.ones(29, dtype=np.uint8).tofile(folder / "train_y.bin")
        bad, text = folder / "train_y.bin", "29 labels for 30 images"
    with pytest.raises(DataError) as info:
        data.load("stl10", "train", root=tmp_path, val_per_class=1)
    assert str(bad) in str(info.value) and text in str(info.value)


# ----------------------------------------------------------------------------------------------------- Tiny-ImageNet
def test_tiny_imagenet_classes_are_sorted_wnids_and_val_is_labelled_by_its_annotations(tmp_path):
    written = write_tiny_imagenet(tmp_path, train=12, val=4, gray=1)
    split = data.training_split("tiny-imagenet", root=tmp_path, val_per_class=1)
    assert split.facts.classes == tuple(sorted(WNIDS)) and split.images.shape[1:] == (3, 64, 64)
    assert split.record["images"]["converted"] == 3  # one grayscale image per class, none in the validation split
    x, y = data.load("tiny-imagenet", "test", root=tmp_path)
    files = sorted((written["base"] / "val" / "images").iterdir())
    assert y.tolist() == [written["val_labels"][f.name] for f in files]
    assert torch.equal(x[5], torch.from_numpy(np.asarray(Image.open(files[5]).convert("RGB")).transpose(2, 0, 1).copy()))


def test_a_tiny_imagenet_val_image_without_annotation_is_named(tmp_path):
    written = write_tiny_imagenet(tmp_path)
    extra = written["base"] / "val" / "images" / "val_999.JPEG"
    save(pattern(0, 0, 64), extra)
    with pytest.raises(DataError, match="val_999.JPEG has no line in"):
        data.load("tiny-imagenet", "test", root=tmp_path)


# ----------------------------------------------------------------------------------------------------- ImageNet
@pytest.mark.parametrize("layout", ["folders", "kaggle", "devkit"])
def test_imagenet_validation_labels_in_each_layout_and_the_224_style_view(tmp_path, layout):
    written = write_imagenet(tmp_path, val_layout=layout)
    x, y = data.load("imagenet", "test", root=tmp_path, image_size=32)
    classes = written["classes"]
    if layout == "folders":  # class folders: read rank-major
        labels = [classes.index(w) for w in sorted(written["val_wnids"])]
        want = rank_major(labels, labels)
        files = rank_major(sorted((tmp_path / "val").rglob("*.JPEG")), labels)
    else:  # flat, in file order: the wnid each file was written for, through the devkit's IDs or Kaggle's csv
        want = written["val_labels"]
        files = sorted((tmp_path / "val").glob("*.JPEG"))
    assert y.tolist() == want
    assert x.shape == (9, 3, 32, 32) and np.array_equal(x[4].numpy(), pil_view(files[4], 32))
    assert data.dataset_facts("imagenet", tmp_path, data.OpenOptions(image_size=224)).preprocessing == \
        "resize-256-center-crop-224"


def test_imagenet_devkit_ids_map_through_meta_not_the_sorted_order(tmp_path):
    written = write_imagenet(tmp_path, val_layout="devkit")
    ids = (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    _, y = data.load("imagenet", "test", root=tmp_path, image_size=32)
    # read naively as "ID - 1 = label" the labels would be reversed; through meta.mat they are the written ones
    assert y.tolist() == written["val_labels"] and y.tolist() != [int(i) - 1 for i in ids]


def test_imagenet_ground_truth_of_the_wrong_length_is_named(tmp_path):
    write_imagenet(tmp_path, val_layout="devkit")
    gt = tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("\n".join(gt.read_text().split()[:-1]))
    with pytest.raises(DataError, match=f"{gt} holds 8 labels for the 9 images"):
        data.load("imagenet", "test", root=tmp_path, image_size=32)


# ----------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("preset,overrides,message", [
    ("pgd-at", ["data.dataset=stl10", "data.unlabeled=true"],
     "data.unlabeled: perturbation.name 'pgd' reads the labels"),
    ("simclr", ["data.dataset=cifar10", "data.unlabeled=true"],
     "data.unlabeled: dataset 'cifar10' has no unlabeled images (those with: folder, stl10)"),
    ("pgd-at", ["data.dataset=imagenet", "data.loader=memory"], "data.loader: memory holds each image"),
    ("pgd-at", ["data.dataset=folder"], "data.root: dataset 'folder' reads your files; set data.root"),
    ("pgd-at", ["data.test_file=x.npz"], "data.test_file: the test file of the tensors source"),
    ("pgd-at", ["data.loader=disk"], "data.loader: invalid value 'disk'; allowed: auto, memory, stream"),
    ("pgd-at", ["data.augment=mixup"], "data.augment: invalid value 'mixup'; allowed: auto, crop, resized-crop"),
    ("pgd-at", ["data.image_size=4"], "data.image_size"),
])
def test_data_settings_that_cannot_work_are_one_config_error_naming_the_key(preset, overrides, message):
    from advlab.config import load_config
    from advlab.engine.config_checks import check_config
    from advlab.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        check_config(load_config(preset, overrides + ["device=cpu"]))
    assert message in str(info.value)


def test_advlab_bench_on_a_users_set_asks_for_the_shape_it_cannot_read(capsys):
    from advlab.cli import main

    assert main(["bench", "--preset", "pgd-at", "--device", "cpu", "data.dataset=folder", "data.root=x"]) == 2
    assert "give --shape and --classes" in capsys.readouterr().err
