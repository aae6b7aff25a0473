"""Downloading dataset files from their published sources, with checksum verification.

Which files a dataset publishes, where and with which md5, is in its record (:mod:`advlab.data.catalog`).
"""
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
