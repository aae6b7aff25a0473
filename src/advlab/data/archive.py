"""Extracting a downloaded .tar.gz without letting any member escape the target folder."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from ..errors import DataError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_members(tar: tarfile.TarFile, archive: Path, target: Path) -> list[tarfile.TarInfo]:
    """The members of ``tar``; a DataError for any member that would land or point outside ``target``.

    Refused: absolute names, names that resolve outside ``target`` (``..``), symbolic and hard links whose
    destination resolves outside ``target``, and anything that is not a file, folder or such a link.
    """
    target = target.resolve()
    members = tar.getmembers()
    for m in members:
        where = (target / m.name).resolve()
        problem = None
        if os.path.isabs(m.name) or m.name.startswith(("/", "\\")):
            problem = "has an absolute path"
        elif not _inside(where, target):
            problem = "would be written outside the target folder"
        elif m.issym() and not _inside((where.parent / m.linkname).resolve(), target):
            problem = f"is a symbolic link to {m.linkname!r}, outside the target folder"
        elif m.islnk() and not _inside((target / m.linkname).resolve(), target):
            problem = f"is a hard link to {m.linkname!r}, outside the target folder"
        elif not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            problem = "is a device, fifo or other special file"
        if problem:
            raise DataError(f"refusing to extract {archive}: member {m.name!r} {problem} ({target}). "
                            "The archive is not the published one; delete it and download it again.")
    return members


def safe_extract(archive: Path, target: Path, expect: str) -> Path:
    """Extract ``archive`` into ``target`` and return ``target/expect``, the folder it must create.

    Every member is checked first (see :func:`check_members`); extraction goes to a temporary folder inside
    ``target`` that is renamed into place only when complete, so a failure leaves no partial folder.
    """
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = check_members(tar, archive, tmp)
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"cannot extract {archive}: truncated or corrupted archive "
                            f"({type(e).__name__}: {e}); delete it and download it again") from None
        if not (tmp / expect).is_dir():
            raise DataError(f"{archive} does not contain the folder {expect}/; it is not the expected archive")
        final = target / expect
        if not final.exists():
            os.replace(tmp / expect, final)
        else:  # an incomplete folder is there: complete it, replacing same-named files with the archive's
            for item in (tmp / expect).rglob("*"):
                if item.is_file():
                    dest = final / item.relative_to(tmp / expect)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(item, dest)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
