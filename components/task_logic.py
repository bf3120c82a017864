"""Vectorised core of TaskGen: configuration, split rules, protocol ordering, themes, task records.

Everything here is plain numpy / pyarrow on whole batches, so it can be unit-tested without Beam
and runs inside Beam DoFns (``cmml.components.task_gen``) unchanged. Python loops run over tasks
(users, scenarios) or character positions, never over interactions.

Identity of users, items and tasks inside the pipeline is the stable 64-bit hash of their raw
string key (``cmml.components.common.stable_hash64``): rows travel as four numeric columns, and the
side tables map hashes back to keys and features. Two different keys with the same hash are
detected when the tables are merged and stop the run (never silently merged).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components import common
from cmml.schemas import tasks as T

# --- configuration --------------------------------------------------------------------------------------------
SETTINGS = ("user", "scenario")
SPLIT_MODES = ("hash", "list", "permutation")
SCENARIO_SOURCES = ("auto", "column", "themes")
THEME_KINDS = ("genre", "genre_decade", "genre_pair", "director", "actor", "writer", "rated", "tag")


@dataclasses.dataclass(frozen=True)
class TaskGenConfig:
    """What TaskGen builds. Defaults follow SPEC.md section 3.

    Task split (identical on every run and runner):
      split_mode: 'hash' — meta-test if unit(stable_hash64(salt + key)) < test_fraction;
        'list' — meta-test = the keys in ``test_keys`` / ``test_keys_file`` (one per line);
        'permutation' — kept task keys sorted (numerically when all are integers), permuted by
        ``numpy.random.default_rng(permutation_seed)``; the first ``n_train`` are meta-train
        (default: round((1 - test_fraction) * number of kept tasks)).
      valid_fraction: share of meta-train tasks moved to 'meta_valid' (fixed episodes for model
        selection), by hash of salt + '/valid' + key.

    User setting (task = user):
      min_ratings..max_ratings: kept users; trim_to: keep at most this many ratings per user
        (the first ones in protocol order); query_size: fixed query ratings of meta-test users.
      Protocol order of a user's ratings (users-v1): sorted by item id (numerically when
        integers), then reordered by ``numpy.random.default_rng(seed).permutation(n)`` with
        seed = int(user id) for integer ids, else stable_hash64(user id); the last ``query_size``
        rows are the query set.

    Scenario setting (task = scenario, implicit feedback):
      scenario_source: 'column' (the log's scenario), 'themes' (derived from item metadata, see
        ``themes``), 'auto' (column when the data has one).
      min_items..max_items: kept scenarios by number of distinct items.
      eval_support_positives: fixed support positives of a meta-test scenario (each stored with
        one sampled negative); eval_users_per_scenario: cap on evaluation users per scenario;
        min_eval_positives: an evaluation user needs at least this many positives.
    """

    setting: str = "user"
    split_mode: str = "hash"
    test_fraction: float = 0.2
    salt: str = "cmml-taskgen"
    test_keys: tuple[str, ...] = ()
    test_keys_file: str | None = None
    permutation_seed: int = 20211101
    n_train: int | None = None
    valid_fraction: float = 0.0
    # user setting
    min_ratings: int = 13
    max_ratings: int = 100
    trim_to: int | None = None
    query_size: int = 10
    # scenario setting
    scenario_source: str = "auto"
    themes: tuple[str, ...] = ("genre", "genre_decade", "genre_pair", "director", "actor", "rated")
    min_items: int = 20
    max_items: int = 1000
    eval_support_positives: int = 64
    eval_users_per_scenario: int = 50
    min_eval_positives: int = 1
    seed: int = 0
    # execution
    num_shards: int = 16
    compression: str = "GZIP"
    read_batch_size: int = 65536
    splits: tuple[str, ...] | None = None  # input example splits to read (default: all)
    # DirectRunner only: inputs smaller than this many bytes run in-memory, where starting worker
    # processes would cost more than they save (ML-1M-sized logs: ~4 s in-memory vs ~11 s); 0 = never
    in_memory_below_bytes: int = 100 * 1024 * 1024

    def __post_init__(self):
        def check(ok: bool, message: str):
            if not ok:
                raise ValueError(f"TaskGenConfig: {message}")

        check(self.setting in SETTINGS, f"setting must be one of {SETTINGS}, not {self.setting!r}")
        check(self.split_mode in SPLIT_MODES, f"split_mode must be one of {SPLIT_MODES}, not {self.split_mode!r}")
        check(0.0 <= self.test_fraction <= 1.0, "test_fraction must be in [0, 1]")
        check(0.0 <= self.valid_fraction < 1.0, "valid_fraction must be in [0, 1)")
        check(
            self.split_mode != "list" or bool(self.test_keys) or bool(self.test_keys_file),
            "split_mode 'list' needs test_keys or test_keys_file",
        )
        check(self.n_train is None or self.n_train >= 0, "n_train must be >= 0")
        check(1 <= self.min_ratings <= self.max_ratings, "need 1 <= min_ratings <= max_ratings")
        check(self.in_memory_below_bytes >= 0, "in_memory_below_bytes must be >= 0")
        check(self.query_size >= 1, "query_size must be >= 1")
        check(self.min_ratings > self.query_size, "min_ratings must exceed query_size (a support set needs a row)")
        check(self.trim_to is None or self.trim_to > self.query_size, "trim_to must exceed query_size")
        check(self.scenario_source in SCENARIO_SOURCES, f"scenario_source must be one of {SCENARIO_SOURCES}")
        unknown = [k for k in self.themes if k not in THEME_KINDS]
        check(not unknown, f"unknown theme kinds {unknown}; use {THEME_KINDS}")
        check(1 <= self.min_items <= self.max_items, "need 1 <= min_items <= max_items")
        check(self.eval_support_positives >= 1 and self.eval_users_per_scenario >= 1, "eval sizes must be >= 1")
        check(self.num_shards >= 1, "num_shards must be >= 1")
        check(self.compression in ("GZIP", ""), "compression must be 'GZIP' or ''")

    @classmethod
    def users_v1(cls, **overrides) -> TaskGenConfig:
        """Protocol ml1m-partial/users-v1 of TARGETS.md (3,420 users; 2,736 meta-train, 684 meta-test)."""
        base = dict(
            setting="user",
            split_mode="permutation",
            permutation_seed=20211101,
            n_train=2736,
            min_ratings=13,
            max_ratings=100,
            query_size=10,
        )
        return cls(**{**base, **overrides})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TaskGenConfig:
        d = dict(d or {})
        for name in ("test_keys", "themes", "splits"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)

    def meta_test_keys(self) -> set[str] | None:
        if self.split_mode != "list":
            return None
        keys = set(self.test_keys)
        if self.test_keys_file:
            with open(self.test_keys_file, encoding="utf-8") as f:
                keys |= {line.strip() for line in f if line.strip()}
        return keys


# --- decisions ------------------------------------------------------------------------------------------------
META_TRAIN, META_VALID, META_TEST = 0, 1, 2
SPLIT_NAMES = T.SPLITS  # index = decision code
TOO_FEW, TOO_MANY = -1, -2
REASONS = {
    ("user", TOO_FEW): "user_too_few_ratings",
    ("user", TOO_MANY): "user_too_many_ratings",
    ("scenario", TOO_FEW): "scenario_too_few_items",
    ("scenario", TOO_MANY): "scenario_too_many_items",
}
TRIMMED = "user_trimmed"
NO_SCENARIO = "no_scenario"
OUT_OF_BOUNDS = "scenario_out_of_bounds"  # themes: every theme of the item is out of the item-count bounds


def to_binary(values: Any) -> pa.Array:
    """Any string-like array/iterable -> pyarrow large_binary array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.large_binary())
    return values if pa.types.is_large_binary(values.type) else values.cast(pa.large_binary())


