"""Side tables: features of distinct users, items or scenarios (:class:`FeatureTable`) and their merge.

Identity of users, items and tasks inside the pipeline is the stable 64-bit hash of their raw
string key (``cmml.components.common.stable_hash64``): rows travel as numeric columns, and the
side tables map hashes back to keys and features. Two different keys with the same hash are
detected when the tables are merged and stop the run (never silently merged).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components.task_gen.keys import canonical_order, to_binary
from cmml.schemas import tasks as T


def ragged_take(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a ragged array (values, offsets) -> (values, lengths)."""
    idx = np.asarray(idx, dtype=np.int64)
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return values[:0], lengths
    out_starts = np.cumsum(lengths) - lengths
    gather = np.repeat(starts - out_starts, lengths) + np.arange(total, dtype=np.int64)
    return values[gather], lengths


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


@dataclasses.dataclass
class FeatureTable:
    """Features of distinct users or items, keyed by the hash of their raw id.

    ``counts`` is the number of (valid) interaction rows seen for each key. After
    :meth:`dedup`, rows are unique and sorted by hash, so :meth:`lookup` is a binary search.
    """

    hashes: np.ndarray  # uint64
    keys: pa.Array  # large_binary raw ids
    categorical: dict[str, np.ndarray]
    multi: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (values, offsets)
    counts: np.ndarray  # int64
    domains: pa.Array | None = None  # large_binary domain per key (multi-domain data), else None
    catalog: np.ndarray | None = None  # int64 catalog row per key (1..n, 0 = not in it), set by with_features

    def __len__(self) -> int:
        return len(self.hashes)

    def take(self, idx: np.ndarray) -> FeatureTable:
        idx = np.asarray(idx, dtype=np.int64)
        multi = {}
        for name, (values, offsets) in self.multi.items():
            v, lengths = ragged_take(values, offsets, idx)
            multi[name] = (v, offsets_from_lengths(lengths))
        return FeatureTable(
            self.hashes[idx],
            self.keys.take(pa.array(idx)),
            {k: v[idx] for k, v in self.categorical.items()},
            multi,
            self.counts[idx],
            None if self.domains is None else self.domains.take(pa.array(idx)),
            None if self.catalog is None else self.catalog[idx],
        )

    @staticmethod
    def concat(tables: Sequence[FeatureTable]) -> FeatureTable:
        tables = [t for t in tables if t is not None]
        if len(tables) == 1:
            return tables[0]
        first = tables[0]
        multi = {}
        for name in first.multi:
            values = np.concatenate([t.multi[name][0] for t in tables])
            lengths = np.concatenate([np.diff(t.multi[name][1]) for t in tables])
            multi[name] = (values, offsets_from_lengths(lengths))
        domains = None if first.domains is None else pa.concat_arrays([t.domains for t in tables])
        return FeatureTable(
            np.concatenate([t.hashes for t in tables]),
            pa.concat_arrays([t.keys for t in tables]),
            {k: np.concatenate([t.categorical[k] for t in tables]) for k in first.categorical},
            multi,
            np.concatenate([t.counts for t in tables]),
            domains,
        )

    def dedup(self, what: str = "key") -> FeatureTable:
        """Unique keys sorted by hash; first occurrence's features; counts summed."""
        order = np.argsort(self.hashes, kind="stable")
        h = self.hashes[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        keep = order[first]
        if not first.all():  # duplicates: same hash must mean same key
            dup = np.flatnonzero(~first)
            a = self.keys.take(pa.array(order[dup]))
            b = self.keys.take(pa.array(order[dup - 1]))
            clash = np.flatnonzero(~np.asarray(pc.equal(a, b).to_numpy(zero_copy_only=False), dtype=bool))
            if len(clash):
                raise ValueError(
                    f"{what} hash collision: {a[int(clash[0])].as_py()!r} and {b[int(clash[0])].as_py()!r} have the "
                    "same 64-bit hash; rename one of them"
                )
        group = np.cumsum(first) - 1
        counts = np.bincount(group, weights=self.counts[order], minlength=int(first.sum())).astype(np.int64)
        out = self.take(keep)
        out.counts = counts
        return out

    def lookup(self, hashes: np.ndarray, what: str = "key") -> np.ndarray:
        """Row of every hash (the table must be deduplicated); raises if one is absent."""
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, max(len(self.hashes) - 1, 0))
        if len(hashes) and (len(self.hashes) == 0 or not np.array_equal(self.hashes[pos], hashes)):
            raise ValueError(f"internal error: {what} seen in the rows but missing from the merged table")
        return pos

    def max_lengths(self) -> dict[str, int]:
        return {name: int(np.diff(offsets).max(initial=0)) for name, (_, offsets) in self.multi.items()}


