"""The reference figures file (``cmml experiment --targets FILE``): official-code figures, targets, check value.

The file is markdown: pipe tables of the paper authors' official code run on the users-v1 protocol
(a ``method`` column with ``MAE``) and of simple predictors (a ``predictor`` column), a quality
target sentence ("CMML MAE ≤ x and NDCG@3 ≥ y"), the protocol's check value (one meta-test user's
rating count, query movies and query ratings) and the kept user / rating counts. Without the file
the official-figures table and the protocol check are skipped, with a note saying so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# where a stored reference path is shown relative to: the figures in RESULTS.md do not depend on the working folder


def _markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table of a markdown text as a list of {header: cell} rows."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def read_targets(path: str | os.PathLike | None) -> dict[str, Any]:
    """Reference figures, targets and the users-v1 check value parsed from ``path`` ({} when absent)."""
    if not path or not Path(path).exists():
        return {}
    text = Path(path).read_text(encoding="utf-8")
    out: dict[str, Any] = {"path": str(path)}
    for rows in _markdown_tables(text):
        if rows and "method" in rows[0] and "MAE" in rows[0]:
            out["official"] = rows
        elif rows and "predictor" in rows[0]:
            out["simple"] = rows
    m = re.search(r"CMML MAE\s*≤\s*([\d.]+)\s+and\s+NDCG@3\s*≥\s*([\d.]+)", text)
    if m:
        out["targets"] = {"mae": float(m.group(1)), "ndcg@3": float(m.group(2))}
    m = re.search(
        r"Check value:\s*user\s+(\w+).*?has\s+(\d+)\s+ratings"
        r".*?query movies\s*\[([^\]]*)\].*?query ratings\s*\[([^\]]*)\]",
        text,
        re.S,
    )
    if m:
        out["check"] = {
            "user": m.group(1),
            "ratings": int(m.group(2)),
            "query_movies": [s.strip() for s in m.group(3).split(",")],
            "query_ratings": [float(s) for s in m.group(4).split(",")],
        }
    m = re.search(r"([\d,]+)\s+users,\s+([\d,]+)\s+ratings", text)
    if m:
        out["kept"] = {"users": int(m.group(1).replace(",", "")), "ratings": int(m.group(2).replace(",", ""))}
    return out


def shown_path(targets: dict[str, Any]) -> str:
    """The reference file as RESULTS.md names it: its file name (the file itself is given with ``--targets``
    and lives outside the repository; the results file's header says what it holds)."""
    return Path(str(targets.get("path"))).name if targets.get("path") else "the reference figures file"
