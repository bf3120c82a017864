"""Scenario-setting tasks (task = scenario, implicit feedback): evaluation users, support positives, negatives.

A meta-train scenario keeps all its interactions. A meta-valid / meta-test scenario gets fixed
episodes: seeded evaluation users whose interactions are the query set, ``eval_support_positives``
support positives among the other interactions, each stored next to one sampled negative.
"""

from __future__ import annotations

import numpy as np

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.records import TaskBlock
from cmml.components.task_gen.rows import ShardRows, segments
from cmml.components.task_gen.splits import REASONS, SPLIT_NAMES, TOO_FEW, TOO_MANY, TaskPlan
from cmml.components.task_gen.tables import FeatureTable, item_rank_of, offsets_from_lengths
from cmml.schemas import tasks as T


def sample_negatives(rng: np.random.Generator, users_of_pos: np.ndarray, m: int, pos_keys: np.ndarray) -> np.ndarray:
    """One candidate per positive, drawn uniformly among the items its user did not interact with.

    ``pos_keys`` are the sorted, distinct ``user * m + item`` codes of the scenario's interactions.
    Exact (no rejection): with a user's items p_0 < p_1 < ..., the r-th free item is
    ``r + #{j : p_j - j <= r}``. A user who interacted with every candidate gets a random one.
    """
    first = np.searchsorted(pos_keys, (pos_keys // m) * m, side="left")
    adjusted = pos_keys - (np.arange(len(pos_keys)) - first)
    lo = np.searchsorted(pos_keys, users_of_pos * m, side="left")
    hi = np.searchsorted(pos_keys, (users_of_pos + 1) * m, side="left")
    free = m - (hi - lo)
    r = np.floor(rng.random(len(users_of_pos)) * np.maximum(free, 1)).astype(np.int64)
    chosen = r + np.searchsorted(adjusted, users_of_pos * m + r, side="right") - lo
    return np.where(free > 0, chosen, rng.integers(0, m, len(users_of_pos)))


def build_scenario_tasks(
    rows: ShardRows, plan: TaskPlan, users: FeatureTable, items: FeatureTable, config: TaskGenConfig
) -> tuple[dict[str, TaskBlock], dict, list[tuple]]:
    """Scenario-setting tasks of one shard (implicit feedback). Same return value as build_user_tasks."""
    counters: dict = {
        "rows_written": {},
        "filtered": {},
        "tasks": {},
        "negatives_written": {},
        "memberships_written": 0,
    }
    decision = plan.decision[plan.lookup(rows.task)]
    for code in (TOO_FEW, TOO_MANY):
        counters["filtered"][REASONS[("scenario", code)]] = int((decision == code).sum())
    keep = np.flatnonzero(decision >= 0)
    rows, decision = rows.take(keep), decision[keep]
    counters["memberships_written"] = int(len(rows))
    user_row = users.lookup(rows.user, "user")
    item_row = items.lookup(rows.item, "item")
    item_rank = item_rank_of(items)
    order = np.lexsort((rows.label, item_rank[item_row], user_row, rows.task))
    task, user_row, item_row, decision = rows.task[order], user_row[order], item_row[order], decision[order]
    starts, ends = segments(task)
    plan_pos = plan.lookup(task[starts]) if len(starts) else np.zeros(0, np.int64)
    parts: dict[str, list] = {name: [] for name in SPLIT_NAMES}
    index = []
    for t, (s, e) in enumerate(zip(starts, ends)):
        key = plan.keys[int(plan_pos[t])].as_py()
        split = SPLIT_NAMES[int(decision[s])]
        u_rows, i_rows = user_row[s:e], item_row[s:e]
        uniq_items, item_local = np.unique(i_rows, return_inverse=True)
        canon = np.argsort(item_rank[uniq_items], kind="stable")  # candidates in canonical item order
        cand = uniq_items[canon]
        remap = np.empty(len(canon), dtype=np.int64)
        remap[canon] = np.arange(len(canon), dtype=np.int64)
        item_local = remap[item_local]
        task_users, user_local = np.unique(u_rows, return_inverse=True)
        n, m = len(u_rows), len(cand)
        label = np.ones(n, dtype=np.float32)
        role = np.full(n, T.ROLE_POOL, dtype=np.int8)
        neg_user = np.zeros(0, np.int64)
        neg_item = np.zeros(0, np.int64)
        n_support = n_query = 0
        if split != "meta_train":
            rng = np.random.default_rng([config.seed, int(common.stable_hash64([key])[0])])
            pos_keys = np.unique(user_local.astype(np.int64) * m + item_local)
            per_user = np.bincount(user_local, minlength=len(task_users))
            # evaluation users: in seeded order, with enough positives, leaving enough support rows
            cand_users = rng.permutation(len(task_users))
            eligible = per_user[cand_users] >= config.min_eval_positives
            held = np.cumsum(np.where(eligible, per_user[cand_users], 0))
            # keep at least min(eval_support_positives, n // 2) interactions for the support pool
            allowed = eligible & (n - held >= min(config.eval_support_positives, n // 2))
            eval_users = cand_users[allowed][: config.eval_users_per_scenario]
            is_eval = np.zeros(len(task_users), dtype=bool)
            is_eval[eval_users] = True
            role[is_eval[user_local]] = T.ROLE_QUERY
            pool = np.flatnonzero(~is_eval[user_local])
            support = np.sort(rng.choice(pool, size=min(config.eval_support_positives, len(pool)), replace=False))
            role[support] = T.ROLE_SUPPORT
            neg_user = user_local[support].astype(np.int64)
            neg_item = sample_negatives(rng, neg_user, m, pos_keys)
            n_support, n_query = 2 * len(support), int(is_eval[user_local].sum())
        # stored row order: support rows interleaved with their negatives, then the others
        if len(neg_user):
            support_rows = np.flatnonzero(role == T.ROLE_SUPPORT)
            other = np.flatnonzero(role != T.ROLE_SUPPORT)
            r_user = np.concatenate([np.stack([user_local[support_rows], neg_user], 1).reshape(-1), user_local[other]])
            r_item = np.concatenate([np.stack([item_local[support_rows], neg_item], 1).reshape(-1), item_local[other]])
            r_label = np.concatenate([np.tile(np.array([1.0, 0.0], np.float32), len(support_rows)), label[other]])
            r_role = np.concatenate([np.full(2 * len(support_rows), T.ROLE_SUPPORT, np.int8), role[other]])
        else:
            r_user, r_item, r_label, r_role = user_local, item_local, label, role
        parts[split].append((key, r_user, r_item, r_label, r_role, task_users, cand))
        counters["rows_written"][split] = counters["rows_written"].get(split, 0) + n
        counters["negatives_written"][split] = counters["negatives_written"].get(split, 0) + len(neg_user)
        counters["tasks"][split] = counters["tasks"].get(split, 0) + 1
        index.append((key.decode("utf-8", errors="replace"), split, n, n_support, n_query, len(task_users), m))
    blocks = {}
    for split, items_ in parts.items():
        if not items_:
            continue
        r_len = np.array([len(p[1]) for p in items_], dtype=np.int64)
        u_len = np.array([len(p[5]) for p in items_], dtype=np.int64)
        i_len = np.array([len(p[6]) for p in items_], dtype=np.int64)
        blocks[split] = TaskBlock(
            keys=[p[0] for p in items_],
            split=split,
            row_off=offsets_from_lengths(r_len),
            row_user=np.concatenate([p[1] for p in items_]),
            row_item=np.concatenate([p[2] for p in items_]),
            label=np.concatenate([p[3] for p in items_]),
            role=np.concatenate([p[4] for p in items_]),
            user_off=offsets_from_lengths(u_len),
            user_rows=np.concatenate([p[5] for p in items_]),
            item_off=offsets_from_lengths(i_len),
            item_rows=np.concatenate([p[6] for p in items_]),
        )
    return blocks, counters, index
