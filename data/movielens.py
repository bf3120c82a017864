"""MovieLens-format readers: 100K, 1M, the ML-1M-partial subset, 20M / latest, and synthetic data.

The synthetic generator (:mod:`cmml.data.synthetic`) writes the ML-1M layout plus item themes.
:func:`detect_layout` tells which of these layouts a folder holds.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from cmml.data import records as R
from cmml.data.dataset import Dataset
from cmml.data.delimited import DelimitedFormat, iter_blocks
from cmml.data.interactions import InteractionSpec
from cmml.data.side_files import clean_value, int_field, read_rows, side_table, split_list, title_year
from cmml.errors import DataFormatError, DatasetNotFoundError

ML100K_GENRES = ("unknown", *R.GENRES)  # the genre flag columns of u.item, in order


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
        return side_table(self.path("u.user"), fmt, R.USER_SCHEMA, _ml_user, on_error)

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
            release = clean_value(raw["release_date"])
            year = int(release[-4:]) if release and release[-4:].isdigit() else title_year(raw["title"])
            return {
                R.ITEM_ID: raw["item_id"].strip(),
                "title": clean_value(raw["title"]),
                "year": year,
                "genres": [g for g, f in zip(genres, flags) if f == "1" and g != "unknown"],
            }

        return side_table(self.path("u.item"), fmt, R.ITEM_SCHEMA, convert, on_error)


def _ml_user(raw: dict) -> dict:
    return {
        R.USER_ID: raw["user_id"].strip(),
        "gender": clean_value(raw["gender"]),
        "age": int_field(raw, "age"),
        "occupation": clean_value(raw["occupation"]),
        "zip": clean_value(raw["zip"]),
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
        return side_table(self.path("users.dat"), fmt, R.USER_SCHEMA, _ml_user, on_error)

    def read_items(self, on_error="raise"):
        items, rejects = {}, []
        if self.has("movies.dat"):
            fmt = DelimitedFormat("::", ("item_id", "title", "genres"), encoding="auto")

            def convert(raw):
                return {
                    R.ITEM_ID: raw["item_id"].strip(),
                    "title": clean_value(raw["title"]),
                    "year": title_year(raw["title"]),
                    "genres": split_list(raw["genres"], "|"),
                }

            table, rejects = side_table(self.path("movies.dat"), fmt, R.ITEM_SCHEMA, convert, on_error)
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
        year = clean_value(raw["year"])
        return {
            R.ITEM_ID: raw["item_id"].strip(),
            "title": clean_value(raw["title"]),
            "year": int(year[:4]) if year and year[:4].isdigit() else None,
            "rated": clean_value(raw["rated"]),
            "genres": split_list(raw["genres"], ","),
            "directors": split_list(raw["director"], ","),
            "writers": split_list(raw["writer"], ","),
            "actors": split_list(raw["actors"], ","),
        }

    return side_table(path, fmt, R.ITEM_SCHEMA, convert, on_error)


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
                "title": clean_value(raw["title"]),
                "year": title_year(raw["title"].strip()),
                "genres": split_list(raw["genres"], "|"),
                "tags": tags.get(item, []),
            }

        table, item_rejects = side_table(self.path("movies.csv"), fmt, R.ITEM_SCHEMA, convert, on_error)
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
            rows, _ = read_rows(self.path("item_themes.dat"), fmt, "raise")
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
        rows, _ = read_rows(self.path("user_groups.dat"), fmt, "raise")
        return {r["user_id"]: int(r["group"]) for _, r in rows}


# --- layout detection -----------------------------------------------------------------------------------------
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