def key_strings(keys: pa.Array) -> list[str]:
    return [k.decode("utf-8", errors="replace") for k in to_binary(keys).to_pylist()]


def integer_values(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(is_integer mask, int64 values with 0 where not an integer) for string keys."""
    s = to_binary(keys).cast(pa.large_string())
    ok = np.asarray(
        pc.fill_null(pc.match_substring_regex(s, r"^[0-9]{1,18}$"), False).to_numpy(zero_copy_only=False), dtype=bool
    )
    values = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values[ok] = pc.cast(s.filter(pa.array(ok)), pa.int64()).to_numpy()
    return ok, values


def canonical_order(keys: pa.Array) -> np.ndarray:
    """Indices sorting keys numerically when integers (these first), the rest by bytes."""
    ok, values = integer_values(keys)
    table = pa.table({"nonint": pa.array(~ok), "value": pa.array(values), "key": to_binary(keys)})
    return pc.sort_indices(
        table, sort_keys=[("nonint", "ascending"), ("value", "ascending"), ("key", "ascending")]
    ).to_numpy()


def task_seeds(keys: pa.Array) -> list[int]:
    """Per-task rng seed: the integer id itself, else the stable_hash64 hash of the key."""
    ok, values = integer_values(keys)
    hashes = common.stable_hash64(keys)
    return [int(v) if o else int(h) for o, v, h in zip(ok, values, hashes)]


def protocol_permutation(n: int, seed: int) -> np.ndarray:
    """users-v1: the order in which a task's canonically sorted rows are read."""
    return np.random.default_rng(seed).permutation(n)


def assign_splits(keys: pa.Array, config: TaskGenConfig) -> np.ndarray:
    """Decision code (META_TRAIN / META_VALID / META_TEST) of every kept task key."""
    n = len(keys)
    out = np.full(n, META_TRAIN, dtype=np.int8)
    if n == 0:
        return out
    if config.split_mode == "hash":
        out[common.unit_interval(common.stable_hash64(keys, config.salt)) < config.test_fraction] = META_TEST
    elif config.split_mode == "list":
        wanted = config.meta_test_keys() or set()
        out[np.isin(np.asarray(key_strings(keys), dtype=object), np.asarray(sorted(wanted), dtype=object))] = META_TEST
    else:
        order = canonical_order(keys)
        perm = np.random.default_rng(config.permutation_seed).permutation(n)
        n_train = config.n_train if config.n_train is not None else int(round((1.0 - config.test_fraction) * n))
        if n_train > n:
            raise ValueError(f"n_train={n_train} but only {n} tasks are kept")
        ranked = order[perm]  # the permuted sorted keys, as positions into ``keys``
        out[ranked[n_train:]] = META_TEST
    if config.valid_fraction > 0:
        u = common.unit_interval(common.stable_hash64(keys, config.salt + "/valid"))
        out[(out == META_TRAIN) & (u < config.valid_fraction)] = META_VALID
    return out


# --- side tables ------------------------------------------------------------------------------------------------
def ragged_take(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a ragged array (values, offsets) -> (values, lengths)."""
    idx = np.asarray(idx, dtype=np.int64)
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return values[:0], lengths
    out_starts = np.cumsum(lengths) - lengths
    gather = np.repeat(starts - out_starts, lengths) + np.arange(total, dtype=np.int64)
    return values[gather], lengths


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


@dataclasses.dataclass
class FeatureTable:
    """Features of distinct users or items, keyed by the hash of their raw id.

    ``counts`` is the number of (valid) interaction rows seen for each key. After
    :meth:`dedup`, rows are unique and sorted by hash, so :meth:`lookup` is a binary search.
    """

    hashes: np.ndarray  # uint64
    keys: pa.Array  # large_binary raw ids
    categorical: dict[str, np.ndarray]
    multi: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (values, offsets)
    counts: np.ndarray  # int64
    domains: pa.Array | None = None  # large_binary domain per key (multi-domain data), else None

    def __len__(self) -> int:
        return len(self.hashes)

    def take(self, idx: np.ndarray) -> FeatureTable:
        idx = np.asarray(idx, dtype=np.int64)
        multi = {}
        for name, (values, offsets) in self.multi.items():
            v, lengths = ragged_take(values, offsets, idx)
            multi[name] = (v, offsets_from_lengths(lengths))
        return FeatureTable(
            self.hashes[idx],
            self.keys.take(pa.array(idx)),
            {k: v[idx] for k, v in self.categorical.items()},
            multi,
            self.counts[idx],
            None if self.domains is None else self.domains.take(pa.array(idx)),
        )

    @staticmethod
    def concat(tables: Sequence[FeatureTable]) -> FeatureTable:
        tables = [t for t in tables if t is not None]
        if len(tables) == 1:
            return tables[0]
        first = tables[0]
        multi = {}
        for name in first.multi:
            values = np.concatenate([t.multi[name][0] for t in tables])
            lengths = np.concatenate([np.diff(t.multi[name][1]) for t in tables])
            multi[name] = (values, offsets_from_lengths(lengths))
        domains = None if first.domains is None else pa.concat_arrays([t.domains for t in tables])
        return FeatureTable(
            np.concatenate([t.hashes for t in tables]),
            pa.concat_arrays([t.keys for t in tables]),
            {k: np.concatenate([t.categorical[k] for t in tables]) for k in first.categorical},
            multi,
            np.concatenate([t.counts for t in tables]),
            domains,
        )

    def dedup(self, what: str = "key") -> FeatureTable:
        """Unique keys sorted by hash; first occurrence's features; counts summed."""
        order = np.argsort(self.hashes, kind="stable")
        h = self.hashes[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        keep = order[first]
        if not first.all():  # duplicates: same hash must mean same key
            dup = np.flatnonzero(~first)
            a = self.keys.take(pa.array(order[dup]))
            b = self.keys.take(pa.array(order[dup - 1]))
            clash = np.flatnonzero(~np.asarray(pc.equal(a, b).to_numpy(zero_copy_only=False), dtype=bool))
            if len(clash):
                raise ValueError(
                    f"{what} hash collision: {a[int(clash[0])].as_py()!r} and {b[int(clash[0])].as_py()!r} have the "
                    "same 64-bit hash; rename one of them"
                )
        group = np.cumsum(first) - 1
        counts = np.bincount(group, weights=self.counts[order], minlength=int(first.sum())).astype(np.int64)
        out = self.take(keep)
        out.counts = counts
        return out

    def lookup(self, hashes: np.ndarray, what: str = "key") -> np.ndarray:
        """Row of every hash (the table must be deduplicated); raises if one is absent."""
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, max(len(self.hashes) - 1, 0))
        if len(hashes) and (len(self.hashes) == 0 or not np.array_equal(self.hashes[pos], hashes)):
            raise ValueError(f"internal error: {what} seen in the rows but missing from the merged table")
        return pos

    def max_lengths(self) -> dict[str, int]:
        return {name: int(np.diff(offsets).max(initial=0)) for name, (_, offsets) in self.multi.items()}


class FeatureTableCombine:
    """Beam CombineFn merging per-batch FeatureTables (compacts as it goes to bound memory)."""

    def __init__(self, what: str, compact_rows: int = 200_000):
        self.what = what
        self.compact_rows = compact_rows

    def create_accumulator(self):
        return []

    def _compact(self, acc):
        if len(acc) > 1 and sum(len(t) for t in acc) > self.compact_rows:
            return [FeatureTable.concat(acc).dedup(self.what)]
        return acc

    def add_input(self, acc, table):
        acc.append(table)
        return self._compact(acc)

    def merge_accumulators(self, accs):
        return self._compact([t for acc in accs for t in acc])

    def extract_output(self, acc):
        if not acc:
            return None
        return FeatureTable.concat(acc).dedup(self.what)


# --- themes ------------------------------------------------------------------------------------------------------
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


# --- plan: which tasks are kept and where they go ----------------------------------------------------------------
@dataclasses.dataclass
class TaskPlan:
    """Per task (sorted by hash): key, rows, distinct items, decision (split code, or a TOO_* code)."""

    hashes: np.ndarray
    keys: pa.Array
    n_rows: np.ndarray
    n_items: np.ndarray
    decision: np.ndarray  # int8
    row_stats: dict  # row-level accounting decided here (themes)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, max(len(self.hashes) - 1, 0))
        if len(hashes) and (len(self.hashes) == 0 or not np.array_equal(self.hashes[pos], hashes)):
            raise ValueError("internal error: a task seen in the rows is missing from the plan")
        return pos

    def summary(self, setting: str) -> dict:
        out = {"tasks_seen": int(len(self.hashes))}
        for code, name in enumerate(SPLIT_NAMES):
            out[f"tasks_{name}"] = int((self.decision == code).sum())
        for (s, code), reason in REASONS.items():
            if s == setting:
                out[f"tasks_{reason}"] = int((self.decision == code).sum())
        return out


def make_plan(
    hashes: np.ndarray,
    keys: pa.Array,
    n_rows: np.ndarray,
    n_items: np.ndarray,
    config: TaskGenConfig,
    row_stats: dict | None = None,
) -> TaskPlan:
    """Filters tasks by size and assigns the kept ones to meta-train / meta-valid / meta-test."""
    order = np.argsort(hashes, kind="stable")
    hashes, n_rows, n_items = hashes[order], n_rows[order], n_items[order]
    keys = to_binary(keys).take(pa.array(order))
    size = n_rows if config.setting == "user" else n_items
    lo, hi = (
        (config.min_ratings, config.max_ratings) if config.setting == "user" else (config.min_items, config.max_items)
    )
    decision = np.full(len(hashes), META_TRAIN, dtype=np.int8)
    decision[size < lo] = TOO_FEW
    decision[size > hi] = TOO_MANY
    kept = np.flatnonzero(decision == META_TRAIN)
    decision[kept] = assign_splits(keys.take(pa.array(kept)), config)
    return TaskPlan(hashes, keys, n_rows.astype(np.int64), n_items.astype(np.int64), decision, row_stats or {})


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


# --- shard rows -----------------------------------------------------------------------------------------------------
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


# --- records --------------------------------------------------------------------------------------------------------
def _list_array(values: np.ndarray | pa.Array, offsets: np.ndarray) -> pa.LargeListArray:
    values = values if isinstance(values, pa.Array) else pa.array(values)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def _one_per_row(values: Sequence[bytes]) -> pa.LargeListArray:
    return _list_array(pa.array(list(values), pa.large_binary()), np.arange(len(values) + 1, dtype=np.int64))


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

    def record_batch(self, setting: str, users: FeatureTable, items: FeatureTable, specs: Sequence) -> pa.RecordBatch:
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
        }
        for spec in specs:
            table, rows, off = (
                (users, self.user_rows, self.user_off)
                if spec.side == "user"
                else (items, self.item_rows, self.item_off)
            )
            key = T.table_key(spec.side, spec.name)
            if spec.kind == "multi":
                values, offsets = table.multi[spec.name]
                flat, lengths = ragged_take(values, offsets, rows)
                value_off = offsets_from_lengths(lengths)[off]
                cols[key] = _list_array(flat.astype(np.int64), value_off)
                cols[T.lengths_key(spec.side, spec.name)] = _list_array(lengths.astype(np.int64), off)
            else:
                cols[key] = _list_array(table.categorical[spec.name][rows].astype(np.int64), off)
        return pa.RecordBatch.from_arrays(list(cols.values()), list(cols))


def segments(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [len(sorted_keys)]]).astype(np.int64)
    return starts, ends


