"""Dataset layouts: MovieLens 100K / 1M / 20M (and latest), ML-1M-partial, synthetic, generic CSV.

A :class:`Dataset` knows which files hold interactions and side features and how to read them
into the canonical tables of :mod:`cmml.data.records`. Use :func:`cmml.data.open_dataset` to get
one from a name or a path.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.data import records as R
from cmml.data.delimited import DEFAULT_BLOCK_BYTES, DelimitedFormat, iter_blocks
from cmml.data.interactions import InteractionBatch, InteractionSpec, iter_interaction_file
from cmml.errors import DataFormatError, DatasetNotFoundError

_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_MISSING = {"", "N/A", "NA", "null", "None", "(no genres listed)"}

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


@dataclasses.dataclass
class ReadResult:
    """All interactions of a dataset, with the row accounting and rejected rows of the read."""

    table: pa.Table
    stats: R.ReadStats
    rejects: list[R.RejectedRow]


def title_year(title: str) -> int | None:
    m = _YEAR_IN_TITLE.search(title or "")
    return int(m.group(1)) if m else None


def split_list(value: str | None, sep: str) -> list[str]:
    """'Tom Hanks, Tim Allen' -> ['Tom Hanks', 'Tim Allen']; drops '(screenplay)'-style notes."""
    if value is None or value.strip() in _MISSING:
        return []
    out = []
    for part in value.split(sep):
        part = re.sub(r"\s*\([^)]*\)\s*$", "", part).strip()
        if part and part not in _MISSING and part not in out:
            out.append(part)
    return out


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in _MISSING else value


def _read_rows(path: Path, fmt: DelimitedFormat, on_error: str) -> tuple[list[tuple[int, dict]], list[R.RejectedRow]]:
    """Reads a small side-feature file into (line, {column: str}) rows."""
    rows, rejects = [], []
    for block in iter_blocks(path, fmt):
        lines = block.row_lines()
        cols = {name: block.table[name].to_pylist() for name in block.table.column_names}
        for k, line in enumerate(lines):
            rows.append((int(line), {name: values[k] for name, values in cols.items()}))
        rejects.extend(block.rejects)
    if rejects and on_error == "raise":
        raise DataFormatError(rejects[0].path, rejects[0].reason, line=rejects[0].line)
    return rows, rejects


def _side_table(
    path: Path,
    fmt: DelimitedFormat,
    schema: pa.Schema,
    convert: Callable[[dict], dict],
    on_error: str,
) -> tuple[pa.Table, list[R.RejectedRow]]:
    """Reads a side-feature file; ``convert`` maps raw fields to canonical ones or raises ValueError."""
    rows, rejects = _read_rows(path, fmt, on_error)
    out: dict[str, list] = collections.defaultdict(list)
    seen: dict[str, int] = {}
    key = schema.names[0]
    for line, raw in rows:
        try:
            rec = convert(raw)
            if not rec[key]:
                raise ValueError(f"empty id: field '{key}' is empty")
            if rec[key] in seen:
                raise ValueError(f"duplicate id: {rec[key]!r} already defined on line {seen[rec[key]]}")
        except ValueError as exc:
            reject = R.RejectedRow(str(path), line, fmt.delimiter.join(str(v) for v in raw.values()), str(exc))
            if on_error == "raise":
                raise DataFormatError(reject.path, reject.reason, line=line) from None
            rejects.append(reject)
            continue
        seen[rec[key]] = line
        for field in schema:
            value = rec.get(field.name)
            out[field.name].append([] if value is None and pa.types.is_list(field.type) else value)
    return R.table_from_columns(schema, out) if rows else schema.empty_table(), rejects


def _int_field(raw: dict, field: str, name: str | None = None) -> int | None:
    value = (raw.get(field) or "").strip()
    if value in _MISSING:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not an integer: field '{name or field}' is {value!r}") from None


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

    def iter_interactions(
        self, on_error: str = "raise", block_bytes: int = DEFAULT_BLOCK_BYTES
    ) -> Iterator[InteractionBatch]:
        for path, spec in self.interaction_sources():
            for batch in iter_interaction_file(path, spec, on_error=on_error, block_bytes=block_bytes):
                batch.table = self.decorate(batch.table)
                yield batch

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


# --- MovieLens 100K ---------------------------------------------------------------------------------
class MovieLens100K(Dataset):
    """``u.data`` (tab: user, item, rating, unix time), ``u.user``, ``u.item`` (latin-1, '|')."""

    name = "ml-100k"
    required = ("u.data",)
    optional = ("u.user", "u.item", "u.genre")

    def interaction_sources(self):
        fmt = DelimitedFormat("\t", ("user_id", "item_id", "rating", "timestamp"))
        return [
            (self.path("u.data"), InteractionSpec(fmt, "user_id", "item_id", "rating", "timestamp", label_range=(1, 5)))
        ]

    def read_users(self, on_error="raise"):
        if not self.has("u.user"):
            return super().read_users(on_error)
        fmt = DelimitedFormat("|", ("user_id", "age", "gender", "occupation", "zip"), encoding="auto")
        return _side_table(self.path("u.user"), fmt, R.USER_SCHEMA, _ml_user, on_error)

    def _genres(self) -> Sequence[str]:
        if not self.has("u.genre"):
            return ML100K_GENRES
        names = {}
        for line in self.path("u.genre").read_text(encoding="latin-1").splitlines():
            if "|" in line:
                name, idx = line.rsplit("|", 1)
                names[int(idx)] = name
        return tuple(names[i] for i in sorted(names))

    def read_items(self, on_error="raise"):
        if not self.has("u.item"):
            return super().read_items(on_error)
        genres = self._genres()
        cols = ("item_id", "title", "release_date", "video_release_date", "url") + tuple(
            f"g{i}" for i in range(len(genres))
        )
        fmt = DelimitedFormat("|", cols, encoding="auto")

        def convert(raw):
            flags = [raw[f"g{i}"].strip() for i in range(len(genres))]
            if any(f not in ("0", "1") for f in flags):
                raise ValueError(
                    f"bad genre flag: fields g0..g{len(genres) - 1} must be 0 or 1, got {'|'.join(flags)!r}"
                )
            release = _clean(raw["release_date"])
            year = int(release[-4:]) if release and release[-4:].isdigit() else title_year(raw["title"])
            return {
                R.ITEM_ID: raw["item_id"].strip(),
                "title": _clean(raw["title"]),
                "year": year,
                "genres": [g for g, f in zip(genres, flags) if f == "1" and g != "unknown"],
            }

        return _side_table(self.path("u.item"), fmt, R.ITEM_SCHEMA, convert, on_error)


def _ml_user(raw: dict) -> dict:
    return {
        R.USER_ID: raw["user_id"].strip(),
        "gender": _clean(raw["gender"]),
        "age": _int_field(raw, "age"),
        "occupation": _clean(raw["occupation"]),
        "zip": _clean(raw["zip"]),
    }


# --- MovieLens 1M and its partial layout -----------------------------------------------------------------
class MovieLens1M(Dataset):
    """``ratings.dat``, ``users.dat``, ``movies.dat`` ('::', latin-1 in the official release).

    ``movies_extrainfos.dat`` (OMDB metadata, as published with MeLU) is read when present.
    """

    name = "ml-1m"
    required = ("ratings.dat",)
    optional = ("users.dat", "movies.dat", "movies_extrainfos.dat")

    def interaction_sources(self):
        fmt = DelimitedFormat("::", ("user_id", "movie_id", "rating", "timestamp"), encoding="auto")
        return [
            (
                self.path("ratings.dat"),
                InteractionSpec(fmt, "user_id", "movie_id", "rating", "timestamp", label_range=(1, 5)),
            )
        ]

    def read_users(self, on_error="raise"):
        if not self.has("users.dat"):
            return super().read_users(on_error)
        fmt = DelimitedFormat("::", ("user_id", "gender", "age", "occupation", "zip"), encoding="auto")
        return _side_table(self.path("users.dat"), fmt, R.USER_SCHEMA, _ml_user, on_error)

    def read_items(self, on_error="raise"):
        items, rejects = {}, []
        if self.has("movies.dat"):
            fmt = DelimitedFormat("::", ("item_id", "title", "genres"), encoding="auto")

            def convert(raw):
                return {
                    R.ITEM_ID: raw["item_id"].strip(),
                    "title": _clean(raw["title"]),
                    "year": title_year(raw["title"]),
                    "genres": split_list(raw["genres"], "|"),
                }

            table, rejects = _side_table(self.path("movies.dat"), fmt, R.ITEM_SCHEMA, convert, on_error)
            items = {row[R.ITEM_ID]: row for row in table.to_pylist()}
        if self.has("movies_extrainfos.dat"):
            extra, extra_rejects = read_extrainfos(self.path("movies_extrainfos.dat"), on_error)
            rejects += extra_rejects
            for row in extra.to_pylist():
                base = items.setdefault(
                    row[R.ITEM_ID], {R.ITEM_ID: row[R.ITEM_ID], "title": row["title"], "genres": row["genres"]}
                )
                for name in ("rated", "directors", "writers", "actors"):
                    base[name] = row[name]
                if base.get("year") is None:
                    base["year"] = row["year"]
        if not items:
            return R.ITEM_SCHEMA.empty_table(), rejects
        ordered = sorted(items.values(), key=lambda r: (len(r[R.ITEM_ID]), r[R.ITEM_ID]))
        return pa.Table.from_pylist(ordered, schema=R.ITEM_SCHEMA), rejects


def read_extrainfos(path: Path, on_error: str = "raise") -> tuple[pa.Table, list[R.RejectedRow]]:
    """OMDB metadata: id::title::year::rated::released::genres::director::writer::actors::plot::poster."""
    cols = ("item_id", "title", "year", "rated", "released", "genres", "director", "writer", "actors", "plot", "poster")
    fmt = DelimitedFormat("::", cols, encoding="auto")

    def convert(raw):
        year = _clean(raw["year"])
        return {
            R.ITEM_ID: raw["item_id"].strip(),
            "title": _clean(raw["title"]),
            "year": int(year[:4]) if year and year[:4].isdigit() else None,
            "rated": _clean(raw["rated"]),
            "genres": split_list(raw["genres"], ","),
            "directors": split_list(raw["director"], ","),
            "writers": split_list(raw["writer"], ","),
            "actors": split_list(raw["actors"], ","),
        }

    return _side_table(path, fmt, R.ITEM_SCHEMA, convert, on_error)


class MovieLens1MPartial(MovieLens1M):
    """The cold-start papers' ML-1M subset: ``ratings.csv`` (user_id,movie_id,rating; no timestamps)."""

    name = "ml-1m-partial"
    required = ("ratings.csv", "users.dat")

    def interaction_sources(self):
        fmt = DelimitedFormat(",", ("user_id", "movie_id", "rating"), header=True)
        return [(self.path("ratings.csv"), InteractionSpec(fmt, "user_id", "movie_id", "rating", label_range=(1, 5)))]


