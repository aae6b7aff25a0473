"""Images and labels in one file (``data.dataset: tensors``): ``.npz``, ``.pt`` / ``.pth`` or ``.safetensors``.

``data.root`` is the training file; ``data.test_file`` the test file (optional: without it, the test split is
carved from the training file per class, as a folder's, :func:`advlab.data.folder.carve`). Each file holds

- the images under the name ``images`` (or ``x``): uint8, ``N x H x W x C`` or ``N x C x H x W`` with C 1 or 3
  (the axis of size 1 or 3 that leaves a square image), or ``N x H x W`` (grayscale);
- the labels under the name ``labels`` (or ``y``): integers ``0..C-1``, ``N`` of them.

A ``.npz`` is read by numpy without pickles (``allow_pickle=False``); a ``.pt`` by ``torch.load(weights_only=True)``
(a dict with those names, or an ``(images, labels)`` pair; no code from the file runs); a ``.safetensors`` file by
the format's own rule (an 8-byte little-endian header length, a JSON header of name -> dtype, shape and byte
offsets, then the bytes; huggingface/safetensors README), without the ``safetensors`` package. The file is read
whole into memory. The classes are ``0..max label`` of the training file.
"""
from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .files import BadFile
from .folder import carve, digest
from .images import ArrayBackend
from .sources import OpenOptions, PartData

IMAGE_NAMES = ("images", "x")
LABEL_NAMES = ("labels", "y")
SUFFIXES = (".npz", ".pt", ".pth", ".safetensors")
_SAFETENSORS_DTYPES = {"U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32,
                       "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16, "F32": np.float32,
                       "F64": np.float64, "BOOL": np.bool_}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a numpy array (little-endian); BadFile for a malformed file."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise BadFile(path, "is too short for a safetensors file (no header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise BadFile(path, f"declares a header of {n} bytes but holds {len(raw) - 8}: truncated or not safetensors")
    try:
        header = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadFile(path, f"has a header that is not JSON ({e})") from None
    body = memoryview(raw)[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise BadFile(path, f"tensor {name!r}: dtype, shape or data_offsets missing or unsupported "
                                f"({entry!r})") from None
        if not 0 <= begin <= end <= len(body) or end - begin != dtype.itemsize * int(np.prod(shape)):
            raise BadFile(path, f"tensor {name!r}: data_offsets {begin}..{end} do not hold {shape} of "
                                f"{entry['dtype']} in a body of {len(body)} bytes (truncated?)")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
    return out


def _read_pt(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise BadFile(path, f"cannot be read by torch.load(weights_only=True) ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        obj = {"images": obj[0], "labels": obj[1]}
    if not isinstance(obj, dict):
        raise BadFile(path, f"holds a {type(obj).__name__}; expected a dict with images and labels, or a pair")
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in obj.items()}


def read_arrays(path: Path) -> dict[str, Any]:
    """The named arrays of ``path`` by its suffix (:data:`SUFFIXES`); BadFile for an unreadable file."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise BadFile(path, f"is not a readable .npz file ({type(e).__name__}: {e})") from None
    if suffix in (".pt", ".pth"):
        return _read_pt(path)
    if suffix == ".safetensors":
        return read_safetensors(path)
    raise BadFile(path, f"has the suffix {suffix or '(none)'}; tensor files are {', '.join(SUFFIXES)}")


def _named(arrays: dict[str, Any], names: tuple[str, ...], path: Path, what: str) -> np.ndarray:
    for n in names:
        if n in arrays:
            return np.asarray(arrays[n])
    raise BadFile(path, f"holds no {what} (looked for {' or '.join(names)}; found {', '.join(map(str, arrays)) or 'none'})")


def as_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """uint8 images as ``N x C x H x W``: from NCHW, NHWC (C 1 or 3 on the axis that leaves a square image) or NHW."""
    if images.dtype != np.uint8:
        raise BadFile(path, f"holds images of dtype {images.dtype}; uint8 pixels 0..255 expected")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        n, a, b, c = images.shape
        if a in (1, 3) and b == c:
            return images
        if c in (1, 3) and a == b:
            return images.transpose(0, 3, 1, 2)
    raise BadFile(path, f"holds images of shape {images.shape}; expected N x H x W x C or N x C x H x W (C 1 or 3, "
                        "square images) or N x H x W")


def read_tensor_file(path: Path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x C x H x W uint8, labels int64)`` of a tensor file; BadFile naming it for anything wrong
    (no images or labels, wrong dtype or shape, counts that differ, a label below 0 or at least ``num_classes``)."""
    arrays = read_arrays(path)
    images = as_nchw(_named(arrays, IMAGE_NAMES, path, "images"), path)
    labels = _named(arrays, LABEL_NAMES, path, "labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise BadFile(path, f"holds labels of dtype {labels.dtype} and shape {labels.shape}; 1-D integers expected")
    if len(labels) != len(images):
        raise BadFile(path, f"holds {len(images)} images but {len(labels)} labels")
    if not len(labels):
        raise BadFile(path, "holds no images")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= (num_classes if num_classes is not None else np.inf)))
    if len(bad):
        top = f"0..{num_classes - 1} (the training file's classes)" if num_classes is not None else "0 or above"
        raise BadFile(path, f"holds label {labels[bad[0]]} at position {bad[0]}; labels must be {top}")
    return np.ascontiguousarray(images), labels


@dataclass(frozen=True)
class TensorFileSource:
    """``data.root`` the training file, ``data.test_file`` the test file (or the test split carved)."""

    def wanted(self, part: str) -> str:
        return "a tensor file (.npz, .pt, .safetensors) with images and labels: data.root" + \
            (" (and data.test_file)" if part == "test" else "")

    def locate(self, folder: Path, part: str, options: OpenOptions | None = None) -> list[Path] | None:
        if part == "unlabeled" or not folder.is_file():
            return None
        if options is not None and options.test_file:  # the training part too: its test is not carved from it
            test = Path(options.test_file).expanduser()
            return [folder, test] if test.is_file() else None
        return [folder]

    def open(self, files: list[Path], part: str, options: OpenOptions | None = None) -> PartData:
        options = options or OpenOptions()
        images, labels = read_tensor_file(files[0])
        num_classes = int(labels.max()) + 1
        classes = tuple(str(c) for c in range(num_classes))
        record: dict[str, Any] = {"layout": "tensors", "file": str(files[0])}
        if len(files) > 1:
            record["test"] = str(files[1])
            if part == "test":
                channels = images.shape[1]
                images, labels = read_tensor_file(files[1], num_classes)
                if images.shape[1] != channels:
                    raise BadFile(files[1], f"holds images of {images.shape[1]} channels; the training file's have "
                                            f"{channels}")
        else:
            test = carve(labels, num_classes, options.test_fraction)
            record["test"] = {"carved_from": str(files[0]), "fraction": options.test_fraction, "size": len(test),
                              "sha256": digest([str(i) for i in test], Path("."))}
            keep = test if part == "test" else np.setdiff1d(np.arange(len(labels)), test)
            images, labels = images[keep], labels[keep]
            if not len(labels):
                raise DataError(f"{files[0]}: too few images to carve a test split (one class needs two images)")
        square = images.shape[2] == images.shape[3]
        return PartData(ArrayBackend(np.ascontiguousarray(images), str(files[-1] if part == "test" else files[0])),
                        labels, classes, int(images.shape[2]) if square else None, record)

    def published(self, part: str) -> tuple[str, ...]:
        return ()