def build_user_tasks(rows: ShardRows, plan: TaskPlan, users: FeatureTable, items: FeatureTable, config: TaskGenConfig):
    """User-setting tasks of one shard.

    Returns ({split: TaskBlock}, counters, index) where index lists (key, split, rows, support, query).
    """
    counters: dict = {"rows_written": {}, "filtered": {}, "tasks": {}}
    decision = plan.decision[plan.lookup(rows.task)]
    for code in (TOO_FEW, TOO_MANY):
        counters["filtered"][REASONS[("user", code)]] = int((decision == code).sum())
    keep = np.flatnonzero(decision >= 0)
    rows, decision = rows.take(keep), decision[keep]
    user_row = users.lookup(rows.user, "user")
    item_row = items.lookup(rows.item, "item")
    # canonical order inside a task: items sorted by (is-not-integer, integer value, key)
    item_rank = item_rank_of(items)
    # label breaks ties between repeated (user, item) rows, so the order never depends on arrival order
    order = np.lexsort((rows.label, item_rank[item_row], user_row))
    user_row, item_row, label, decision = user_row[order], item_row[order], rows.label[order], decision[order]
    starts, ends = segments(user_row)
    task_users = user_row[starts]
    seeds = task_seeds(users.keys.take(pa.array(task_users)))
    # protocol order + trimming + roles, one small numpy call per task
    perm_parts, role_parts, lengths = [], [], []
    trimmed = 0
    for t, (s, e) in enumerate(zip(starts, ends)):
        n = int(e - s)
        perm = protocol_permutation(n, seeds[t])
        if config.trim_to is not None and n > config.trim_to:
            trimmed += n - config.trim_to
            perm = perm[: config.trim_to]
        k = len(perm)
        role = np.full(k, T.ROLE_POOL, dtype=np.int8)
        if decision[s] != META_TRAIN:
            role[: k - config.query_size] = T.ROLE_SUPPORT
            role[k - config.query_size :] = T.ROLE_QUERY
        perm_parts.append(perm + s)
        role_parts.append(role)
        lengths.append(k)
    counters["filtered"][TRIMMED] = trimmed
    if not len(starts):
        return {}, counters, []
    flat = np.concatenate(perm_parts)
    roles = np.concatenate(role_parts)
    lengths = np.asarray(lengths, dtype=np.int64)
    task_split = decision[starts]
    row_split = np.repeat(task_split, lengths)
    blocks, index = {}, []
    key_list = users.keys.take(pa.array(task_users)).to_pylist()
    for code, name in enumerate(SPLIT_NAMES):
        tsel = np.flatnonzero(task_split == code)
        if not len(tsel):
            continue
        rsel = np.flatnonzero(row_split == code)
        sel_rows = flat[rsel]
        lens = lengths[tsel]
        off = offsets_from_lengths(lens)
        row_local = np.arange(len(sel_rows), dtype=np.int64) - np.repeat(off[:-1], lens)
        blocks[name] = TaskBlock(
            keys=[key_list[t] for t in tsel],
            split=name,
            row_off=off,
            row_user=np.zeros(len(sel_rows), dtype=np.int64),
            row_item=row_local,
            label=label[sel_rows],
            role=roles[rsel],
            user_off=np.arange(len(tsel) + 1, dtype=np.int64),
            user_rows=task_users[tsel],
            item_off=off,
            item_rows=item_row[sel_rows],
        )
        counters["rows_written"][name] = int(len(sel_rows))
        counters["tasks"][name] = int(len(tsel))
        n_query = np.zeros(len(tsel), dtype=np.int64) if code == META_TRAIN else np.full(len(tsel), config.query_size)
        for t, q in zip(tsel, n_query):
            index.append(
                (
                    key_list[t].decode("utf-8", errors="replace"),
                    name,
                    int(lengths[t]),
                    int(lengths[t] - q),
                    int(q),
                    1,
                    int(lengths[t]),
                )
            )
    return blocks, counters, index


