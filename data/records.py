"""Canonical record layouts that every reader produces.

Every data source (MovieLens 100K/1M/20M, the ML-1M-partial layout, generic CSV logs, the
synthetic generator) is read into three Arrow tables with the schemas below. Later stages
(ExampleGen, TaskGen, the trainer) only ever see these names, so a new source only needs a reader.
``schemas/*.pbtxt`` holds the same layouts as TFMD schema protos for TFDV; a test keeps the two in
sync.

Ids are strings: logs in the wild use opaque ids, and tf.Transform builds vocabularies from strings.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable

import pyarrow as pa

# The 18 genres of MovieLens 1M (ML-100K adds "unknown" first; ML-20M adds a few more)
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# --- interactions: one row per (user, item) event -------------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
LABEL = "label"  # explicit rating, or 1.0 for an implicit interaction
TIMESTAMP = "timestamp"  # unix seconds; null when the source has none
SCENARIO = "scenario"  # scenario / theme the interaction belongs to; null when unknown
TASK_KEY = "task_key"  # explicit task key from the log (session, campaign ...); null otherwise

INTERACTION_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field(LABEL, pa.float32(), nullable=False),
        pa.field(TIMESTAMP, pa.int64()),
        pa.field(SCENARIO, pa.string()),
        pa.field(TASK_KEY, pa.string()),
    ]
)

# --- users: side features, one row per user --------------------------------------------------------
USER_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field("gender", pa.string()),
        pa.field("age", pa.int32()),
        pa.field("occupation", pa.string()),
        pa.field("zip", pa.string()),
    ]
)

# --- items: side features, one row per item --------------------------------------------------------
ITEM_LIST_FEATURES = ("genres", "directors", "writers", "actors", "tags")
ITEM_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("rated", pa.string()),
    ]
    + [pa.field(name, pa.list_(pa.string())) for name in ITEM_LIST_FEATURES]
)

USER_FEATURES = tuple(f.name for f in USER_SCHEMA if f.name != USER_ID)
ITEM_FEATURES = tuple(f.name for f in ITEM_SCHEMA if f.name != ITEM_ID)


def table_from_columns(schema: pa.Schema, columns: dict) -> pa.Table:
    """Builds a table with ``schema``; columns missing from ``columns`` become all-null."""
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = []
    for field in schema:
        value = columns.get(field.name)
        if isinstance(value, pa.ChunkedArray):
            arrays.append(value.combine_chunks().cast(field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value.cast(field.type))
        elif value is not None:
            arrays.append(pa.array(value, type=field.type))
        else:
            arrays.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclasses.dataclass(frozen=True)
class RejectedRow:
    """A row that could not be turned into a canonical record (kept for the dead-letter output)."""

    path: str
    line: int
    text: str
    reason: str

    def message(self) -> str:
        return f"{self.path} line {self.line}: {self.reason}"


@dataclasses.dataclass
class ReadStats:
    """Row accounting of one read: ``rows_in == rows_ok + rows_rejected`` always holds."""

    rows_ok: int = 0
    blank_lines: int = 0
    rejected_by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def rows_in(self) -> int:
        return self.rows_ok + self.rows_rejected

    def add_rejects(self, rejects: Iterable[RejectedRow]) -> None:
        for r in rejects:
            self.rejected_by_reason[reason_kind(r.reason)] += 1

    def merge(self, other: ReadStats) -> None:
        self.rows_ok += other.rows_ok
        self.blank_lines += other.blank_lines
        self.rejected_by_reason.update(other.rejected_by_reason)

    def summary(self) -> str:
        text = f"{self.rows_ok:,} rows read"
        if self.rows_rejected:
            kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.rejected_by_reason.items()))
            text += f", {self.rows_rejected:,} rejected ({kinds})"
        if self.blank_lines:
            text += f", {self.blank_lines:,} blank lines skipped"
        return text


def reason_kind(reason: str) -> str:
    """The stable kind of a rejection reason (the text before the first colon)."""
    return reason.split(":", 1)[0]
