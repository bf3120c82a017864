"""Downloading the official MovieLens archives from GroupLens, with checksum verification.

MovieLens data may not be redistributed, so the project never ships it: users fetch it from
GroupLens with ``cmml data fetch NAME --dest DIR``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from cmml.errors import CmmlError, NetworkUnavailableError


@dataclasses.dataclass(frozen=True)
class Archive:
    name: str
    url: str
    md5: str  # published by GroupLens next to each archive (<url>.md5)
    sha256: str
    folder: str  # top-level folder inside the zip


ARCHIVES = {
    a.name: a
    for a in (
        Archive(
            "ml-100k",
            "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            "0e33842e24a9c977be4e0107933c0723",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            "ml-100k",
        ),
        Archive(
            "ml-1m",
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            "c4d9eecfca2ab87c1945afe126590906",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            "ml-1m",
        ),
        Archive(
            "ml-20m",
            "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
            "cd245b17a1ae2cc31bb14903e1204af3",
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            "ml-20m",
        ),
    )
}


def fetch(name: str, dest: str | Path, timeout: float = 20.0, progress=sys.stderr) -> Path:
    """Downloads, verifies and unpacks a MovieLens archive. Returns the dataset directory.

    Raises:
      CmmlError: unknown name, or checksum mismatch (the download is discarded).
      NetworkUnavailableError: GroupLens cannot be reached (no network, DNS failure, timeout).
    """
    if name not in ARCHIVES:
        raise CmmlError(f"unknown archive {name!r}: choose one of {', '.join(sorted(ARCHIVES))}")
    archive = ARCHIVES[name]
    dest = Path(dest)
    target = dest / archive.folder
    if target.is_dir() and any(target.iterdir()):
        print(f"{target} already exists; not downloading again", file=progress)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        zip_path = Path(tmp) / f"{name}.zip"
        _download(archive, zip_path, timeout, progress)
        md5, sha256 = _digests(zip_path)
        if md5 != archive.md5 or sha256 != archive.sha256:
            raise CmmlError(
                f"{archive.url}: checksum mismatch (md5 {md5}, expected {archive.md5}); the download was discarded"
            )
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        shutil.move(str(Path(tmp) / archive.folder), str(target))
    print(f"{name}: verified (md5 {archive.md5}) and unpacked into {target}", file=progress)
    return target


def _download(archive: Archive, path: Path, timeout: float, progress) -> None:
    try:
        with urllib.request.urlopen(archive.url, timeout=timeout) as response, open(path, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, step = 0, 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and done * 10 // total > step:
                    step = done * 10 // total
                    print(f"  {archive.name}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB", file=progress)
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkUnavailableError(
            f"cannot download {archive.url} ({reason}); without network, download the archive elsewhere, "
            f"unpack it and pass its folder with --data"
        ) from None


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()
