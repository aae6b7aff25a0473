"""Where dataset files are looked for, in order."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ADVLAB_DATA"
# Folders that distribution packages install datasets into, tried after the user's folders.
SYSTEM_FOLDERS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


def cache_dir() -> Path:
    """``~/.cache/advlab``: the last base folder searched, and where ``download=True`` writes without a root."""
    return Path.home() / ".cache" / "advlab"


def base_folders(root: str | os.PathLike | None) -> list[Path]:
    """The base folders in search order: ``root`` (when given), ``$ADVLAB_DATA`` (when set), the cache."""
    bases = [] if root is None else [Path(root).expanduser()]
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    return bases + [cache_dir()]


def search_folders(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Every folder searched for ``name``'s files, in order, without duplicates.

    For each base folder: first ``<base>/<name>/``, then ``<base>/`` itself; then the system folders of
    :data:`SYSTEM_FOLDERS` (Debian's ``dataset-fashion-mnist`` package for Fashion-MNIST).
    """
    folders: list[Path] = []
    for base in base_folders(root):
        folders += [base / name, base]
    folders += SYSTEM_FOLDERS.get(name, ())
    unique: list[Path] = []
    for f in folders:
        if f not in unique:
            unique.append(f)
    return unique
