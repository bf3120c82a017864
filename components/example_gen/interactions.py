"""One block of canonical interactions -> the interaction tf.Examples' columns (ids, label, time,
scenario, task key, domain; no side features), the unknown-id rule, and the output split of every
row (:class:`Partitioner`). Work is on whole Arrow blocks, never per row in Python.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components.example_gen.columns import example_batch, prefixed
from cmml.components.example_gen.entities import (
    QUARANTINE,
    UNKNOWN_ITEM,
    UNKNOWN_USER,
    SideTables,
    unknown_ids,
)
from cmml.data import records as R

DOMAIN = "domain"
PARTITION_FEATURES = (R.USER_ID, R.ITEM_ID, R.SCENARIO, R.TASK_KEY, DOMAIN)


def interaction_columns(table: pa.Table, domain: str | None) -> dict[str, pa.Array]:
    """Canonical interactions of one block -> the example columns (ids and scenario prefixed by the domain)."""
    columns: dict[str, pa.Array] = {
        R.USER_ID: prefixed(table[R.USER_ID], domain),
        R.ITEM_ID: prefixed(table[R.ITEM_ID], domain),
        R.LABEL: table[R.LABEL],
        R.TIMESTAMP: table[R.TIMESTAMP],
        R.TASK_KEY: table[R.TASK_KEY],
        R.SCENARIO: prefixed(table[R.SCENARIO], domain) if domain else table[R.SCENARIO],
    }
    if domain:
        columns[DOMAIN] = pa.array(np.full(table.num_rows, domain, dtype=object), pa.string())
    return columns


def unknown_entity_reasons(columns: dict[str, pa.Array], side: SideTables, rule: str) -> np.ndarray:
    """Per row: why the unknown-id rule quarantines it (None: kept)."""
    n = len(columns[R.USER_ID])
    reasons = np.full(n, None, dtype=object)
    if rule != QUARANTINE:
        return reasons
    for key, table, kind, what in (
        (R.USER_ID, side.users, UNKNOWN_USER, "users"),
        (R.ITEM_ID, side.items, UNKNOWN_ITEM, "items"),
    ):
        mask = unknown_ids(columns[key], table, key) & (reasons == None)  # noqa: E711
        if mask.any():
            ids = np.asarray(columns[key].to_numpy(zero_copy_only=False), dtype=object)
            reasons[mask] = [f"{kind}: {i!r} has no row in the {what} side table" for i in ids[mask]]
    return reasons


def interaction_batch(columns: dict[str, pa.Array], keep: np.ndarray | None = None) -> pa.RecordBatch:
    """Example columns (rows ``keep`` only) -> the encoder's record batch."""
    if keep is not None and not keep.all():
        mask = pa.array(keep)
        columns = {k: v.filter(mask) for k, v in columns.items()}
    return example_batch(columns)


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
