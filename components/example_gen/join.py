"""One block of canonical interactions + the side tables -> list-typed feature columns for the
tf.Example encoder, and the output split of every row (:class:`Partitioner`).

Joins are Arrow ``index_in`` / ``take`` on whole blocks, never per row in Python.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
from typing import List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components.example_gen.sources import Source
from cmml.data import records as R

DOMAIN = "domain"

# Item side features written to the examples (title is free text and is not a model input).
ITEM_FEATURES = tuple(f for f in R.ITEM_FEATURES if f != "title")
PARTITION_FEATURES = (R.USER_ID, R.ITEM_ID, R.SCENARIO, R.TASK_KEY, DOMAIN)


def _prefix(values: pa.Array | pa.ChunkedArray, name: str | None) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not name:
        return values
    return pc.binary_join_element_wise(pa.scalar(f"{name}:"), values, "")


@dataclasses.dataclass
class SideTables:
    """User and item side features of one source, keyed by (prefixed) id."""

    users: pa.Table
    items: pa.Table


def load_side_tables(source: Source) -> tuple[SideTables, list[R.RejectedRow], dict]:
    """Reads a source's side-feature files; bad rows are returned (dead letters), never raised."""
    ds = source.open()
    users, user_rejects = ds.read_users(on_error="collect")
    items, item_rejects = ds.read_items(on_error="collect")
    users = users.set_column(0, R.USER_ID, _prefix(users[R.USER_ID], source.name))
    items = items.set_column(0, R.ITEM_ID, _prefix(items[R.ITEM_ID], source.name))
    items = items.select([R.ITEM_ID, *ITEM_FEATURES])
    stats = {
        "users": {"rows": users.num_rows, "rejected": len(user_rejects)},
        "items": {"rows": items.num_rows, "rejected": len(item_rejects)},
    }
    return SideTables(users, items), user_rejects + item_rejects, stats


def _list_of_one(values: pa.Array) -> pa.ListArray:
    """Scalar column -> list column with one value per row; a null becomes a null list (missing)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string(values.type):
        values = values.cast(pa.binary())
    elif pa.types.is_integer(values.type):
        values = values.cast(pa.int64())
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(valid, out=offsets[1:])
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), values.drop_null(), mask=mask)


def _list_column(values: pa.Array) -> pa.ListArray:
    """list<string> column -> list<binary>; empty lists become null (the feature is missing)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    flat = pc.list_flatten(values).cast(pa.binary())
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    empty = lengths == 0
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(empty) if empty.any() else None)


def join_block(table: pa.Table, side: SideTables, domain: str | None) -> tuple[pa.RecordBatch, dict]:
    """Canonical interactions of one block + side tables -> list-typed columns for the encoder.

    Returns the record batch (one row per interaction, feature columns only; columns that are
    null in every row are left out) and join counters.
    """
    user_ids = _prefix(table[R.USER_ID], domain)
    item_ids = _prefix(table[R.ITEM_ID], domain)
    columns: dict[str, pa.Array] = {R.USER_ID: user_ids, R.ITEM_ID: item_ids, R.LABEL: table[R.LABEL]}
    for name in (R.TIMESTAMP, R.TASK_KEY):
        columns[name] = table[name]
    columns[R.SCENARIO] = _prefix(table[R.SCENARIO], domain) if domain else table[R.SCENARIO]
    if domain:
        columns[DOMAIN] = pa.array(np.full(table.num_rows, domain, dtype=object), pa.string())
    user_idx = pc.index_in(user_ids, value_set=side.users[R.USER_ID].combine_chunks())
    item_idx = pc.index_in(item_ids, value_set=side.items[R.ITEM_ID].combine_chunks())
    for name in R.USER_FEATURES:
        columns[name] = side.users[name].combine_chunks().take(user_idx)
    for name in ITEM_FEATURES:
        columns[name] = side.items[name].combine_chunks().take(item_idx)
    arrays, names = [], []
    for name, values in columns.items():
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if values.null_count == len(values):
            continue
        if pa.types.is_list(values.type):
            lst = _list_column(values)
            if lst.null_count == len(lst):
                continue
            arrays.append(lst)
        else:
            arrays.append(_list_of_one(values))
        names.append(name)
    counters = {
        "interactions_without_user_features": int(user_idx.null_count),
        "interactions_without_item_features": int(item_idx.null_count),
    }
    return pa.RecordBatch.from_arrays(arrays, names), counters


class Partitioner:
    """TFX ExampleGen's output split function, applied per block.

    Same buckets as ``tfx.components.example_gen.base_example_gen_executor._PartitionFn``:
    ``sha256(serialised partition feature) % total_buckets`` (or of the serialised example when no
    partition feature is configured), so a split here is the split stock ExampleGen would make.
    """

    def __init__(self, split_names: Sequence[str], hash_buckets: Sequence[int], feature: str | None):
        if feature is not None and feature not in PARTITION_FEATURES:
            raise ValueError(f"partition_feature_name must be one of {PARTITION_FEATURES}, got {feature!r}")
        self.split_names = list(split_names)
        self.cumulative = list(np.cumsum(hash_buckets)) if hash_buckets else []
        self.feature = feature

    @staticmethod
    def _feature_key(value: bytes) -> bytes:
        from tensorflow.core.example import feature_pb2

        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value])).SerializeToString(
            deterministic=True
        )

    def _bucket(self, key: bytes) -> int:
        return bisect.bisect(self.cumulative, int(hashlib.sha256(key).hexdigest(), 16) % self.cumulative[-1])

    def assign(self, batch: pa.RecordBatch, serialized: List[bytes]) -> np.ndarray:
        """Split index of every row of ``batch``."""
        n = batch.num_rows
        if not self.cumulative:
            return np.zeros(n, dtype=np.int64)
        if self.feature is None:
            return np.fromiter((self._bucket(s) for s in serialized), dtype=np.int64, count=n)
        if self.feature not in batch.schema.names:
            raise ValueError(f"partition feature {self.feature!r} is missing from the examples")
        column = batch.column(batch.schema.get_field_index(self.feature))
        if column.null_count:
            raise ValueError(f"partition feature {self.feature!r} has no value in {column.null_count} rows")
        encoded = pc.list_flatten(column).dictionary_encode()
        keys = encoded.dictionary.to_pylist()
        per_key = np.array([self._bucket(self._feature_key(k)) for k in keys], dtype=np.int64)
        return per_key[encoded.indices.to_numpy()]
