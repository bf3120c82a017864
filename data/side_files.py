"""Parsing of small side-feature files (users, items): one canonical row per id, bad rows reported.

Shared by the dataset readers: the MovieLens layouts and generic CSV logs both read their user and
item files through :func:`side_table`.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Callable

import pyarrow as pa

from cmml.data import records as R
from cmml.data.delimited import DelimitedFormat, iter_blocks
from cmml.errors import DataFormatError

_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_MISSING = {"", "N/A", "NA", "null", "None", "(no genres listed)"}


def title_year(title: str) -> int | None:
    """'Toy Story (1995)' -> 1995; None when the title ends without a year."""
    m = _YEAR_IN_TITLE.search(title or "")
    return int(m.group(1)) if m else None


def split_list(value: str | None, sep: str) -> list[str]:
    """'Tom Hanks, Tim Allen' -> ['Tom Hanks', 'Tim Allen']; drops '(screenplay)'-style notes."""
    if value is None or value.strip() in _MISSING:
        return []
    out = []
    for part in value.split(sep):
        part = re.sub(r"\s*\([^)]*\)\s*$", "", part).strip()
        if part and part not in _MISSING and part not in out:
            out.append(part)
    return out


def clean_value(value: str | None) -> str | None:
    """The stripped value, or None for a missing one (empty, 'N/A', 'null' …)."""
    if value is None:
        return None
    value = value.strip()
    return None if value in _MISSING else value


def read_rows(path: Path, fmt: DelimitedFormat, on_error: str) -> tuple[list[tuple[int, dict]], list[R.RejectedRow]]:
    """Reads a small side-feature file into (line, {column: str}) rows."""
    rows, rejects = [], []
    for block in iter_blocks(path, fmt):
        lines = block.row_lines()
        cols = {name: block.table[name].to_pylist() for name in block.table.column_names}
        for k, line in enumerate(lines):
            rows.append((int(line), {name: values[k] for name, values in cols.items()}))
        rejects.extend(block.rejects)
    if rejects and on_error == "raise":
        raise DataFormatError(rejects[0].path, rejects[0].reason, line=rejects[0].line)
    return rows, rejects


def side_table(
    path: Path,
    fmt: DelimitedFormat,
    schema: pa.Schema,
    convert: Callable[[dict], dict],
    on_error: str,
) -> tuple[pa.Table, list[R.RejectedRow]]:
    """Reads a side-feature file; ``convert`` maps raw fields to canonical ones or raises ValueError."""
    rows, rejects = read_rows(path, fmt, on_error)
    out: dict[str, list] = collections.defaultdict(list)
    seen: dict[str, int] = {}
    key = schema.names[0]
    for line, raw in rows:
        try:
            rec = convert(raw)
            if not rec[key]:
                raise ValueError(f"empty id: field '{key}' is empty")
            if rec[key] in seen:
                raise ValueError(f"duplicate id: {rec[key]!r} already defined on line {seen[rec[key]]}")
        except ValueError as exc:
            reject = R.RejectedRow(str(path), line, fmt.delimiter.join(str(v) for v in raw.values()), str(exc))
            if on_error == "raise":
                raise DataFormatError(reject.path, reject.reason, line=line) from None
            rejects.append(reject)
            continue
        seen[rec[key]] = line
        for field in schema:
            value = rec.get(field.name)
            out[field.name].append([] if value is None and pa.types.is_list(field.type) else value)
    return R.table_from_columns(schema, out) if rows else schema.empty_table(), rejects


def int_field(raw: dict, field: str, name: str | None = None) -> int | None:
    """``raw[field]`` as an int (None when missing); ValueError names the field for the reject."""
    value = (raw.get(field) or "").strip()
    if value in _MISSING:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not an integer: field '{name or field}' is {value!r}") from None