class FeatureTableCombine(beam.CombineFn):
    """Merges per-batch FeatureTables into one deduplicated table (compacts as it goes to bound memory)."""

    def __init__(self, what: str, compact_rows: int = 200_000):
        super().__init__()
        self.what = what
        self.compact_rows = compact_rows

    def create_accumulator(self):
        return []

    def _compact(self, acc):
        if len(acc) > 1 and sum(len(t) for t in acc) > self.compact_rows:
            return [FeatureTable.concat(acc).dedup(self.what)]
        return acc

    def add_input(self, acc, table):
        acc.append(table)
        return self._compact(acc)

    def merge_accumulators(self, accs):
        return self._compact([t for acc in accs for t in acc])

    def extract_output(self, acc):
        if not acc:
            return None
        return FeatureTable.concat(acc).dedup(self.what)


def with_features(table: FeatureTable, entities: FeatureTable) -> FeatureTable:
    """``table``'s keys, counts and domains with their features and catalog rows from ``entities``
    (deduplicated, e.g. the transformed user or item table, written as the catalog); a key absent
    from ``entities`` gets no values (0 / empty) and catalog row 0."""
    n = len(table)
    if len(entities):
        pos = np.minimum(np.searchsorted(entities.hashes, table.hashes), len(entities) - 1)
        found = entities.hashes[pos] == table.hashes
    else:
        pos, found = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    rank = np.empty(len(entities), dtype=np.int64)
    rank[T.catalog_order(entities.keys.to_numpy(zero_copy_only=False))] = np.arange(1, len(entities) + 1)
    catalog = np.where(found, rank[pos] if len(entities) else 0, 0).astype(np.int64)
    categorical = {
        k: np.where(found, v[pos] if len(v) else 0, 0).astype(np.int64) for k, v in entities.categorical.items()
    }
    multi = {}
    for name, (values, offsets) in entities.multi.items():
        flat, found_lengths = ragged_take(values, offsets, pos[found])
        lengths = np.zeros(n, dtype=np.int64)
        lengths[found] = found_lengths
        multi[name] = (flat, offsets_from_lengths(lengths))
    return FeatureTable(table.hashes, table.keys, categorical, multi, table.counts, table.domains, catalog)


def entity_table(columns: Sequence[dict], key: str, features: Sequence[str]) -> FeatureTable:
    """Column batches of a transformed user or item table -> a deduplicated FeatureTable (counts 0)."""
    from cmml.components import common

    parts = []
    for cols in columns:
        keys = cols[key]
        keys = to_binary(keys.dictionary_decode() if isinstance(keys, pa.DictionaryArray) else keys)
        categorical, multi = {}, {}
        for name in features:
            value = cols[name]
            if isinstance(value, tuple):
                multi[name] = (value[0].astype(np.int64), value[1].astype(np.int64))
            else:
                categorical[name] = np.asarray(value, dtype=np.int64)
        parts.append(FeatureTable(common.stable_hash64(keys), keys, categorical, multi, np.zeros(len(keys), np.int64)))
    if not parts:
        return FeatureTable(np.zeros(0, np.uint64), pa.array([], pa.large_binary()), {}, {}, np.zeros(0, np.int64))
    return FeatureTable.concat(parts).dedup(key)


def item_rank_of(items: FeatureTable) -> np.ndarray:
    """Rank of every item of the table in canonical key order (cached on the table)."""
    cached = getattr(items, "_rank", None)
    if cached is None or len(cached) != len(items):
        rank = np.empty(len(items), dtype=np.int64)
        rank[canonical_order(items.keys)] = np.arange(len(items), dtype=np.int64)
        items._rank = cached = rank
    return cached
