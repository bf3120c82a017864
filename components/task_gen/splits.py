"""Which tasks are kept and where they go: size filters, split rules, decision codes, the task plan.

A task's decision is its split code (``META_TRAIN`` / ``META_VALID`` / ``META_TEST``, the index in
``SPLIT_NAMES``) or a negative ``TOO_*`` code when its size is out of bounds. The split rules give
the same answer on every run and runner (stable hashes, seeded permutations; see
:class:`~cmml.components.task_gen.config.TaskGenConfig`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.keys import canonical_order, key_strings, to_binary
from cmml.schemas import tasks as T

META_TRAIN, META_VALID, META_TEST = 0, 1, 2
SPLIT_NAMES = T.SPLITS  # index = decision code
TOO_FEW, TOO_MANY = -1, -2
REASONS = {
    ("user", TOO_FEW): "user_too_few_ratings",
    ("user", TOO_MANY): "user_too_many_ratings",
    ("scenario", TOO_FEW): "scenario_too_few_items",
    ("scenario", TOO_MANY): "scenario_too_many_items",
}
TRIMMED = "user_trimmed"
NO_SCENARIO = "no_scenario"
OUT_OF_BOUNDS = "scenario_out_of_bounds"  # themes: every theme of the item is out of the item-count bounds


def assign_splits(keys: pa.Array, config: TaskGenConfig) -> np.ndarray:
    """Decision code (META_TRAIN / META_VALID / META_TEST) of every kept task key."""
    n = len(keys)
    out = np.full(n, META_TRAIN, dtype=np.int8)
    if n == 0:
        return out
    if config.split_mode == "hash":
        out[common.unit_interval(common.stable_hash64(keys, config.salt)) < config.test_fraction] = META_TEST
    elif config.split_mode == "list":
        wanted = config.meta_test_keys() or set()
        out[np.isin(np.asarray(key_strings(keys), dtype=object), np.asarray(sorted(wanted), dtype=object))] = META_TEST
    else:
        order = canonical_order(keys)
        perm = np.random.default_rng(config.permutation_seed).permutation(n)
        n_train = config.n_train if config.n_train is not None else int(round((1.0 - config.test_fraction) * n))
        if n_train > n:
            raise ValueError(f"n_train={n_train} but only {n} tasks are kept")
        ranked = order[perm]  # the permuted sorted keys, as positions into ``keys``
        out[ranked[n_train:]] = META_TEST
    if config.valid_fraction > 0:
        u = common.unit_interval(common.stable_hash64(keys, config.salt + "/valid"))
        out[(out == META_TRAIN) & (u < config.valid_fraction)] = META_VALID
    return out


@dataclasses.dataclass
class TaskPlan:
    """Per task (sorted by hash): key, rows, distinct items, decision (split code, or a TOO_* code)."""

    hashes: np.ndarray
    keys: pa.Array
    n_rows: np.ndarray
    n_items: np.ndarray
    decision: np.ndarray  # int8
    row_stats: dict  # row-level accounting decided here (themes)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, max(len(self.hashes) - 1, 0))
        if len(hashes) and (len(self.hashes) == 0 or not np.array_equal(self.hashes[pos], hashes)):
            raise ValueError("internal error: a task seen in the rows is missing from the plan")
        return pos

    def summary(self, setting: str) -> dict:
        out = {"tasks_seen": int(len(self.hashes))}
        for code, name in enumerate(SPLIT_NAMES):
            out[f"tasks_{name}"] = int((self.decision == code).sum())
        for (s, code), reason in REASONS.items():
            if s == setting:
                out[f"tasks_{reason}"] = int((self.decision == code).sum())
        return out


def make_plan(
    hashes: np.ndarray,
    keys: pa.Array,
    n_rows: np.ndarray,
    n_items: np.ndarray,
    config: TaskGenConfig,
    row_stats: dict | None = None,
) -> TaskPlan:
    """Filters tasks by size and assigns the kept ones to meta-train / meta-valid / meta-test."""
    order = np.argsort(hashes, kind="stable")
    hashes, n_rows, n_items = hashes[order], n_rows[order], n_items[order]
    keys = to_binary(keys).take(pa.array(order))
    size = n_rows if config.setting == "user" else n_items
    lo, hi = (
        (config.min_ratings, config.max_ratings) if config.setting == "user" else (config.min_items, config.max_items)
    )
    decision = np.full(len(hashes), META_TRAIN, dtype=np.int8)
    decision[size < lo] = TOO_FEW
    decision[size > hi] = TOO_MANY
    kept = np.flatnonzero(decision == META_TRAIN)
    decision[kept] = assign_splits(keys.take(pa.array(kept)), config)
    return TaskPlan(hashes, keys, n_rows.astype(np.int64), n_items.astype(np.int64), decision, row_stats or {})
