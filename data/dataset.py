"""The dataset interface: a folder in one known layout, read into the canonical tables.

A :class:`Dataset` knows which files hold interactions and side features and how to read them
into the canonical tables of :mod:`cmml.data.records`. Use :func:`cmml.data.open_dataset` to get
one from a name or a path.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from cmml.data import records as R
from cmml.data.delimited import DEFAULT_BLOCK_BYTES, BlockRange, block_ranges
from cmml.data.interactions import InteractionBatch, InteractionSpec, read_interaction_block
from cmml.errors import DatasetNotFoundError


@dataclasses.dataclass
class ReadResult:
    """All interactions of a dataset, with the row accounting and rejected rows of the read."""

    table: pa.Table
    stats: R.ReadStats
    rejects: list[R.RejectedRow]


class Dataset(abc.ABC):
    """A dataset on disk in one known layout."""

    name: str = "dataset"
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        missing = [f for f in self.required if not (self.root / f).is_file()]
        if missing:
            raise DatasetNotFoundError(f"{self.root}: not a {self.name} directory, missing {', '.join(missing)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    @abc.abstractmethod
    def interaction_sources(self) -> list[tuple[Path, InteractionSpec]]:
        """The log files and how to read each one."""

    def decorate(self, table: pa.Table) -> pa.Table:
        """Adds dataset-level knowledge to canonical interactions (e.g. scenarios). Default: none."""
        return table

    def interaction_blocks(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[tuple[int, BlockRange]]:
        """Every block of every log file as (file number, where it lies): read them with :meth:`read_block`,
        in any order or process."""
        return [
            (k, block)
            for k, (path, spec) in enumerate(self.interaction_sources())
            for block in block_ranges(path, spec.fmt, block_bytes)
        ]

    def read_block(self, file: int, block: BlockRange, on_error: str = "raise") -> InteractionBatch:
        """Canonical rows of one block of :meth:`interaction_blocks` (rejects: see ``read_interaction_block``)."""
        spec = self.interaction_sources()[file][1]
        batch = read_interaction_block(block, spec, on_error)
        batch.table = self.decorate(batch.table)
        return batch

    def iter_interactions(
        self, on_error: str = "raise", block_bytes: int = DEFAULT_BLOCK_BYTES
    ) -> Iterator[InteractionBatch]:
        for file, block in self.interaction_blocks(block_bytes):
            yield self.read_block(file, block, on_error)

    def read_interactions(self, on_error: str = "raise") -> ReadResult:
        tables, rejects, stats = [], [], R.ReadStats()
        for batch in self.iter_interactions(on_error=on_error):
            tables.append(batch.table)
            rejects.extend(batch.rejects)
            stats.rows_ok += batch.table.num_rows
            stats.blank_lines += batch.blank_lines
            stats.add_rejects(batch.rejects)
        table = pa.concat_tables(tables) if tables else R.INTERACTION_SCHEMA.empty_table()
        return ReadResult(table, stats, rejects)

    def read_users(self, on_error: str = "raise") -> tuple[pa.Table, list[R.RejectedRow]]:
        """User side features (an empty table when the layout has none)."""
        return R.USER_SCHEMA.empty_table(), []

    def read_items(self, on_error: str = "raise") -> tuple[pa.Table, list[R.RejectedRow]]:
        """Item side features (an empty table when the layout has none)."""
        return R.ITEM_SCHEMA.empty_table(), []