# --- MovieLens 20M / latest -------------------------------------------------------------------------------
class MovieLens20M(Dataset):
    """``ratings.csv`` (userId,movieId,rating,timestamp; half stars), ``movies.csv``, ``tags.csv``."""

    name = "ml-20m"
    required = ("ratings.csv", "movies.csv")
    optional = ("tags.csv",)
    max_tags = 10  # per movie, most frequent first

    def interaction_sources(self):
        fmt = DelimitedFormat(",", ("userId", "movieId", "rating", "timestamp"), header=True)
        return [
            (
                self.path("ratings.csv"),
                InteractionSpec(fmt, "userId", "movieId", "rating", "timestamp", label_range=(0.5, 5)),
            )
        ]

    def read_items(self, on_error="raise"):
        tags, rejects = self._tags(on_error) if self.has("tags.csv") else ({}, [])
        fmt = DelimitedFormat(",", ("movieId", "title", "genres"), header=True, quoted=True)

        def convert(raw):
            item = raw["movieId"].strip()
            return {
                R.ITEM_ID: item,
                "title": _clean(raw["title"]),
                "year": title_year(raw["title"].strip()),
                "genres": split_list(raw["genres"], "|"),
                "tags": tags.get(item, []),
            }

        table, item_rejects = _side_table(self.path("movies.csv"), fmt, R.ITEM_SCHEMA, convert, on_error)
        return table, rejects + item_rejects

    def _tags(self, on_error: str) -> tuple[dict[str, list[str]], list[R.RejectedRow]]:
        fmt = DelimitedFormat(",", ("userId", "movieId", "tag", "timestamp"), header=True, quoted=True)
        counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        rejects = []
        for block in iter_blocks(self.path("tags.csv"), fmt):
            rejects += block.rejects
            movies = block.table["movieId"].to_pylist()
            for movie, tag in zip(movies, pc.utf8_lower(pc.utf8_trim_whitespace(block.table["tag"])).to_pylist()):
                if tag:
                    counts[movie.strip()][tag] += 1
        if rejects and on_error == "raise":
            raise DataFormatError(rejects[0].path, rejects[0].reason, line=rejects[0].line)
        return {
            m: [t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_tags]]
            for m, c in counts.items()
        }, rejects


