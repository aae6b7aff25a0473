"""Downloading dataset files from their published sources, with checksum verification."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """One published file: the URLs to try in order (mirrors) and its md5 checksum."""

    filename: str
    urls: tuple[str, ...]
    md5: str


def _idx(bases: tuple[str, ...], md5s: dict[str, str]) -> dict[str, Remote]:
    return {n: Remote(n, tuple(b + n for b in bases), h) for n, h in md5s.items()}


_FASHION = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
_CIFAR = "https://www.cs.toronto.edu/~kriz/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"

# dataset -> published file name -> Remote. The MNIST and Fashion-MNIST md5s are the ones torchvision
# lists (quoted from memory; a wrong one shows up as a checksum error naming both hashes).
REMOTES: dict[str, dict[str, Remote]] = {
    "fashion-mnist": _idx(_FASHION, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "mnist": _idx(_MNIST, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "cifar10": {"cifar-10-python.tar.gz": Remote(
        "cifar-10-python.tar.gz", (_CIFAR + "cifar-10-python.tar.gz",), "c58f30108f718f92721af3b95e74349a")},
    "cifar100": {"cifar-100-python.tar.gz": Remote(
        "cifar-100-python.tar.gz", (_CIFAR + "cifar-100-python.tar.gz",), "eb9058c3a382ffc7106e4002c42a8d85")},
    "svhn": {
        "train_32x32.mat": Remote("train_32x32.mat", (_SVHN + "train_32x32.mat",),
                                  "e26dedcc434d2e4c54c9b2d4a06d8373"),
        "test_32x32.mat": Remote("test_32x32.mat", (_SVHN + "test_32x32.mat",), "eb5a983be6a315427106f1b164d9cef3"),
    },
}


def md5sum(path: Path) -> str:
    """The hex md5 of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_one(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` into a temporary file next to ``dest``, check its md5, then rename it to ``dest``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise DataError(f"checksum mismatch for {dest.name} downloaded from {url}: expected md5 {md5}, "
                            f"got {h.hexdigest()}; the file was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(remote: Remote, folder: Path) -> Path:
    """Download ``remote`` into ``folder`` (created if needed), trying each mirror; return its path.

    The file is written to a temporary name and renamed only after its md5 matched, so an interrupted or
    corrupted download never leaves a file advlab would later read. A DataError names the file, each URL
    tried and what went wrong (for a checksum mismatch: the expected and the actual hash).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {folder} to download {remote.filename} into ({e.strerror or e})") from None
    dest = folder / remote.filename
    failures = []
    for url in remote.urls:
        print(f"advlab: downloading {url} -> {dest}", file=sys.stderr, flush=True)
        try:
            _fetch_one(url, dest, remote.md5)
            return dest
        except DataError as e:
            failures.append(str(e))
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{url}: {type(e).__name__}: {getattr(e, 'reason', None) or e}")
    raise DataError(f"could not download {remote.filename}:\n  " + "\n  ".join(failures)
                    + f"\nDownload it by hand and put it at {dest} (expected md5 {remote.md5}).")
