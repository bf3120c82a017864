"""Task records: a block of tasks in flat form (:class:`TaskBlock`), its tf.Example encoding and the files.

One tf.Example per task (format: ``schemas/task_records.md``), encoded from Arrow arrays by
tfx_bsl's C++ encoder; each shard writes one TFRecord file per split. ``tasks.tsv`` lists every
written task with its sizes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.tables import FeatureTable
from cmml.schemas import tasks as T

RECORD_CHUNK_ROWS = 100_000  # rows encoded at a time when writing a shard's records
INDEX_FILE = "tasks.tsv"


def _list_array(values: np.ndarray | pa.Array, offsets: np.ndarray) -> pa.LargeListArray:
    values = values if isinstance(values, pa.Array) else pa.array(values)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def _one_per_row(values: Sequence[bytes]) -> pa.LargeListArray:
    return _list_array(pa.array(list(values), pa.large_binary()), np.arange(len(values) + 1, dtype=np.int64))


def _catalog_rows(table: FeatureTable, side: str) -> np.ndarray:
    if table.catalog is None:
        raise ValueError(f"internal error: the merged {side} table has no catalog rows (with_features not applied)")
    return table.catalog.astype(np.int64)


@dataclasses.dataclass
class TaskBlock:
    """Tasks of one (shard, split) in flat form, ready to be encoded as one record per task.

    Row arrays are concatenated over tasks (``row_off`` delimits them); ``user_rows`` /
    ``item_rows`` are rows of the merged user / item FeatureTables forming each task's local
    tables (``user_off`` / ``item_off``); ``row_user`` / ``row_item`` index into those.
    """

    keys: list[bytes]
    split: str
    row_off: np.ndarray
    row_user: np.ndarray
    row_item: np.ndarray
    label: np.ndarray
    role: np.ndarray
    user_off: np.ndarray
    user_rows: np.ndarray
    item_off: np.ndarray
    item_rows: np.ndarray

    def chunks(self, max_rows: int) -> Iterable[TaskBlock]:
        """Consecutive groups of whole tasks with about ``max_rows`` rows each (bounds encoding memory)."""
        n = len(self.keys)
        start = 0
        while start < n:
            stop = int(np.searchsorted(self.row_off, self.row_off[start] + max_rows, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            r0, r1 = self.row_off[start], self.row_off[stop]
            u0, u1 = self.user_off[start], self.user_off[stop]
            i0, i1 = self.item_off[start], self.item_off[stop]
            yield TaskBlock(
                self.keys[start:stop],
                self.split,
                self.row_off[start : stop + 1] - r0,
                self.row_user[r0:r1],
                self.row_item[r0:r1],
                self.label[r0:r1],
                self.role[r0:r1],
                self.user_off[start : stop + 1] - u0,
                self.user_rows[u0:u1],
                self.item_off[start : stop + 1] - i0,
                self.item_rows[i0:i1],
            )
            start = stop

    def record_batch(self, setting: str, users: FeatureTable, items: FeatureTable) -> pa.RecordBatch:
        """The block's tasks as columns of the record format (ids and catalog rows, no attributes)."""
        n = len(self.keys)
        cols = {
            T.TASK_KEY: _one_per_row(self.keys),
            T.SETTING: _one_per_row([setting.encode()] * n),
            T.SPLIT: _one_per_row([self.split.encode()] * n),
            T.ROW_USER: _list_array(self.row_user.astype(np.int64), self.row_off),
            T.ROW_ITEM: _list_array(self.row_item.astype(np.int64), self.row_off),
            T.ROW_LABEL: _list_array(self.label.astype(np.float32), self.row_off),
            T.ROW_ROLE: _list_array(self.role.astype(np.int64), self.row_off),
            T.USER_RAW_ID: _list_array(users.keys.take(pa.array(self.user_rows)), self.user_off),
            T.ITEM_RAW_ID: _list_array(items.keys.take(pa.array(self.item_rows)), self.item_off),
            T.USER_INDEX: _list_array(_catalog_rows(users, "user")[self.user_rows], self.user_off),
            T.ITEM_INDEX: _list_array(_catalog_rows(items, "item")[self.item_rows], self.item_off),
        }
        return pa.RecordBatch.from_arrays(list(cols.values()), list(cols))


def write_shard(
    blocks: dict[str, TaskBlock],
    shard: int,
    output_dir: str,
    config: TaskGenConfig,
    users: FeatureTable,
    items: FeatureTable,
) -> None:
    """Records of one shard's tasks: one file per split, ``Split-<split>/tasks-SSSSS-of-NNNNN.tfrecord[.gz]``."""
    from tfx_bsl.coders import example_coder

    for split, block in blocks.items():
        name = f"tasks-{shard:05d}-of-{config.num_shards:05d}.tfrecord" + (
            ".gz" if config.compression == "GZIP" else ""
        )
        with common.TFRecordFile(os.path.join(T.split_dir(output_dir, split), name), config.compression) as f:
            for chunk in block.chunks(RECORD_CHUNK_ROWS):
                f.write(example_coder.RecordBatchToExamples(chunk.record_batch(config.setting, users, items)))


def write_catalog(output_dir: str, users: FeatureTable, items: FeatureTable) -> None:
    """The transformed user and item tables, every row of them, beside the records (``catalog/``),
    in catalog order: the rows the records' ``user_index`` / ``item_index`` point at."""
    for side, table in (("user", users), ("item", items)):
        t = table.take(T.catalog_order(table.keys.to_numpy(zero_copy_only=False)))
        T.write_catalog(T.catalog_path(output_dir, side), t.keys.to_pylist(), t.categorical, t.multi)


def write_index(index: Iterable[tuple], output_dir: str) -> None:
    """tasks.tsv: one line per written task (key, split, rows, support, query, users, items), by split then key."""
    index = sorted(index, key=lambda r: (T.SPLITS.index(r[1]), r[0]))
    with open(os.path.join(output_dir, INDEX_FILE), "w", encoding="utf-8") as f:
        f.write("task_key\tsplit\trows\tsupport\tquery\tusers\titems\n")
        for r in index:
            f.write("\t".join(str(x).replace("\t", " ") for x in r) + "\n")
