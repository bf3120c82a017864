"""The model base path layout TF Serving reads: ``<model_base_path>/<version>/saved_model.pb``.

``--model_base_path`` points at the folder of ONE model (``<base>/<model_name>``); each numeric
sub-folder is a version and, with the default version policy, the largest number is served.
New versions must appear atomically: :func:`install_version` copies into a hidden sibling and
renames it into place, so a server polling the folder never sees a half-written version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model_dir(path: str | os.PathLike) -> bool:
    return any((Path(path) / f).is_file() for f in SAVED_MODEL_FILES)


def list_versions(model_base_path: str | os.PathLike) -> dict[int, Path]:
    """Numeric version folders that hold a SavedModel, by version number (TF Serving parses the
    folder name as an integer, so ``0007`` is version 7)."""
    base = Path(model_base_path)
    out: dict[int, Path] = {}
    if not base.is_dir():
        return out
    for child in base.iterdir():
        if child.name.isdigit() and child.is_dir() and is_saved_model_dir(child):
            out.setdefault(int(child.name), child)
    return out


def latest_version(model_base_path: str | os.PathLike) -> int | None:
    versions = list_versions(model_base_path)
    return max(versions) if versions else None


def install_version(
    saved_model_dir: str | os.PathLike, model_base_path: str | os.PathLike, version: int | None = None
) -> Path:
    """Copies a SavedModel into ``model_base_path/<version>`` atomically; ``version`` defaults to
    the latest one + 1 (1 for an empty base path). Returns the version folder."""
    src = Path(saved_model_dir)
    if not is_saved_model_dir(src):
        raise FileNotFoundError(f"{src} is not a SavedModel folder (no saved_model.pb)")
    base = Path(model_base_path)
    base.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = (latest_version(base) or 0) + 1
    if version < 0:
        raise ValueError(f"version must be >= 0, not {version}")
    target = base / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists: versions are immutable, push a new number")
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=base))
    try:
        shutil.copytree(src, staging, dirs_exist_ok=True)
        os.rename(staging, target)  # atomic on one file system
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
