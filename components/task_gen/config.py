"""TaskGen's configuration: what tasks are built and how they are split (:class:`TaskGenConfig`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

SETTINGS = ("user", "scenario")
SPLIT_MODES = ("hash", "list", "permutation")
SCENARIO_SOURCES = ("auto", "column", "themes")
THEME_KINDS = ("genre", "genre_decade", "genre_pair", "director", "actor", "writer", "rated", "tag")


@dataclasses.dataclass(frozen=True)
class TaskGenConfig:
    """What TaskGen builds (defaults: the project specification of TaskGen).

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
        """Protocol ml1m-partial/users-v1 of the reference figures (3,420 users; 2,736 meta-train, 684 meta-test)."""
        base = {
            "setting": "user",
            "split_mode": "permutation",
            "permutation_seed": 20211101,
            "n_train": 2736,
            "min_ratings": 13,
            "max_ratings": 100,
            "query_size": 10,
        }
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
