"""Per-task TFRecords written by TaskGen: names, roles and the ONE parsing function.

The format is documented in ``task_records.md`` next to this file. Each record is a tf.Example
holding one task (a user, or a scenario) in normalised form: the task's rows reference a small
per-task user table and item table by local index, so a scenario's candidate items and users are
stored once, and user tasks need no repeated user features. Trainer and Evaluator both parse
records with :func:`parse_task_records`; the tf.data episode builders
(``cmml.models.episodes``) turn the parsed tasks into the tensors of ``episodes.md``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from cmml.schemas.episodes import FeatureSpec

FORMAT_VERSION = 1

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
LENGTHS_SUFFIX = "/lengths"

# Row roles.
ROLE_POOL = 0  # meta-train: drawn into support / query afresh every epoch
ROLE_SUPPORT = 1  # fixed support row (meta-test, meta-valid)
ROLE_QUERY = 2  # fixed query row (user setting) / held-out positive of an evaluation user (scenario)

SETTINGS = ("user", "scenario")
SPLITS = ("meta_train", "meta_valid", "meta_test")
RECORD_PATTERN = "tasks-*.tfrecord*"


def table_key(side: str, name: str) -> str:
    """('item', 'genres') -> 'item/genres'."""
    return f"{side}/{name}"


def lengths_key(side: str, name: str) -> str:
    return f"{side}/{name}{LENGTHS_SUFFIX}"


def split_dir(root: str, split: str) -> str:
    """Folder of one split's records: ``<root>/Split-<split>``, the layout of a TFX Examples
    artifact, so TaskGen's output feeds the stock Trainer (``TrainArgs(splits=['meta_train'])``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return f"{str(root).rstrip('/')}/Split-{split}"


def split_pattern(root: str, split: str) -> str:
    """File pattern of one split's records under TaskGen's output folder."""
    return f"{split_dir(root, split)}/{RECORD_PATTERN}"


def task_feature_description(feature_specs: Sequence[FeatureSpec]) -> dict:
    """``tf.io.parse_example`` description of a task record for the given features."""
    import tensorflow as tf

    desc = {
        TASK_KEY: tf.io.FixedLenFeature([], tf.string),
        SETTING: tf.io.FixedLenFeature([], tf.string),
        SPLIT: tf.io.FixedLenFeature([], tf.string),
        ROW_USER: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        ROW_ITEM: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        ROW_LABEL: tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64),
        ROW_ROLE: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        USER_RAW_ID: tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64),
        ITEM_RAW_ID: tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64),
    }
    for spec in feature_specs:
        key = table_key(spec.side, spec.name)
        if spec.kind == "multi":
            desc[key] = tf.io.RaggedFeature(
                tf.int64,
                value_key=key,
                partitions=[tf.io.RaggedFeature.RowLengths(lengths_key(spec.side, spec.name))],
                row_splits_dtype=tf.int64,
            )
        else:
            desc[key] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
    return desc


def parse_task_records(serialized, feature_specs: Sequence[FeatureSpec]) -> dict:
    """Parses a batch of serialised task records.

    Args:
      serialized: string tensor ``[B]``.
      feature_specs: the features to read (``feature_specs.json`` of the same TaskGen output).
    Returns:
      ``task_key``, ``setting``, ``split``: string ``[B]``;
      ``row_user``, ``row_item``, ``role``: int64 ragged ``[B, (n)]``; ``label``: float32 ``[B, (n)]``;
      ``user_raw_id`` ``[B, (u)]``, ``item_raw_id`` ``[B, (m)]``: string ragged;
      ``user/<f>`` / ``item/<f>``: int64 ragged ``[B, (u)]`` / ``[B, (m)]`` for categorical
      features, ``[B, (u), (L)]`` / ``[B, (m), (L)]`` for multi features.
    """
    import tensorflow as tf

    return tf.io.parse_example(serialized, task_feature_description(feature_specs))


def check_record_features(names: Iterable[str], feature_specs: Sequence[FeatureSpec]) -> list[str]:
    """Record keys the given features need that are missing from ``names`` (for error messages)."""
    have = set(names)
    need = {TASK_KEY, SETTING, SPLIT, ROW_USER, ROW_ITEM, ROW_LABEL, ROW_ROLE, USER_RAW_ID, ITEM_RAW_ID}
    for spec in feature_specs:
        need.add(table_key(spec.side, spec.name))
        if spec.kind == "multi":
            need.add(lengths_key(spec.side, spec.name))
    return sorted(need - have)