# --- synthetic ---------------------------------------------------------------------------------------------
class Synthetic(MovieLens1M):
    """Output of ``cmml data synth``: the ML-1M layout plus ``movies_extrainfos.dat`` and
    ``item_themes.dat`` (item::theme). An interaction's scenario is its item's theme.
    ``user_groups.dat`` holds the planted latent groups; it is ground truth for tests and plots,
    never a feature.
    """

    name = "synthetic"
    required = ("ratings.dat", "users.dat", "movies.dat", "item_themes.dat")

    def _themes(self) -> tuple[pa.Array, pa.Array]:
        if not hasattr(self, "_theme_cache"):
            fmt = DelimitedFormat("::", ("item_id", "theme"))
            rows, _ = _read_rows(self.path("item_themes.dat"), fmt, "raise")
            self._theme_cache = (
                pa.array([r["item_id"] for _, r in rows], pa.string()),
                pa.array([r["theme"] for _, r in rows], pa.string()),
            )
        return self._theme_cache

    def decorate(self, table: pa.Table) -> pa.Table:
        items, themes = self._themes()
        idx = pc.index_in(table[R.ITEM_ID], value_set=items)
        return table.set_column(table.schema.get_field_index(R.SCENARIO), R.SCENARIO, pc.take(themes, idx))

    def latent_groups(self) -> dict[str, int]:
        """Ground truth: user id -> planted preference group."""
        fmt = DelimitedFormat("::", ("user_id", "group"))
        rows, _ = _read_rows(self.path("user_groups.dat"), fmt, "raise")
        return {r["user_id"]: int(r["group"]) for _, r in rows}


