"""The IDX format of MNIST and Fashion-MNIST (``*-idx3-ubyte`` images, ``*-idx1-ubyte`` labels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import BadFile, read_bytes

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _parse(path: Path, magic: int) -> np.ndarray:
    data = read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BadFile(path, f"is truncated: {len(data)} bytes, shorter than the {header}-byte IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise BadFile(path, f"has the wrong magic number 0x{found:08x} (expected 0x{magic:08x}); "
                            "not an IDX file of this kind")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "too long"
        raise BadFile(path, f"is {state}: header says {'x'.join(map(str, dims))} values "
                            f"({expected} bytes), file holds {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N x 1 x H x W`` uint8 and labels ``N`` int64 from a pair of IDX files (gzipped or not)."""
    images = _parse(images_path, IMAGES_MAGIC)
    labels = _parse(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise BadFile(images_path, f"holds {len(images)} images but {labels_path.name} holds "
                                   f"{len(labels)} labels")
    return images[:, None], labels.astype(np.int64)
