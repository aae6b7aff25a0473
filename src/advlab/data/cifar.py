"""CIFAR-10/100 python batches, read with an unpickler that can only rebuild numpy arrays."""
from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .files import BadFile

_core = getattr(np, "_core", None) or np.core  # numpy >= 2 moved numpy.core to numpy._core
_RECONSTRUCT = _core.multiarray._reconstruct
_FROMBUFFER = getattr(_core.numeric, "_frombuffer", None)

# (module, name) -> object: everything a CIFAR batch pickle may reference. Anything else is refused,
# so a crafted file cannot call os.system or any other callable.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how Python 3 writes bytes in protocol 2 pickles
}
if _FROMBUFFER is not None:  # arrays pickled with protocol 5
    ALLOWED[("numpy.core.numeric", "_frombuffer")] = _FROMBUFFER
    ALLOWED[("numpy._core.numeric", "_frombuffer")] = _FROMBUFFER


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}") from None


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x 3 x 32 x 32`` uint8 and labels ``N`` int64 from one CIFAR batch file."""
    try:
        with open(path, "rb") as f:
            batch = _RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise BadFile(path, f"cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise BadFile(path, f"is not a valid CIFAR batch pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise BadFile(path, f"holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise BadFile(path, f"has no {key!r} entry (keys: {', '.join(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BadFile(path, f"'data' should be an N x 3072 uint8 array, got a {desc}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BadFile(path, f"{label_key!r} is not a list of integers") from None
    if labels.ndim != 1 or len(labels) != len(data):
        raise BadFile(path, f"holds {len(data)} images but {labels.size} {label_key!r} entries")
    return data.reshape(-1, 3, 32, 32), labels


def read_batches(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The batches of ``paths`` concatenated in the given order."""
    parts = [read_batch(p, label_key) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
