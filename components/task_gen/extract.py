"""Extract: one batch of interactions -> shard rows, key tables (users and items with their row counts),
task counts and quarantined rows.

Rows without a user id, an item id or a finite label are quarantined. Every other row goes to
shard ``hash(task key) % num_shards`` (all rows of a task meet in one shard); with derived themes
a row goes to every theme of its item (the item's features come from the transformed item table).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components import common
from cmml.components.task_gen.columns import DOMAIN, FeatureInfo
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.keys import to_binary
from cmml.components.task_gen.rows import ShardRows, segments
from cmml.components.task_gen.splits import NO_SCENARIO
from cmml.components.task_gen.tables import FeatureTable, offsets_from_lengths, ragged_take, with_features
from cmml.components.task_gen.themes import ThemeVocab, derive_themes
from cmml.data import records as R

MISSING_USER = "missing user id"
MISSING_ITEM = "missing item id"
BAD_LABEL = "non-finite label"


def _dictionary(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(per-row index, dictionary) of a string column (dictionary-encoded if it is not already)."""
    enc = values if isinstance(values, pa.DictionaryArray) else pc.dictionary_encode(values)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), to_binary(enc.dictionary)


def _encode_keys(values: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(per-row index into the dictionary, dictionary keys, stable uint64 hash of each key)."""
    idx, keys = _dictionary(values)
    return idx, keys, common.stable_hash64(keys)


def _nonempty(values: pa.Array) -> np.ndarray:
    if isinstance(values, pa.DictionaryArray):
        idx, keys = _dictionary(values)
        return _nonempty(keys)[idx]
    return np.asarray(
        pc.fill_null(pc.greater(pc.binary_length(values), 0), False).to_numpy(zero_copy_only=False), dtype=bool
    )


def _key_table(
    rows: np.ndarray, uniq_index: np.ndarray, uniq_keys: pa.Array, uniq_hash: np.ndarray, domains: pa.Array | None
) -> FeatureTable:
    """Distinct keys among ``rows`` with their row counts (and the domain of their first row); no features."""
    n_uniq = len(uniq_keys)
    first = np.full(n_uniq, -1, dtype=np.int64)
    # first occurrence of every unique among ``rows`` (rows are in batch order)
    idx = uniq_index[rows]
    order = np.argsort(idx, kind="stable")
    starts = np.flatnonzero(np.r_[True, idx[order][1:] != idx[order][:-1]]) if len(idx) else np.zeros(0, np.int64)
    present = idx[order][starts]
    first[present] = rows[order][starts]
    counts = np.bincount(idx, minlength=n_uniq).astype(np.int64)
    sel = np.flatnonzero(first >= 0)
    src = first[sel]
    return FeatureTable(
        uniq_hash[sel],
        to_binary(uniq_keys).take(pa.array(sel)),
        {},
        {},
        counts[sel],
        None if domains is None else domains.take(pa.array(src)),
    )


def _quarantine_records(cols: dict, rows: np.ndarray, reasons: np.ndarray) -> list[str]:
    users = cols[R.USER_ID].take(pa.array(rows)).to_pylist()
    items = cols[R.ITEM_ID].take(pa.array(rows)).to_pylist()
    labels = cols[R.LABEL][rows]
    return [
        json.dumps(
            {
                "reason": r,
                "user_id": u.decode("utf-8", "replace"),
                "item_id": i.decode("utf-8", "replace"),
                "label": None if not np.isfinite(y) else float(y),
            },
            sort_keys=True,
        )
        for r, u, i, y in zip(reasons, users, items, labels)
    ]


@dataclasses.dataclass(frozen=True)
class ExtractContext:
    config: TaskGenConfig
    features: tuple[FeatureInfo, ...]
    scenario_source: str | None  # 'column' | 'themes' (scenario setting) | None
    theme_vocab: ThemeVocab | None


def extract_batch(cols: dict, ctx: ExtractContext, item_table: FeatureTable | None = None) -> dict:
    """One column batch -> shard rows, key-table partials, counts and quarantined rows.

    ``item_table``: the transformed item table (deduplicated); derived themes need it.
    """
    config = ctx.config
    user_raw, item_raw = cols[R.USER_ID], cols[R.ITEM_ID]
    label = np.asarray(cols[R.LABEL], dtype=np.float32)
    n = len(label)
    reasons = np.full(n, None, dtype=object)
    for mask, reason in (
        (~_nonempty(user_raw), MISSING_USER),
        (~_nonempty(item_raw), MISSING_ITEM),
        (~np.isfinite(label), BAD_LABEL),
    ):
        reasons[mask & (reasons == None)] = reason  # noqa: E711
    bad = np.flatnonzero(reasons != None)  # noqa: E711
    good = np.flatnonzero(reasons == None)  # noqa: E711
    counters: dict = {"rows_in": n, "quarantined": {}, "filtered": {}}
    for r in set(reasons[bad]):
        counters["quarantined"][r] = int((reasons[bad] == r).sum())
    out: dict = {"counters": counters, "quarantine": _quarantine_records(cols, bad, reasons[bad]) if len(bad) else []}

    domains = None
    if DOMAIN in cols and _nonempty(cols[DOMAIN]).any():
        domains = to_binary(cols[DOMAIN])
    u_idx, u_keys, u_hash = _encode_keys(user_raw)
    i_idx, i_keys, i_hash = _encode_keys(item_raw)
    out["users"] = _key_table(good, u_idx, u_keys, u_hash, domains)
    out["items"] = _key_table(good, i_idx, i_keys, i_hash, domains)
    row_user = u_hash[u_idx[good]]
    row_item = i_hash[i_idx[good]]
    row_label = label[good]

    if config.setting == "user":  # task is the user: one array serves both (pickled once)
        task, user, item, y = row_user, row_user, row_item, row_label
    elif ctx.scenario_source == "column":
        scen = cols[R.SCENARIO].take(pa.array(good))
        has = _nonempty(scen)
        counters["filtered"][NO_SCENARIO] = int((~has).sum())
        keep = np.flatnonzero(has)
        s_idx, s_keys, s_hash = _encode_keys(scen.take(pa.array(keep)))
        task, user, item, y = s_hash[s_idx], row_user[keep], row_item[keep], row_label[keep]
        counts = np.bincount(s_idx, minlength=len(s_keys)).astype(np.int64)
        used = np.flatnonzero(counts)
        out["scenarios"] = FeatureTable(s_hash[used], s_keys.take(pa.array(used)), {}, {}, counts[used])
        out["pairs"] = unique_pairs(np.stack([task, item], axis=1))
    else:  # themes of the row's item; an interaction belongs to every theme of its item
        items = with_features(out["items"], item_table)
        pos, theme_keys = derive_themes(items, ctx.theme_vocab, config.themes)
        theme_hash = common.stable_hash64(theme_keys)
        order = np.argsort(pos, kind="stable")
        pos, theme_hash = pos[order], theme_hash[order]
        theme_off = offsets_from_lengths(np.bincount(pos, minlength=len(items)))
        item_of_row = _positions(items.hashes, row_item)
        task, lengths = ragged_take(theme_hash, theme_off, item_of_row)
        rep = np.repeat(np.arange(len(row_item)), lengths)
        user, item, y = row_user[rep], row_item[rep], row_label[rep]
    shard = (task % np.uint64(config.num_shards)).astype(np.int64)
    order = np.argsort(shard, kind="stable")
    starts, ends = segments(shard[order])
    out["shards"] = []
    for s, e in zip(starts, ends):
        t = task[order[s:e]]
        u = t if user is task else user[order[s:e]]
        out["shards"].append((int(shard[order[s]]), ShardRows(t, u, item[order[s:e]], y[order[s:e]]).pack()))
    return out


def _positions(table_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Positions of ``hashes`` in an unsorted array of distinct hashes."""
    order = np.argsort(table_hashes)
    return order[np.searchsorted(table_hashes[order], hashes)]


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct rows of a (k, 2) uint64 array."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    p = pairs[order]
    keep = np.r_[True, (p[1:] != p[:-1]).any(axis=1)]
    return p[keep]
