"""Generic click or rating logs: a delimited file with a header, mapped to the canonical fields."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from cmml.data import records as R
from cmml.data.dataset import Dataset
from cmml.data.delimited import DelimitedFormat
from cmml.data.interactions import InteractionSpec
from cmml.data.side_files import clean_value, int_field, side_table, split_list
from cmml.errors import DatasetNotFoundError

CANONICAL_LOG_FIELDS = ("user", "item", "label", "timestamp", "scenario", "task")


def parse_column_mapping(text: str) -> dict[str, str]:
    """'user=uid,item=iid,label=click' -> {'user': 'uid', 'item': 'iid', 'label': 'click'}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise DatasetNotFoundError(f"column mapping entry {part!r} is not of the form field=column")
        key, col = (s.strip() for s in part.split("=", 1))
        if key not in CANONICAL_LOG_FIELDS:
            raise DatasetNotFoundError(f"column mapping: unknown field {key!r}; use {', '.join(CANONICAL_LOG_FIELDS)}")
        mapping[key] = col
    for key in ("user", "item"):
        if key not in mapping:
            raise DatasetNotFoundError(f"column mapping needs '{key}=<column>' (got {text!r})")
    return mapping


class GenericCsv(Dataset):
    """A click or rating log in a delimited file with a header, plus optional side-feature files.

    The column mapping names the log's columns for user, item and optionally label (absent:
    implicit feedback, label 1), timestamp, scenario and an explicit task key. Side-feature files
    (``users_path``, ``items_path``) use the canonical column names of :mod:`cmml.data.records`;
    list features are '|'-separated.
    """

    name = "csv"

    def __init__(
        self,
        path: str | os.PathLike,
        columns: dict[str, str],
        delimiter: str = ",",
        label_range: tuple[float, float] | None = None,
        users_path: str | os.PathLike | None = None,
        items_path: str | os.PathLike | None = None,
    ):
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(f"{path}: log file not found")
        super().__init__(path.parent)
        self.log_path, self.columns, self.delimiter, self.label_range = path, dict(columns), delimiter, label_range
        self.users_path = Path(users_path) if users_path else None
        self.items_path = Path(items_path) if items_path else None

    def interaction_sources(self):
        c = self.columns
        fmt = DelimitedFormat(self.delimiter, tuple(c.values()), header=True, header_is_mapping=True, quoted=True)
        spec = InteractionSpec(
            fmt,
            c["user"],
            c["item"],
            c.get("label"),
            c.get("timestamp"),
            c.get("scenario"),
            c.get("task"),
            label_range=self.label_range,
        )
        return [(self.log_path, spec)]

    def _side(self, path: Path | None, schema: pa.Schema, on_error: str):
        if path is None:
            return schema.empty_table(), []
        key = schema.names[0]
        fmt = DelimitedFormat(self.delimiter, (key,), header=True, header_is_mapping=True, quoted=True)

        def convert(raw):
            rec = {}
            for field in schema:
                value = raw.get(field.name)
                if pa.types.is_list(field.type):
                    rec[field.name] = split_list(value, "|")
                elif pa.types.is_integer(field.type):
                    rec[field.name] = int_field(raw, field.name) if value is not None else None
                else:
                    rec[field.name] = clean_value(value) if value is not None else None
            rec[key] = (raw.get(key) or "").strip()
            return rec

        return side_table(path, fmt, schema, convert, on_error)

    def read_users(self, on_error="raise"):
        return self._side(self.users_path, R.USER_SCHEMA, on_error)

    def read_items(self, on_error="raise"):
        return self._side(self.items_path, R.ITEM_SCHEMA, on_error)
