"""Interaction rows of one shard (:class:`ShardRows`) and their compact form for the shuffle (:class:`PackedRows`)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class ShardRows:
    """Interactions of one shard: hashes of task, user and item, and the label."""

    task: np.ndarray
    user: np.ndarray
    item: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.task)

    def take(self, idx: np.ndarray) -> ShardRows:
        return ShardRows(self.task[idx], self.user[idx], self.item[idx], self.label[idx])

    @staticmethod
    def concat(parts: Sequence[ShardRows]) -> ShardRows:
        parts = [p.unpack() if isinstance(p, PackedRows) else p for p in parts]
        return ShardRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("task", "user", "item", "label")))

    def pack(self) -> PackedRows:
        """Compact form for the shuffle (~6-9 bytes a row instead of 28); see PackedRows."""
        same_user = self.user is self.task
        order = np.argsort(self.task, kind="stable") if same_user else np.lexsort((self.user, self.task))
        task = self.task[order]
        starts, ends = segments(task)
        user_dict, user_codes = (None, None) if same_user else _dict_codes(self.user[order])
        item_dict, item_codes = _dict_codes(self.item[order])
        label_dict, label_codes = _dict_codes(self.label[order], max_dict=256)
        return PackedRows(
            task[starts],
            (ends - starts).astype(np.uint32),
            user_dict,
            user_codes,
            item_dict,
            item_codes,
            label_dict,
            label_codes,
        )


def _dict_codes(values: np.ndarray, max_dict: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(dictionary, smallest unsigned codes); (None, values) when the dictionary would not pay off."""
    uniq, codes = np.unique(values, return_inverse=True)
    if max_dict is not None and len(uniq) > max_dict:
        return None, values
    dtype = np.uint8 if len(uniq) <= 1 << 8 else np.uint16 if len(uniq) <= 1 << 16 else np.uint32
    if np.dtype(dtype).itemsize >= values.dtype.itemsize:
        return None, values
    return uniq, codes.astype(dtype)


@dataclasses.dataclass
class PackedRows:
    """ShardRows sorted by task, with the task run-length encoded and users, items and labels
    dictionary-encoded. Rows of a batch repeat tasks (a user has ~50 ratings), items and a few
    rating values, so this is what goes through the shuffle: the DirectRunner holds the whole
    shuffle in memory several times over."""

    task_runs: np.ndarray
    run_lengths: np.ndarray
    user_dict: np.ndarray | None  # None: the user is the task (user setting)
    user_codes: np.ndarray | None
    item_dict: np.ndarray | None
    item_codes: np.ndarray
    label_dict: np.ndarray | None
    label_codes: np.ndarray

    def __len__(self) -> int:
        return int(self.run_lengths.sum())

    def unpack(self) -> ShardRows:
        task = np.repeat(self.task_runs, self.run_lengths.astype(np.int64))
        user = (
            task
            if self.user_dict is None and self.user_codes is None
            else (self.user_codes if self.user_dict is None else self.user_dict[self.user_codes])
        )
        item = self.item_codes if self.item_dict is None else self.item_dict[self.item_codes]
        label = self.label_codes if self.label_dict is None else self.label_dict[self.label_codes]
        return ShardRows(task, user, item.astype(np.uint64), label.astype(np.float32))


def segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [len(sorted_keys)]]).astype(np.int64)
    return starts, ends
