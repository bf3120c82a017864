"""The results files (``docs/results/<suite>.json``) and the provenance every record carries."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_json(path: Path) -> dict | None:
    """A results file, or None when there is none."""
    if path.exists():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return None


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Writes a results file atomically (an interrupted run never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=json_default)
        f.write("\n")
    os.replace(tmp, path)


def json_default(value):
    """numpy scalars as numbers, tuples and sets as lists, anything else as its string."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def git_commit() -> str:
    """The checkout's short commit, marked when the working tree has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> float | None:
    """1-minute load average: the runs share 2 cores with whatever else the machine does."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return None
