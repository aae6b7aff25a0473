"""Tiny-ImageNet's published layout (``tiny-imagenet-200/``, the CS231n release): 200 classes, 64 x 64 JPEG.

``wnids.txt`` lists the 200 WordNet ids; the classes are those ids sorted (label 0 the smallest), the order
torchvision's ``ImageFolder`` gives over ``train/``. Training images: ``train/<wnid>/images/*.JPEG`` (500 per
class). The labelled held-out images are ``val/images/*.JPEG`` (10,000, all in one folder), labelled only by
``val/val_annotations.txt`` (tab-separated: file, wnid, box): they are advlab's test part (read in sorted file
order). ``test/`` has no labels and is not used. Some images are grayscale: converted to RGB, and counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import BadFile
from .folder import image_files
from .images import FileBackend
from .sources import OpenOptions, PartData

FOLDER = "tiny-imagenet-200"
SIDE = 64


def read_wnids(path: Path) -> list[str]:
    """The sorted WordNet ids of ``wnids.txt``; BadFile for an empty file or a repeated id."""
    wnids = path.read_text().split()
    if not wnids or len(set(wnids)) != len(wnids):
        raise BadFile(path, "lists no WordNet ids" if not wnids else "lists a WordNet id twice")
    return sorted(wnids)


def read_annotations(path: Path, classes: list[str]) -> dict[str, int]:
    """File name -> label of ``val_annotations.txt``; BadFile naming the line of an unknown wnid or a short line."""
    index = {w: i for i, w in enumerate(classes)}
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise BadFile(path, f"line {number} is not 'file<TAB>wnid<TAB>box': {line!r}")
        if fields[1] not in index:
            raise BadFile(path, f"line {number} names {fields[1]!r}, not one of the wnids.txt classes")
        out[fields[0]] = index[fields[1]]
    return out


@dataclass(frozen=True)
class TinyImageNetSource:
    """``tiny-imagenet-200/`` (or a folder holding its ``wnids.txt``, ``train/`` and ``val/``)."""

    def wanted(self, part: str) -> str:
        what = "train/<wnid>/images/" if part == "train" else "val/images/ and val/val_annotations.txt"
        return f"{FOLDER}/ with wnids.txt and {what}"

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part == "unlabeled":
            return None
        for root in (folder / FOLDER, folder):
            need = [root / "wnids.txt", root / "train"] if part == "train" else \
                [root / "wnids.txt", root / "val" / "val_annotations.txt", root / "val" / "images"]
            if all(p.exists() for p in need):
                return need
        return None

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        classes = read_wnids(files[0])
        root = files[0].parent
        record = {"layout": "tiny-imagenet", "root": str(root)}
        if part == "train":
            paths, labels = [], []
            for label, wnid in enumerate(classes):
                found = image_files(root / "train" / wnid / "images")
                if not found:
                    raise DataError(f"{root / 'train' / wnid / 'images'}: no images for class {wnid} of wnids.txt")
                paths += found
                labels.append(np.full(len(found), label, dtype=np.int64))
            return PartData(FileBackend(tuple(paths), 3), np.concatenate(labels), tuple(classes), SIDE, record)
        annotated = read_annotations(files[1], classes)
        paths = image_files(files[2])
        if not paths:
            raise DataError(f"{files[2]}: no images")
        missing = [p for p in paths if Path(p).name not in annotated]
        if missing:
            raise BadFile(missing[0], f"has no line in {files[1]}")
        labels = np.array([annotated[Path(p).name] for p in paths], dtype=np.int64)
        return PartData(FileBackend(tuple(paths), 3), labels, tuple(classes), SIDE, record)

    def published(self, part: str) -> tuple[str, ...]:
        return ()
