"""Small datasets written by the tests in each published layout (no downloads): ImageFolder, tensor files, STL-10's
binary files, Tiny-ImageNet and ImageNet. Each writer returns what it wrote (the images as uint8 C x H x W
arrays, the labels), so a test compares what advlab reads with what is on disk."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(label: int, i: int, size: int | tuple[int, int], channels: int = 3, seed: int = 0) -> np.ndarray:
    """A uint8 ``C x H x W`` image: noise around a colour of class ``label`` (so a model can learn the classes)."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([seed, label, i])
    base = (np.array([53, 101, 197])[:channels] * (label + 1)) % 200
    noise = rng.integers(0, 56, (channels, h, w))
    return (base[:, None, None] + noise).astype(np.uint8)


def save(image: np.ndarray, path: Path, mode: str | None = None) -> None:
    """Write a ``C x H x W`` uint8 image with Pillow (format by suffix; ``mode`` converts it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    if mode is not None:
        img = img.convert(mode)
    img.save(path)


def write_class_folders(folder: Path, classes: list[str], per_class: int, size: int = 16, ext: str = "png",
                        channels: int = 3, seed: int = 0) -> tuple[list[np.ndarray], list[int], list[Path]]:
    """``folder/<class>/<i>.<ext>`` for each class in the given order; returns images, labels (index in sorted
    order) and paths, in sorted (path) order."""
    order = sorted(classes)
    out = []
    for name in classes:
        for i in range(per_class):
            image = pattern(order.index(name), i, size, channels, seed)
            path = folder / name / f"{i:04d}.{ext}"
            save(image, path)
            out.append((str(path), image, order.index(name)))
    out.sort(key=lambda t: t[0])
    return [t[1] for t in out], [t[2] for t in out], [Path(t[0]) for t in out]


def write_folder(root: Path, classes=("dog", "cat", "frog"), train: int = 20, test: int = 6, size: int = 16,
                 ext: str = "png", test_name: str = "test", unlabeled: int = 0) -> dict:
    """``root/train/<class>/`` and ``root/<test_name>/<class>/`` (test 0: only ``root/<class>/``), optional
    ``root/unlabeled/`` of flat images."""
    if test:
        tr = write_class_folders(root / "train", list(classes), train, size, ext)
        te = write_class_folders(root / test_name, list(classes), test, size, ext, seed=1)
    else:
        tr, te = write_class_folders(root, list(classes), train, size, ext), None
    unl = []
    for i in range(unlabeled):
        image = pattern(i % len(classes), 1000 + i, size)
        save(image, root / "unlabeled" / f"u{i:05d}.{ext}")
        unl.append(image)
    return {"train": tr, "test": te, "unlabeled": unl, "classes": sorted(classes)}


def write_tensor_file(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """``images`` and ``labels`` in the format of ``path``'s suffix (.npz, .pt, .safetensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, images=images, labels=labels)
    elif path.suffix == ".pt":
        import torch

        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}, path)
    else:  # safetensors, written by the format's rule (huggingface/safetensors README): header length, JSON, bytes
        dtypes = {np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}
        header, body = {}, b""
        for name, array in (("images", images), ("labels", labels)):
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
            header[name] = {"dtype": dtypes[array.dtype], "shape": list(array.shape),
                            "data_offsets": [len(body), len(body) + len(raw)]}
            body += raw
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def stl10_images(n: int, seed: int) -> np.ndarray:
    """``n`` STL-10-sized images (N x 3 x 96 x 96), each image differing across its rows and columns."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)


def write_stl10(root: Path, train: int = 30, test: int = 20, unlabeled: int = 12) -> dict:
    """``root/stl10_binary/`` as published: images stored channel by channel, column-major within a channel (the
    transpose of each channel), labels 1..10 (one per image, cycling)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n, seed in (("train", train, 0), ("test", test, 1), ("unlabeled", unlabeled, 2)):
        images = stl10_images(n, seed)
        np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(folder / f"{part}_X.bin")
        labels = np.arange(n) % 10
        if part != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{part}_y.bin")
        out[part] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    return out


WNIDS = ["n04067472", "n01443537", "n02124075"]  # not in sorted order, as wnids.txt is not


def write_tiny_imagenet(root: Path, wnids=WNIDS, train: int = 12, val: int = 4, gray: int = 1) -> dict:
    """``root/tiny-imagenet-200/`` with ``wnids.txt`` (in the given order), ``train/<wnid>/images/*.JPEG`` (the first
    ``gray`` of each class grayscale) and ``val/images/val_<k>.JPEG`` labelled by ``val/val_annotations.txt``."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    order = sorted(wnids)
    lines, val_labels = [], {}
    for w in wnids:
        for i in range(train):
            save(pattern(order.index(w), i, 64), base / "train" / w / "images" / f"{w}_{i}.JPEG",
                 mode="L" if i < gray else None)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    k = 0
    for i in range(val):
        for w in wnids:
            name = f"val_{k}.JPEG"
            save(pattern(order.index(w), 500 + i, 64), base / "val" / "images" / name)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
            val_labels[name] = order.index(w)
            k += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"base": base, "val_labels": val_labels, "classes": order}


def write_imagenet(root: Path, wnids=WNIDS, train: int = 10, val: int = 3, val_layout: str = "folders",
                   sizes=((40, 52), (48, 36), (44, 44))) -> dict:
    """``root/train/<wnid>/*.JPEG`` (sizes vary) and the validation images: ``val/<wnid>/`` (``folders``), or flat
    ``val/ILSVRC2012_val_%08d.JPEG`` labelled by Kaggle's ``LOC_val_solution.csv`` (``kaggle``) or by the devkit's
    ground truth and ``meta.mat`` (``devkit``: ILSVRC2012_IDs in the devkit's order, which is not the sorted wnids)."""
    from scipy.io import savemat

    order = sorted(wnids)
    for w in wnids:
        for i in range(train):
            save(pattern(order.index(w), i, sizes[i % len(sizes)]), root / "train" / w / f"{w}_{i}.JPEG")
    flat = []
    for i in range(val):
        for w in wnids:
            flat.append(w)
    labels = []
    if val_layout == "folders":
        for k, w in enumerate(flat):
            save(pattern(order.index(w), 500 + k, sizes[k % len(sizes)]), root / "val" / w / f"v_{k}.JPEG")
    else:
        for k, w in enumerate(flat, 1):
            save(pattern(order.index(w), 500 + k, sizes[k % len(sizes)]), root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG")
            labels.append(order.index(w))
    if val_layout == "kaggle":
        rows = [f"ILSVRC2012_val_{k:08d},{w} 1 2 30 30 {w} 3 4 20 20" for k, w in enumerate(flat, 1)]
        rows = ["ImageId,PredictionString"] + rows[1::2] + rows[::2]  # not in file order, as Kaggle's is not
        (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    elif val_layout == "devkit":
        data = root / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        ids = {w: i + 1 for i, w in enumerate(reversed(order))}  # ID 1 is the last wnid: not the sorted order
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(str(ids[w]) for w in flat) + "\n")
        fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
        synsets = np.zeros(len(order) + 1, dtype=fields)
        for j, w in enumerate(order):
            synsets[j] = (ids[w], w, f"class {w}", "", 0)
        synsets[len(order)] = (len(order) + 1, "n00001740", "entity", "", 3)  # an inner synset: skipped
        savemat(data / "meta.mat", {"synsets": synsets})
    return {"classes": order, "val_wnids": flat, "val_labels": labels}
