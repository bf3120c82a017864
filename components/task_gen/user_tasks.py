"""User-setting tasks (task = user): the users-v1 protocol order, trimming, support / query roles.

A user's ratings are sorted by item id (numerically when integers), then reordered by
``numpy.random.default_rng(seed).permutation(n)`` with seed = the integer user id (else its stable
hash); a meta-valid / meta-test user's last ``query_size`` rows in that order are its query set.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.keys import integer_values
from cmml.components.task_gen.records import TaskBlock
from cmml.components.task_gen.rows import ShardRows, segments
from cmml.components.task_gen.splits import META_TRAIN, REASONS, SPLIT_NAMES, TOO_FEW, TOO_MANY, TRIMMED, TaskPlan
from cmml.components.task_gen.tables import FeatureTable, item_rank_of, offsets_from_lengths
from cmml.schemas import tasks as T


def task_seeds(keys: pa.Array) -> list[int]:
    """Per-task rng seed: the integer id itself, else the stable_hash64 hash of the key."""
    ok, values = integer_values(keys)
    hashes = common.stable_hash64(keys)
    return [int(v) if o else int(h) for o, v, h in zip(ok, values, hashes)]


def protocol_permutation(n: int, seed: int) -> np.ndarray:
    """users-v1: the order in which a task's canonically sorted rows are read."""
    return np.random.default_rng(seed).permutation(n)


def build_user_tasks(
    rows: ShardRows, plan: TaskPlan, users: FeatureTable, items: FeatureTable, config: TaskGenConfig
) -> tuple[dict[str, TaskBlock], dict, list[tuple]]:
    """User-setting tasks of one shard.

    Returns ({split: TaskBlock}, counters, index) where index lists (key, split, rows, support, query,
    users, items) of every task.
    """
    counters: dict = {"rows_written": {}, "filtered": {}, "tasks": {}}
    decision = plan.decision[plan.lookup(rows.task)]
    for code in (TOO_FEW, TOO_MANY):
        counters["filtered"][REASONS[("user", code)]] = int((decision == code).sum())
    keep = np.flatnonzero(decision >= 0)
    rows, decision = rows.take(keep), decision[keep]
    user_row = users.lookup(rows.user, "user")
    item_row = items.lookup(rows.item, "item")
    # canonical order inside a task: items sorted by (is-not-integer, integer value, key)
    item_rank = item_rank_of(items)
    # label breaks ties between repeated (user, item) rows, so the order never depends on arrival order
    order = np.lexsort((rows.label, item_rank[item_row], user_row))
    user_row, item_row, label, decision = user_row[order], item_row[order], rows.label[order], decision[order]
    starts, ends = segments(user_row)
    task_users = user_row[starts]
    seeds = task_seeds(users.keys.take(pa.array(task_users)))
    # protocol order + trimming + roles, one small numpy call per task
    perm_parts, role_parts, lengths = [], [], []
    trimmed = 0
    for t, (s, e) in enumerate(zip(starts, ends)):
        n = int(e - s)
        perm = protocol_permutation(n, seeds[t])
        if config.trim_to is not None and n > config.trim_to:
            trimmed += n - config.trim_to
            perm = perm[: config.trim_to]
        k = len(perm)
        role = np.full(k, T.ROLE_POOL, dtype=np.int8)
        if decision[s] != META_TRAIN:
            role[: k - config.query_size] = T.ROLE_SUPPORT
            role[k - config.query_size :] = T.ROLE_QUERY
        perm_parts.append(perm + s)
        role_parts.append(role)
        lengths.append(k)
    counters["filtered"][TRIMMED] = trimmed
    if not len(starts):
        return {}, counters, []
    flat = np.concatenate(perm_parts)
    roles = np.concatenate(role_parts)
    lengths = np.asarray(lengths, dtype=np.int64)
    task_split = decision[starts]
    row_split = np.repeat(task_split, lengths)
    blocks, index = {}, []
    key_list = users.keys.take(pa.array(task_users)).to_pylist()
    for code, name in enumerate(SPLIT_NAMES):
        tsel = np.flatnonzero(task_split == code)
        if not len(tsel):
            continue
        rsel = np.flatnonzero(row_split == code)
        sel_rows = flat[rsel]
        lens = lengths[tsel]
        off = offsets_from_lengths(lens)
        row_local = np.arange(len(sel_rows), dtype=np.int64) - np.repeat(off[:-1], lens)
        blocks[name] = TaskBlock(
            keys=[key_list[t] for t in tsel],
            split=name,
            row_off=off,
            row_user=np.zeros(len(sel_rows), dtype=np.int64),
            row_item=row_local,
            label=label[sel_rows],
            role=roles[rsel],
            user_off=np.arange(len(tsel) + 1, dtype=np.int64),
            user_rows=task_users[tsel],
            item_off=off,
            item_rows=item_row[sel_rows],
        )
        counters["rows_written"][name] = int(len(sel_rows))
        counters["tasks"][name] = int(len(tsel))
        n_query = np.zeros(len(tsel), dtype=np.int64) if code == META_TRAIN else np.full(len(tsel), config.query_size)
        for t, q in zip(tsel, n_query):
            index.append(
                (
                    key_list[t].decode("utf-8", errors="replace"),
                    name,
                    int(lengths[t]),
                    int(lengths[t] - q),
                    int(q),
                    1,
                    int(lengths[t]),
                )
            )
    return blocks, counters, index
