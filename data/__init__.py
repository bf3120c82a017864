"""Data sources: readers for MovieLens and generic logs, archive download, synthetic generator.

``open_dataset`` is the one entry point from a name or path to a :class:`Dataset`::

    ds = open_dataset("ml-100k")  # or a folder, or a log file with its column mapping
    result = ds.read_interactions()  # canonical Arrow table + row accounting
    users, _ = ds.read_users()
    items, _ = ds.read_items()

Modules: :mod:`~cmml.data.dataset` (the ``Dataset`` interface), :mod:`~cmml.data.movielens`
(the MovieLens and synthetic layouts, layout detection), :mod:`~cmml.data.generic_csv` (logs with
a column mapping), :mod:`~cmml.data.side_files` (user and item files), :mod:`~cmml.data.delimited`
and :mod:`~cmml.data.interactions` (block parsing of delimited logs), :mod:`~cmml.data.records`
(the canonical tables), :mod:`~cmml.data.fetch` (archive download), :mod:`~cmml.data.synthetic`
(the generator) and :mod:`~cmml.data.inspect` (a dataset report).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cmml.data.dataset import Dataset
from cmml.data.generic_csv import GenericCsv, parse_column_mapping
from cmml.data.movielens import LAYOUTS, Synthetic, detect_layout
from cmml.errors import DatasetNotFoundError

KNOWN_NAMES = ("synthetic", "ml-100k", "ml-1m", "ml-1m-partial", "ml-20m", "ml-latest", "ml-latest-small")


def data_home() -> Path:
    """Where named datasets live: $CMML_DATA_DIR, else ~/.cache/cmml/data."""
    return Path(os.environ.get("CMML_DATA_DIR") or Path.home() / ".cache" / "cmml" / "data")


def open_dataset(
    spec: str | os.PathLike,
    columns: str | dict | None = None,
    delimiter: str = ",",
    label_range: tuple[float, float] | None = None,
    users_path: str | None = None,
    items_path: str | None = None,
    progress=sys.stderr,
) -> Dataset:
    """Resolves a dataset name or path.

    Args:
      spec: a name from KNOWN_NAMES (looked up under :func:`data_home`; 'synthetic' is generated
        there on first use), a dataset directory (layout detected from its files), or a
        delimited log file (then ``columns`` maps canonical fields to its columns).
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if columns is None:
            raise DatasetNotFoundError(
                f"{path} is a single log file: give its column mapping, e.g. --columns user=uid,item=iid,label=rating"
            )
        mapping = parse_column_mapping(columns) if isinstance(columns, str) else dict(columns)
        return GenericCsv(path, mapping, delimiter, label_range, users_path, items_path)
    if path.is_dir():
        return detect_layout(path)(path)
    if text == "synthetic":
        from cmml.data import synthetic

        target = data_home() / "synthetic-default"
        if not (target / "synthetic.json").is_file():
            synthetic.generate(target, synthetic.SyntheticConfig(), progress=progress)
        return Synthetic(target)
    if text in KNOWN_NAMES:
        target = data_home() / text
        if target.is_dir():
            return LAYOUTS[text](target)
        hint = (
            f"run `cmml data fetch {text} --dest {data_home()}`"
            if text in ("ml-100k", "ml-1m", "ml-20m")
            else "pass its folder"
        )
        raise DatasetNotFoundError(f"dataset {text!r} is not in {data_home()}: {hint}, or pass a path to the files")
    raise DatasetNotFoundError(
        f"unknown dataset {text!r}: not a file or folder, and not one of {', '.join(KNOWN_NAMES)}"
    )