def item_rank_of(items: FeatureTable) -> np.ndarray:
    """Rank of every item of the table in canonical key order (cached on the table)."""
    cached = getattr(items, "_rank", None)
    if cached is None or len(cached) != len(items):
        rank = np.empty(len(items), dtype=np.int64)
        rank[canonical_order(items.keys)] = np.arange(len(items), dtype=np.int64)
        items._rank = cached = rank
    return cached


def _sample_negatives(rng: np.random.Generator, users_of_pos: np.ndarray, m: int, pos_keys: np.ndarray) -> np.ndarray:
    """One candidate per positive, drawn uniformly among the items its user did not interact with.

    ``pos_keys`` are the sorted, distinct ``user * m + item`` codes of the scenario's interactions.
    Exact (no rejection): with a user's items p_0 < p_1 < ..., the r-th free item is
    ``r + #{j : p_j - j <= r}``. A user who interacted with every candidate gets a random one.
    """
    first = np.searchsorted(pos_keys, (pos_keys // m) * m, side="left")
    adjusted = pos_keys - (np.arange(len(pos_keys)) - first)
    lo = np.searchsorted(pos_keys, users_of_pos * m, side="left")
    hi = np.searchsorted(pos_keys, (users_of_pos + 1) * m, side="left")
    free = m - (hi - lo)
    r = np.floor(rng.random(len(users_of_pos)) * np.maximum(free, 1)).astype(np.int64)
    chosen = r + np.searchsorted(adjusted, users_of_pos * m + r, side="right") - lo
    return np.where(free > 0, chosen, rng.integers(0, m, len(users_of_pos)))


def build_scenario_tasks(
    rows: ShardRows, plan: TaskPlan, users: FeatureTable, items: FeatureTable, config: TaskGenConfig
):
    """Scenario-setting tasks of one shard (implicit feedback). Same return value as build_user_tasks."""
    counters: dict = {
        "rows_written": {},
        "filtered": {},
        "tasks": {},
        "negatives_written": {},
        "memberships_written": 0,
    }
    decision = plan.decision[plan.lookup(rows.task)]
    for code in (TOO_FEW, TOO_MANY):
        counters["filtered"][REASONS[("scenario", code)]] = int((decision == code).sum())
    keep = np.flatnonzero(decision >= 0)
    rows, decision = rows.take(keep), decision[keep]
    counters["memberships_written"] = int(len(rows))
    user_row = users.lookup(rows.user, "user")
    item_row = items.lookup(rows.item, "item")
    item_rank = item_rank_of(items)
    order = np.lexsort((rows.label, item_rank[item_row], user_row, rows.task))
    task, user_row, item_row, decision = rows.task[order], user_row[order], item_row[order], decision[order]
    starts, ends = segments(task)
    plan_pos = plan.lookup(task[starts]) if len(starts) else np.zeros(0, np.int64)
    parts: dict[str, list] = {name: [] for name in SPLIT_NAMES}
    index = []
    for t, (s, e) in enumerate(zip(starts, ends)):
        key = plan.keys[int(plan_pos[t])].as_py()
        split = SPLIT_NAMES[int(decision[s])]
        u_rows, i_rows = user_row[s:e], item_row[s:e]
        uniq_items, item_local = np.unique(i_rows, return_inverse=True)
        canon = np.argsort(item_rank[uniq_items], kind="stable")  # candidates in canonical item order
        cand = uniq_items[canon]
        remap = np.empty(len(canon), dtype=np.int64)
        remap[canon] = np.arange(len(canon), dtype=np.int64)
        item_local = remap[item_local]
        task_users, user_local = np.unique(u_rows, return_inverse=True)
        n, m = len(u_rows), len(cand)
        label = np.ones(n, dtype=np.float32)
        role = np.full(n, T.ROLE_POOL, dtype=np.int8)
        neg_user = np.zeros(0, np.int64)
        neg_item = np.zeros(0, np.int64)
        n_support = n_query = 0
        if split != "meta_train":
            rng = np.random.default_rng([config.seed, int(common.stable_hash64([key])[0])])
            pos_keys = np.unique(user_local.astype(np.int64) * m + item_local)
            per_user = np.bincount(user_local, minlength=len(task_users))
            # evaluation users: in seeded order, with enough positives, leaving enough support rows
            cand_users = rng.permutation(len(task_users))
            eligible = per_user[cand_users] >= config.min_eval_positives
            held = np.cumsum(np.where(eligible, per_user[cand_users], 0))
            # keep at least min(eval_support_positives, n // 2) interactions for the support pool
            allowed = eligible & (n - held >= min(config.eval_support_positives, n // 2))
            eval_users = cand_users[allowed][: config.eval_users_per_scenario]
            is_eval = np.zeros(len(task_users), dtype=bool)
            is_eval[eval_users] = True
            role[is_eval[user_local]] = T.ROLE_QUERY
            pool = np.flatnonzero(~is_eval[user_local])
            support = np.sort(rng.choice(pool, size=min(config.eval_support_positives, len(pool)), replace=False))
            role[support] = T.ROLE_SUPPORT
            neg_user = user_local[support].astype(np.int64)
            neg_item = _sample_negatives(rng, neg_user, m, pos_keys)
            n_support, n_query = 2 * len(support), int(is_eval[user_local].sum())
        # stored row order: support rows interleaved with their negatives, then the others
        if len(neg_user):
            support_rows = np.flatnonzero(role == T.ROLE_SUPPORT)
            other = np.flatnonzero(role != T.ROLE_SUPPORT)
            r_user = np.concatenate([np.stack([user_local[support_rows], neg_user], 1).reshape(-1), user_local[other]])
            r_item = np.concatenate([np.stack([item_local[support_rows], neg_item], 1).reshape(-1), item_local[other]])
            r_label = np.concatenate([np.tile(np.array([1.0, 0.0], np.float32), len(support_rows)), label[other]])
            r_role = np.concatenate([np.full(2 * len(support_rows), T.ROLE_SUPPORT, np.int8), role[other]])
        else:
            r_user, r_item, r_label, r_role = user_local, item_local, label, role
        parts[split].append((key, r_user, r_item, r_label, r_role, task_users, cand))
        counters["rows_written"][split] = counters["rows_written"].get(split, 0) + n
        counters["negatives_written"][split] = counters["negatives_written"].get(split, 0) + len(neg_user)
        counters["tasks"][split] = counters["tasks"].get(split, 0) + 1
        index.append((key.decode("utf-8", errors="replace"), split, n, n_support, n_query, len(task_users), m))
    blocks = {}
    for split, items_ in parts.items():
        if not items_:
            continue
        r_len = np.array([len(p[1]) for p in items_], dtype=np.int64)
        u_len = np.array([len(p[5]) for p in items_], dtype=np.int64)
        i_len = np.array([len(p[6]) for p in items_], dtype=np.int64)
        blocks[split] = TaskBlock(
            keys=[p[0] for p in items_],
            split=split,
            row_off=offsets_from_lengths(r_len),
            row_user=np.concatenate([p[1] for p in items_]),
            row_item=np.concatenate([p[2] for p in items_]),
            label=np.concatenate([p[3] for p in items_]),
            role=np.concatenate([p[4] for p in items_]),
            user_off=offsets_from_lengths(u_len),
            user_rows=np.concatenate([p[5] for p in items_]),
            item_off=offsets_from_lengths(i_len),
            item_rows=np.concatenate([p[6] for p in items_]),
        )
    return blocks, counters, index
