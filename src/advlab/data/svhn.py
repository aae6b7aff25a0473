"""SVHN cropped digits: MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import BadFile


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x 3 x 32 x 32`` uint8 and labels ``N`` int64 (digit 0, stored as 10, becomes 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise BadFile(path, "cannot be read (no such file)") from None
    except Exception as e:  # noqa: BLE001 - scipy raises many types (ValueError, MatReadError, ...)
        raise BadFile(path, f"is not a readable MATLAB file ({type(e).__name__}: {e})") from None
    for key in ("X", "y"):
        if key not in mat:
            raise BadFile(path, f"has no {key!r} variable")
    x, y = mat["X"], mat["y"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise BadFile(path, f"'X' should be a 32 x 32 x 3 x N uint8 array, got {getattr(x, 'dtype', '?')} "
                            f"{getattr(x, 'shape', '?')}")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3] or not np.issubdtype(y.dtype, np.number):
        raise BadFile(path, f"holds {x.shape[3]} images but 'y' has {getattr(y, 'size', '?')} labels")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise BadFile(path, f"'y' should hold labels 1..10, found {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels
