"""The user and item tables ("entities"): one row per user and per item with its side features and
the number of interactions ingested for it, written beside the interactions as the ``entities``
artifact (splits ``users`` and ``items``).

The side features are analysed and transformed once per entity (not once per rating), and an item
that has side features but no interaction (a cold item) keeps its row with ``interactions = 0``.
An interaction naming a user or item missing from a source's side table is handled by the
configured rule: ``keep`` (default) adds that id to the table without features; ``quarantine``
sends the interaction to the dead letters (counted by kind, never dropped silently). A source
without a side file for users (or items) keeps every id: there is nothing to check against.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components.example_gen.columns import combined, example_batch, prefixed
from cmml.components.example_gen.sources import Source
from cmml.data import records as R

USERS, ITEMS = "users", "items"
ENTITY_SPLITS = (USERS, ITEMS)
INTERACTIONS = "interactions"  # interactions ingested for the user / item (0: it has features only)
KEEP, QUARANTINE = "keep", "quarantine"
UNKNOWN_ENTITY_RULES = (KEEP, QUARANTINE)
UNKNOWN_USER = "unknown user"  # rejection kinds of the quarantine rule
UNKNOWN_ITEM = "unknown item"

# Item side features written to the examples (title is free text and is not a model input).
ITEM_FEATURES = tuple(f for f in R.ITEM_FEATURES if f != "title")
ID_OF = {USERS: R.USER_ID, ITEMS: R.ITEM_ID}
FEATURES_OF = {USERS: R.USER_FEATURES, ITEMS: ITEM_FEATURES}


@dataclasses.dataclass
class SideTables:
    """User and item side features of one source, keyed by (prefixed) id."""

    users: pa.Table
    items: pa.Table

    def table(self, side: str) -> pa.Table:
        return self.users if side == USERS else self.items


def load_side_tables(source: Source) -> tuple[SideTables, list[R.RejectedRow], dict]:
    """Reads a source's side-feature files; bad rows (a repeated id among them: the readers keep its
    first row) are returned (dead letters), never raised."""
    ds = source.open()
    tables, rejects, stats = {}, [], {}
    for side, (table, bad) in ((USERS, ds.read_users(on_error="collect")), (ITEMS, ds.read_items(on_error="collect"))):
        key = ID_OF[side]
        table = table.set_column(0, key, prefixed(table[key], source.name))
        tables[side] = table.select([key, *FEATURES_OF[side]])
        rejects += bad
        stats[side] = {"rows": table.num_rows, "rejected": len(bad)}
    return SideTables(tables[USERS], tables[ITEMS]), rejects, stats


def count_ids(ids: pa.Array) -> pa.Table:
    """Distinct ids of a column and how often each occurs (``id``, ``count``)."""
    counts = pc.value_counts(combined(ids))
    return pa.table({"id": counts.field(0), "count": counts.field(1).cast(pa.int64())})


def merge_counts(tables: list[pa.Table]) -> pa.Table:
    """Sum of several ``count_ids`` tables (one row per id)."""
    if len(tables) == 1:
        return tables[0]
    merged = pa.concat_tables(tables).group_by("id").aggregate([("count", "sum")])
    return pa.table({"id": merged["id"], "count": merged["count_sum"]})


def unknown_ids(ids: pa.Array, side_table: pa.Table, key: str) -> np.ndarray:
    """Mask of ``ids`` absent from a non-empty side table (all False when the source has no table)."""
    if side_table.num_rows == 0:
        return np.zeros(len(ids), dtype=bool)
    known = pc.is_in(combined(ids), value_set=combined(side_table[key]))
    return ~np.asarray(known.to_numpy(zero_copy_only=False), dtype=bool)


def entity_table(side_table: pa.Table, counts: pa.Table | None, side: str) -> tuple[pa.Table, dict]:
    """A source's side table + the interaction counts of its ids -> the entity table and its counts.

    Ids with interactions but no side-table row are added without features (their interactions
    were kept); rows without interactions stay with ``interactions = 0``.
    """
    key = ID_OF[side]
    counts = (
        counts if counts is not None else pa.table({"id": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
    )
    ids = combined(side_table[key])
    missing = ~np.asarray(pc.is_in(combined(counts["id"]), value_set=ids).to_numpy(zero_copy_only=False), dtype=bool)
    extra = counts.filter(pa.array(missing))
    columns = {key: pa.concat_arrays([ids, combined(extra["id"]).cast(ids.type)])}
    for name in FEATURES_OF[side]:
        values = combined(side_table[name])
        columns[name] = pa.concat_arrays([values, pa.nulls(extra.num_rows, values.type)])
    position = pc.index_in(columns[key], value_set=combined(counts["id"]))
    interactions = pc.fill_null(pc.take(combined(counts["count"]), position), 0)
    columns[INTERACTIONS] = interactions
    stats = {
        "rows": len(columns[key]),
        "from_side_table": side_table.num_rows,
        "unknown_kept": extra.num_rows,
        "without_interactions": int(pc.sum(pc.equal(interactions, 0)).as_py() or 0),
    }
    return pa.table(columns), stats


def entity_examples(table: pa.Table) -> pa.RecordBatch:
    """An entity table -> the record batch tfx_bsl encodes (one tf.Example per user or item)."""
    return example_batch({name: table[name] for name in table.column_names})
