"""Low-level file reading shared by the format readers, and the internal error they raise."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


class BadFile(Exception):
    """A dataset file exists but cannot be used; :func:`advlab.data.load` turns it into a DataError."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, gunzipped when it starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadFile(path, f"cannot be read ({e.strerror or e})") from None
    if not raw.startswith(GZIP_MAGIC):
        if path.suffix == ".gz":
            raise BadFile(path, "is named .gz but is not gzip-compressed")
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise BadFile(path, f"is a truncated or corrupted gzip file ({type(e).__name__}: {e})") from None
