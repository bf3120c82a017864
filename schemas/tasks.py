"""Per-task TFRecords written by TaskGen: names, roles and the ONE parsing function.

The format is documented in ``task_records.md`` next to this file. Each record is a tf.Example
holding one task (a user, or a scenario) by ids only: the task's rows reference a small per-task
user table and item table by local index, and those tables hold raw ids and rows of the
**catalog** — the transformed user and item tables TaskGen writes once beside the records. No
attribute is stored per task: the tf.data episode builders (``cmml.models.episodes``) gather the
attributes from the catalog in-graph. Trainer and Evaluator both parse records with
:func:`parse_task_records` and read the catalog with :func:`read_catalog`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FORMAT_VERSION = 2

# task-level scalars
TASK_KEY = "task_key"
SETTING = "setting"  # b"user" | b"scenario"
SPLIT = "split"  # b"meta_train" | b"meta_valid" | b"meta_test"
# row lists (length n = rows of the task)
ROW_USER = "row_user"  # local index into the task's user table
ROW_ITEM = "row_item"  # local index into the task's item table
ROW_LABEL = "label"  # rating (user setting) / 1 for an interaction, 0 for a stored negative (scenario)
ROW_ROLE = "role"
# table lists
USER_RAW_ID = "user_raw_id"
ITEM_RAW_ID = "item_raw_id"
USER_INDEX = "user_index"  # catalog row of each task user: 1..n, 0 = not in the catalog (no attributes)
ITEM_INDEX = "item_index"  # catalog row of each task item

# Row roles.
ROLE_POOL = 0  # meta-train: drawn into support / query afresh every epoch
ROLE_SUPPORT = 1  # fixed support row (meta-test, meta-valid)
ROLE_QUERY = 2  # fixed query row (user setting) / held-out positive of an evaluation user (scenario)

SETTINGS = ("user", "scenario")
SPLITS = ("meta_train", "meta_valid", "meta_test")
RECORD_PATTERN = "tasks-*.tfrecord*"


def split_dir(root: str, split: str) -> str:
    """Folder of one split's records: ``<root>/Split-<split>``, the layout of a TFX Examples
    artifact, so TaskGen's output feeds the stock Trainer (``TrainArgs(splits=['meta_train'])``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return f"{str(root).rstrip('/')}/Split-{split}"


def split_pattern(root: str, split: str) -> str:
    """File pattern of one split's records under TaskGen's output folder."""
    return f"{split_dir(root, split)}/{RECORD_PATTERN}"


TASK_FEATURES = (TASK_KEY, SETTING, SPLIT, ROW_USER, ROW_ITEM, ROW_LABEL, ROW_ROLE)
TABLE_FEATURES = (USER_RAW_ID, ITEM_RAW_ID, USER_INDEX, ITEM_INDEX)


def task_feature_description() -> dict:
    """``tf.io.parse_example`` description of a task record."""
    import tensorflow as tf

    desc = {k: tf.io.FixedLenFeature([], tf.string) for k in (TASK_KEY, SETTING, SPLIT)}
    for key, dtype in (
        (ROW_USER, tf.int64),
        (ROW_ITEM, tf.int64),
        (ROW_LABEL, tf.float32),
        (ROW_ROLE, tf.int64),
        (USER_RAW_ID, tf.string),
        (ITEM_RAW_ID, tf.string),
        (USER_INDEX, tf.int64),
        (ITEM_INDEX, tf.int64),
    ):
        desc[key] = tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)
    return desc


def parse_task_records(serialized) -> dict:
    """Parses a batch of serialised task records.

    Args:
      serialized: string tensor ``[B]``.
    Returns:
      ``task_key``, ``setting``, ``split``: string ``[B]``;
      ``row_user``, ``row_item``, ``role``: int64 ragged ``[B, (n)]``; ``label``: float32 ``[B, (n)]``;
      ``user_raw_id`` ``[B, (u)]``, ``item_raw_id`` ``[B, (m)]``: string ragged;
      ``user_index`` ``[B, (u)]``, ``item_index`` ``[B, (m)]``: int64 ragged catalog rows.
    """
    import tensorflow as tf

    return tf.io.parse_example(serialized, task_feature_description())


# --- the catalog: transformed user and item tables beside the records ------------------------------------
CATALOG_DIR = "catalog"  # <TaskGen output>/catalog/{users,items}.npz
CATALOG_KEYS = "keys"  # raw ids (bytes), one per row


def catalog_path(root: str, side: str) -> str:
    """``<root>/catalog/users.npz`` or ``items.npz``: every user or item of the transformed tables."""
    if side not in ("user", "item"):
        raise ValueError(f"side must be 'user' or 'item', not {side!r}")
    return f"{str(root).rstrip('/')}/{CATALOG_DIR}/{side}s.npz"


def catalog_order(keys) -> np.ndarray:
    """Positions of ``keys`` (raw ids, bytes) in catalog order: sorted by raw id, so a file does not
    depend on how the table was built. Record row ``r`` of the catalog is ``keys[catalog_order(keys)][r - 1]``
    (row 0 is "not in the catalog")."""
    import numpy as np

    return np.argsort(np.asarray(keys, dtype=object), kind="stable")


def write_catalog(path: str, keys, categorical: dict, multi: dict) -> None:
    """One transformed table as npz, rows in the order given (callers sort with :func:`catalog_order`):
    ``keys`` (raw ids), ``<f>`` [n] int64 for a categorical feature, ``<f>`` [n, L] int64 (0-padded)
    for a multi-valued one, given as (values, offsets)."""
    import os

    import numpy as np

    arrays = {CATALOG_KEYS: np.asarray(keys, dtype=bytes)}
    for name, values in categorical.items():
        arrays[name] = np.asarray(values, dtype=np.int64)
    for name, (values, offsets) in multi.items():
        lengths = np.diff(offsets)
        padded = np.zeros((len(lengths), int(lengths.max(initial=0))), dtype=np.int64)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        padded[rows, np.arange(len(values)) - np.repeat(offsets[:-1], lengths)] = values
        arrays[name] = padded
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(path + ".tmp", path)


def read_catalog(path: str) -> tuple:
    """(raw ids, {feature: [n] or [n, L] int64}) of a table written by :func:`write_catalog`."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        features = {k: data[k] for k in data.files if k != CATALOG_KEYS}
        return data[CATALOG_KEYS], features
