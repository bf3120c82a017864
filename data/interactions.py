"""Interaction logs: from parsed text blocks to canonical, validated Arrow tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cmml.data import records as R
from cmml.data.delimited import BlockRange, DelimitedFormat, ParsedBlock, read_block
from cmml.errors import DataFormatError

# Stable rejection kinds (the part of a reason before ':'); dead-letter counts are keyed by them.
EMPTY_USER = "empty user id"
EMPTY_ITEM = "empty item id"
NON_NUMERIC_LABEL = "non-numeric label"
LABEL_OUT_OF_RANGE = "label out of range"
BAD_TIMESTAMP = "bad timestamp"


@dataclasses.dataclass(frozen=True)
class InteractionSpec:
    """Where the canonical interaction fields live in one log file.

    ``label=None`` means implicit feedback: every row is a positive with label 1.0.
    """

    fmt: DelimitedFormat
    user: str
    item: str
    label: str | None
    timestamp: str | None = None
    scenario: str | None = None
    task_key: str | None = None
    label_range: tuple[float, float] | None = None


def _reasons_for(mask: np.ndarray, reasons: np.ndarray, text: str | np.ndarray) -> None:
    """Sets ``reasons[i]`` for rows in ``mask`` that have no reason yet (first problem wins)."""
    pick = mask & (reasons == None)  # noqa: E711 - elementwise on an object array
    if pick.any():
        reasons[pick] = text if isinstance(text, str) else text[pick]


def _strings(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.to_numpy(), dtype=object)


def convert_block(block: ParsedBlock, spec: InteractionSpec) -> tuple[pa.Table, list[R.RejectedRow], np.ndarray]:
    """Converts one parsed block into canonical interactions; bad rows become RejectedRows.

    Returns the table, the rejected rows and the file line of every row of the table.
    """
    t = block.table
    n = t.num_rows
    reasons = np.full(n, None, dtype=object)
    columns: dict[str, pa.Array] = {}

    for field, canonical, kind in ((spec.user, R.USER_ID, EMPTY_USER), (spec.item, R.ITEM_ID, EMPTY_ITEM)):
        values = pc.utf8_trim_whitespace(t[field])
        empty = np.asarray(pc.equal(pc.utf8_length(values), 0).to_numpy(), dtype=bool)
        _reasons_for(empty, reasons, f"{kind}: field '{field}' is empty")
        columns[canonical] = values

    if spec.label is None:
        label = np.ones(n, dtype=np.float32)
    else:
        label, bad = _to_float(t[spec.label])
        if bad.any():
            raw = _strings(t[spec.label])
            _reasons_for(
                bad,
                reasons,
                np.array([f"{NON_NUMERIC_LABEL}: field '{spec.label}' is {v!r}" for v in raw], dtype=object),
            )
        if spec.label_range is not None:
            lo, hi = spec.label_range
            out = ~bad & ((label < lo) | (label > hi))
            if out.any():
                texts = np.array(
                    [f"{LABEL_OUT_OF_RANGE}: field '{spec.label}' is {v:g}, not in [{lo:g}, {hi:g}]" for v in label],
                    dtype=object,
                )
                _reasons_for(out, reasons, texts)
        label = label.astype(np.float32)
    columns[R.LABEL] = pa.array(label, pa.float32())

    if spec.timestamp is not None:
        ts, bad = _to_int(t[spec.timestamp])
        if bad.any():
            raw = _strings(t[spec.timestamp])
            _reasons_for(
                bad,
                reasons,
                np.array(
                    [f"{BAD_TIMESTAMP}: field '{spec.timestamp}' is {v!r}, not an integer" for v in raw], dtype=object
                ),
            )
        columns[R.TIMESTAMP] = pa.array(ts, pa.int64())
    for field, canonical in ((spec.scenario, R.SCENARIO), (spec.task_key, R.TASK_KEY)):
        if field is not None:
            values = pc.utf8_trim_whitespace(t[field])
            # an empty scenario / task key means "unknown", not a bad row
            columns[canonical] = pc.if_else(pc.equal(pc.utf8_length(values), 0), pa.scalar(None, pa.string()), values)

    table = R.table_from_columns(R.INTERACTION_SCHEMA, columns) if n else R.INTERACTION_SCHEMA.empty_table()
    bad_rows = np.flatnonzero(reasons != None)  # noqa: E711
    rejects: list[R.RejectedRow] = []
    row_lines = block.row_lines()
    if len(bad_rows):
        lines = block.row_lines()[bad_rows]
        raw_lines = _raw_lines(block, bad_rows, spec.fmt)
        rejects = [R.RejectedRow(block.path, int(l), txt, reasons[i]) for i, l, txt in zip(bad_rows, lines, raw_lines)]
        keep = np.ones(n, dtype=bool)
        keep[bad_rows] = False
        table = table.filter(pa.array(keep))
        row_lines = row_lines[keep]
    return table, rejects, row_lines


def _raw_lines(block: ParsedBlock, rows: np.ndarray, fmt: DelimitedFormat) -> list[str]:
    cols = [_strings(block.table[name])[rows] for name in block.table.column_names]
    return [fmt.delimiter.join(str(c[k]) for c in cols) for k in range(len(rows))]


def _to_float(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Strings to float64; returns (values, bad mask). 'nan'/'inf' count as bad."""
    try:
        values = pc.cast(pc.utf8_trim_whitespace(col), pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        values = pd.to_numeric(pd.Series(_strings(col)).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    return np.where(bad, 0.0, values), bad


def _to_int(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    try:
        return pc.cast(pc.utf8_trim_whitespace(col), pa.int64()).to_numpy(), np.zeros(len(col), dtype=bool)
    except pa.ArrowInvalid:
        s = pd.Series(_strings(col)).str.strip()
        ok = s.str.fullmatch(r"[+-]?\d{1,18}").fillna(False).to_numpy(dtype=bool)
        values = np.zeros(len(s), dtype=np.int64)
        values[ok] = s[ok].astype(np.int64).to_numpy()
        return values, ~ok


@dataclasses.dataclass
class InteractionBatch:
    """Canonical rows of one block of a log file, plus the rows rejected in that block."""

    table: pa.Table
    rejects: list[R.RejectedRow]
    blank_lines: int
    path: str = ""
    lines: np.ndarray | None = None  # file line of every row of ``table``


def read_interaction_block(block: BlockRange, spec: InteractionSpec, on_error: str = "raise") -> InteractionBatch:
    """One block of a log file (:func:`cmml.data.delimited.block_ranges`) -> canonical rows.

    Args:
      on_error: 'raise' stops at the first bad row with a DataFormatError naming file, line and
        field; 'collect' keeps going and returns bad rows in ``InteractionBatch.rejects``.
    """
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error must be 'raise' or 'collect', not {on_error!r}")
    parsed = read_block(block, spec.fmt)
    table, rejects, lines = convert_block(parsed, spec)
    rejects = sorted(parsed.rejects + rejects, key=lambda r: r.line)
    if rejects and on_error == "raise":
        first = rejects[0]
        raise DataFormatError(first.path, first.reason, line=first.line)
    return InteractionBatch(table, rejects, parsed.blank_lines, parsed.path, lines)