# --- generic CSV logs ------------------------------------------------------------------------------------------
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
                    rec[field.name] = _int_field(raw, field.name) if value is not None else None
                else:
                    rec[field.name] = _clean(value) if value is not None else None
            rec[key] = (raw.get(key) or "").strip()
            return rec

        return _side_table(path, fmt, schema, convert, on_error)

    def read_users(self, on_error="raise"):
        return self._side(self.users_path, R.USER_SCHEMA, on_error)

    def read_items(self, on_error="raise"):
        return self._side(self.items_path, R.ITEM_SCHEMA, on_error)


LAYOUTS: dict[str, type[Dataset]] = {
    cls.name: cls for cls in (MovieLens100K, MovieLens1M, MovieLens1MPartial, MovieLens20M, Synthetic)
}
LAYOUTS["ml-latest"] = LAYOUTS["ml-latest-small"] = MovieLens20M


def detect_layout(root: Path) -> type[Dataset]:
    """Guesses the layout of a directory from the files in it."""
    has = lambda f: (root / f).is_file()  # noqa: E731
    if has("u.data"):
        return MovieLens100K
    if has("ratings.dat"):
        return Synthetic if has("item_themes.dat") else MovieLens1M
    if has("ratings.csv") and has("users.dat"):
        return MovieLens1MPartial
    if has("ratings.csv") and has("movies.csv"):
        return MovieLens20M
    found = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
    raise DatasetNotFoundError(
        f"{root}: no known dataset layout (expected u.data, ratings.dat, or ratings.csv with users.dat/movies.csv); "
        f"found {', '.join(found) or 'nothing'}. For another log, pass a CSV file with a column mapping."
    )


def unique_count(values: pa.ChunkedArray | pa.Array) -> int:
    return len(pc.unique(values)) if len(values) else 0


def as_numpy_ids(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(), dtype=object)
