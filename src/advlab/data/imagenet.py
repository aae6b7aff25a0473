"""ImageNet ILSVRC-2012 classification (Russakovsky et al., IJCV 2015) in its usual layouts.

A folder ``R`` (``data.root``, or ``ILSVRC/Data/CLS-LOC`` inside it, Kaggle's layout) holds ``train/<wnid>/*.JPEG``
(1,281,167 images): the classes are the 1,000 wnids sorted (label 0 = ``n01440764``), torchvision's order. The
validation images (50,000: advlab's test part) are either

- in class folders ``val/<wnid>/*.JPEG`` (as torchvision's ``ImageNet`` or the usual ``valprep.sh`` leave them), or
- flat, ``val/ILSVRC2012_val_00000001.JPEG`` ..., labelled by
  - Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``: the first word of the string is the wnid), or
  - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line k: the ILSVRC2012_ID of the k-th file in name
    order) with ``meta.mat`` (its ``synsets``: ILSVRC2012_ID -> WNID for the 1,000 leaf synsets). The IDs are
    the devkit's own order, not the sorted wnids: each is mapped to its wnid, then to the label.
  Looked for in ``data.root``, ``R``, and their ``ILSVRC2012_devkit_t12/data/``.

Images vary in size (and a few are grayscale or CMYK: converted to RGB and counted): training crops them at
random (``resized-crop``), the evaluation takes the resize-256-centre-crop-224 view.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .files import BadFile
from .folder import class_files, image_files, subfolders
from .images import FileBackend
from .sources import OpenOptions, PartData

KAGGLE = Path("ILSVRC") / "Data" / "CLS-LOC"
DEVKIT = Path("ILSVRC2012_devkit_t12") / "data"
SOLUTION = "LOC_val_solution.csv"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"


def read_meta(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the leaf synsets (``num_children == 0``) of the devkit's ``meta.mat``."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        ids, wnids, children = synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]
    except (KeyError, ValueError, TypeError, OSError, IndexError) as e:
        raise BadFile(path, f"is not the devkit's meta.mat (synsets with ILSVRC2012_ID, WNID, num_children): "
                            f"{type(e).__name__}: {e}") from None
    return {int(i): str(w) for i, w, c in zip(np.atleast_1d(ids), np.atleast_1d(wnids), np.atleast_1d(children))
            if int(c) == 0}


def devkit_wnids(ground_truth: Path, meta: Path, count: int) -> list[str]:
    """The wnid of each flat validation file in name order, from the devkit's ground truth and meta.mat."""
    to_wnid = read_meta(meta)
    lines = ground_truth.read_text().split()
    if len(lines) != count:
        raise BadFile(ground_truth, f"holds {len(lines)} labels for the {count} images of the flat val/ folder")
    out = []
    for k, text in enumerate(lines, 1):
        try:
            out.append(to_wnid[int(text)])
        except (KeyError, ValueError):
            raise BadFile(ground_truth, f"line {k}: {text!r} is not an ILSVRC2012_ID of {meta}") from None
    return out


def solution_wnids(path: Path, stems: list[str]) -> list[str]:
    """The wnid of each flat validation file (by its name without extension) from Kaggle's LOC_val_solution.csv."""
    table = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                table[row["ImageId"]] = row["PredictionString"].split()[0]
            except (KeyError, IndexError, AttributeError):
                raise BadFile(path, f"row {row!r} lacks ImageId or a PredictionString starting with a wnid") from None
    missing = [s for s in stems if s not in table]
    if missing:
        raise BadFile(path, f"has no row for the validation image {missing[0]}")
    return [table[s] for s in stems]


@dataclass(frozen=True)
class ImageNetSource:
    """``train/`` and ``val/`` as in the module docstring."""

    def wanted(self, part: str) -> str:
        if part == "train":
            return "train/<wnid>/*.JPEG"
        return (f"train/<wnid>/ and val/<wnid>/*.JPEG, or a flat val/ with {SOLUTION}, or with {GROUND_TRUTH} and "
                f"{META} of the devkit")

    def _labels_files(self, folder: Path, root: Path) -> list[Path] | None:
        for d in (folder, root, folder / DEVKIT, root / DEVKIT):
            if (d / SOLUTION).is_file():
                return [d / SOLUTION]
        for d in (folder, root, folder / DEVKIT, root / DEVKIT):
            if (d / GROUND_TRUTH).is_file() and (d / META).is_file():
                return [d / GROUND_TRUTH, d / META]
        return None

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part == "unlabeled":
            return None
        for root in (folder, folder / KAGGLE):
            if not (root / "train").is_dir():
                continue
            if part == "train":
                return [root / "train"]
            val = root / "val"
            if not val.is_dir():
                return None
            if subfolders(val):
                return [root / "train", val]
            labels = self._labels_files(folder, root)
            return [root / "train", val, *labels] if labels else None
        return None

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        classes, paths, labels = class_files(files[0])
        record = {"layout": "imagenet", "train": str(files[0])}
        if part == "train":
            return PartData(FileBackend(tuple(paths), 3), labels, tuple(classes), None, record)
        val = files[1]
        if len(files) == 2:
            _, paths, labels = class_files(val, classes)
            return PartData(FileBackend(tuple(paths), 3), labels, tuple(classes), None,
                            {**record, "val": str(val), "val_labels": "class folders"})
        paths = image_files(val)
        if not paths:
            raise DataError(f"{val}: no images")
        if files[2].name == SOLUTION:
            wnids = solution_wnids(files[2], [Path(p).stem for p in paths])
        else:
            wnids = devkit_wnids(files[2], files[3], len(paths))
        index = {w: i for i, w in enumerate(classes)}
        unknown = [w for w in wnids if w not in index]
        if unknown:
            raise BadFile(files[2], f"labels a validation image {unknown[0]}, not a class of {files[0]}")
        return PartData(FileBackend(tuple(paths), 3), np.array([index[w] for w in wnids], dtype=np.int64),
                        tuple(classes), None, {**record, "val": str(val), "val_labels": [str(f) for f in files[2:]]})

    def published(self, part: str) -> tuple[str, ...]:
        return ()
