"""Derived scenarios: themes of items from their metadata (genre, genre x decade, director, ...) and their plan.

With ``scenario_source='themes'`` an interaction belongs to every theme of its item; the theme
plan also decides the row-level accounting (an interaction is written once when at least one of
its item's themes is kept).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.splits import NO_SCENARIO, OUT_OF_BOUNDS, TaskPlan, make_plan
from cmml.components.task_gen.tables import FeatureTable, offsets_from_lengths


@dataclasses.dataclass(frozen=True)
class ThemeVocab:
    """Names of item feature indices (index i -> names[i - 1]); other indices are ignored."""

    genres: tuple[str, ...] = ()
    year: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    rated: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


_KIND_FEATURE = {
    "genre": "genres",
    "director": "directors",
    "actor": "actors",
    "writer": "writers",
    "tag": "tags",
    "rated": "rated",
}


def _item_values(items: FeatureTable, feature: str, vocab_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(item position, value index) pairs of a feature, keeping in-vocabulary values only."""
    if feature in items.multi:
        values, offsets = items.multi[feature]
        pos = np.repeat(np.arange(len(items), dtype=np.int64), np.diff(offsets))
    elif feature in items.categorical:
        values = items.categorical[feature]
        pos = np.arange(len(items), dtype=np.int64)
    else:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ok = (values >= 1) & (values <= vocab_len)
    return pos[ok], values[ok]


def derive_themes(items: FeatureTable, vocab: ThemeVocab, kinds: Iterable[str]) -> tuple[np.ndarray, pa.Array]:
    """Themed scenarios of items from their metadata.

    Returns (item position, theme key) pairs. Keys read ``genre=Drama``,
    ``genre=Drama|decade=1990s``, ``genres=Comedy+Romance``, ``director=…``, ``actor=…``,
    ``writer=…``, ``rated=PG``, ``tag=…``; with multi-domain data they are prefixed by the
    item's domain (``ml100k/genre=Drama``). Strings are built once per distinct theme.
    """
    parts_pos, parts_kind, parts_a, parts_b = [], [], [], []
    kinds = list(kinds)
    for k, kind in enumerate(kinds):
        if kind in _KIND_FEATURE:
            feature = _KIND_FEATURE[kind]
            pos, val = _item_values(items, feature, len(getattr(vocab, feature)))
            parts_pos.append(pos), parts_a.append(val), parts_b.append(np.zeros_like(val))
        elif kind == "genre_decade":
            gpos, gval = _item_values(items, "genres", len(vocab.genres))
            ypos, yval = _item_values(items, "year", len(vocab.year))
            year_of = np.zeros(len(items), dtype=np.int64)
            year_of[ypos] = yval
            ok = year_of[gpos] > 0
            parts_pos.append(gpos[ok]), parts_a.append(gval[ok]), parts_b.append(year_of[gpos[ok]])
        elif kind == "genre_pair":
            gpos, gval = _item_values(items, "genres", len(vocab.genres))
            if len(gpos):
                # rows of (item, genre) sorted by item; all pairs within an item via a padded matrix
                counts = np.bincount(gpos, minlength=len(items))
                width = int(counts.max())
                starts = offsets_from_lengths(counts)[:-1]
                col = np.arange(len(gpos)) - starts[gpos]
                mat = np.zeros((len(items), width), dtype=np.int64)
                mat[gpos, col] = gval
                for i in range(width):
                    for j in range(i + 1, width):
                        ok = (mat[:, i] > 0) & (mat[:, j] > 0)
                        a, b = np.minimum(mat[ok, i], mat[ok, j]), np.maximum(mat[ok, i], mat[ok, j])
                        parts_pos.append(np.flatnonzero(ok)), parts_a.append(a), parts_b.append(b)
                        parts_kind.append(np.full(len(a), k, dtype=np.int64))
            continue
        else:
            raise ValueError(f"unknown theme kind {kind!r}")
        parts_kind.append(np.full(len(parts_pos[-1]), k, dtype=np.int64))
    if not parts_pos:
        return np.zeros(0, np.int64), pa.array([], pa.large_binary())
    pos = np.concatenate(parts_pos)
    kind_idx = np.concatenate(parts_kind)
    a = np.concatenate(parts_a)
    b = np.concatenate(parts_b)
    if items.domains is not None:
        dom_enc = pc.dictionary_encode(items.domains)
        dom_names = [d.decode() if d else "" for d in dom_enc.dictionary.to_pylist()]
        dom = dom_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)[pos]
    else:
        dom_names, dom = [""], np.zeros(len(pos), dtype=np.int64)
    combo = np.stack([dom, kind_idx, a, b], axis=1)
    uniq, inverse = np.unique(combo, axis=0, return_inverse=True)
    names = []
    for d, k, x, y in uniq.tolist():
        kind = kinds[k]
        prefix = f"{dom_names[d]}/" if dom_names[d] else ""
        if kind == "genre_decade":
            text = f"genre={vocab.genres[x - 1]}|decade={vocab.year[y - 1]}"
        elif kind == "genre_pair":
            g1, g2 = sorted((vocab.genres[x - 1], vocab.genres[y - 1]))
            text = f"genres={g1}+{g2}"
        else:
            text = f"{kind}={getattr(vocab, _KIND_FEATURE[kind])[x - 1]}"
        names.append((prefix + text).encode())
    theme_keys = pa.array(names, pa.large_binary())
    return pos, theme_keys.take(pa.array(inverse.reshape(-1)))


def theme_plan(items: FeatureTable, vocab: ThemeVocab, config: TaskGenConfig) -> TaskPlan:
    """Plan of derived themes from the merged item table, with row-level accounting.

    An interaction belongs to every theme of its item; it is written when at least one of those
    themes is kept, filtered as 'no_scenario' when its item has no theme, and as
    'scenario_out_of_bounds' when all its item's themes are out of the item-count bounds.
    """
    pos, theme_keys = derive_themes(items, vocab, config.themes)
    theme_hash = common.stable_hash64(theme_keys)
    uniq, first, inverse = np.unique(theme_hash, return_index=True, return_inverse=True)
    n_items = np.bincount(inverse, minlength=len(uniq))
    n_rows = np.bincount(inverse, weights=items.counts[pos], minlength=len(uniq)).astype(np.int64)
    plan = make_plan(uniq, theme_keys.take(pa.array(first)), n_rows, n_items, config)
    kept_theme = plan.decision[plan.lookup(theme_hash)] >= 0
    item_has_theme = np.zeros(len(items), dtype=bool)
    item_has_theme[pos] = True
    item_kept = np.zeros(len(items), dtype=bool)
    item_kept[pos[kept_theme]] = True
    plan.row_stats = {
        "rows_written": int(items.counts[item_kept].sum()),
        "filtered": {
            NO_SCENARIO: int(items.counts[~item_has_theme].sum()),
            OUT_OF_BOUNDS: int(items.counts[item_has_theme & ~item_kept].sum()),
        },
        "memberships_expected": int(plan.n_rows[plan.decision >= 0].sum()),
    }
    return plan
