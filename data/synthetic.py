"""Synthetic MovieLens-format logs with planted cold-start structure (the embedded default data).

The generative model is documented in ``docs/synthetic_data.md``. In short:

* items belong to **themes** (the scenarios); a theme fixes the items' genres, decade, directors and
  actors, and has its own popularity curve over its items;
* users belong to latent **preference groups** that are independent of their features (gender,
  age, occupation, zip): a group is visible only through the user's ratings;
* a group prefers some themes (which items its users rate) and has a taste vector (how they rate
  them), so a model that reads a user's support set can infer the group and beat one that cannot.

Output is streamed per fixed-size chunk of users, so memory does not grow with the number of
ratings, and every chunk draws from its own seeded generator, so the same seed and sizes give
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.data.records import GENRES

AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)  # ML-1M's age codes
AGE_WEIGHTS = (0.04, 0.18, 0.35, 0.20, 0.09, 0.08, 0.06)
RATED = ("G", "PG", "PG-13", "R", "NC-17")
USERS_PER_CHUNK = 20_000  # fixed: part of the definition of the output for a given seed
START_TIME = 946_684_800  # 2000-01-01


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and strengths of the generative model. See docs/synthetic_data.md."""

    users: int = 3000
    items: int | None = None  # default: scales with users (see resolved_items)
    themes: int = 24
    groups: int = 8
    latent_dim: int = 8
    mean_ratings_per_user: float = 45.0  # median of the log-normal count
    min_ratings: int = 8
    max_ratings: int = 300
    taste_strength: float = 0.9  # weight of the group x item taste term in a rating
    theme_affinity: float = 1.2  # how strongly a group's theme preferences concentrate
    noise: float = 0.55  # std of rating noise before rounding
    seed: int = 0

    @classmethod
    def for_ratings(cls, ratings: int, **kw) -> SyntheticConfig:
        """A config whose expected number of ratings is about ``ratings``."""
        base = cls(**kw)
        per_user = _expected_count(base)
        return dataclasses.replace(base, users=max(50, int(round(ratings / per_user))))

    def resolved_items(self) -> int:
        return self.items or int(min(60_000, max(400, 8 * math.sqrt(self.users) * 6)))


def _expected_count(cfg: SyntheticConfig) -> float:
    rng = np.random.default_rng(12345)
    return float(_rating_counts(rng, cfg, 200_000).mean())


def _rating_counts(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> np.ndarray:
    counts = np.exp(rng.normal(math.log(cfg.mean_ratings_per_user), 0.65, size=n))
    return np.clip(np.round(counts), cfg.min_ratings, cfg.max_ratings).astype(np.int64)


@dataclasses.dataclass
class _World:
    """The item side and the group side of the generative model (small; held in memory)."""

    theme_of_item: np.ndarray  # [items] theme index
    item_vec: np.ndarray  # [items, d]
    item_bias: np.ndarray  # [items]
    theme_items: list[np.ndarray]  # item indices of each theme
    theme_cdf: list[np.ndarray]  # popularity CDF over each theme's items
    group_vec: np.ndarray  # [groups, d]
    group_theme_cdf: np.ndarray  # [groups, themes]
    group_taste_mean: np.ndarray  # [groups] expected taste term over the items a group rates
    theme_names: list[str]


def _build_world(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[_World, dict]:
    n_items, d, n_themes = cfg.resolved_items(), cfg.latent_dim, cfg.themes
    theme_vec = rng.normal(size=(n_themes, d))
    theme_share = rng.dirichlet(np.full(n_themes, 3.0))
    theme_of_item = np.sort(rng.choice(n_themes, size=n_items, p=theme_share))
    rng.shuffle(theme_of_item)
    for t in range(n_themes):  # every theme gets at least a handful of items
        if (theme_of_item == t).sum() < 5:
            theme_of_item[rng.choice(n_items, 5, replace=False)] = t
    item_vec = theme_vec[theme_of_item] + 0.6 * rng.normal(size=(n_items, d))
    item_bias = rng.normal(0.0, 0.35, size=n_items)

    theme_items, theme_cdf = [], []
    for t in range(n_themes):
        members = np.flatnonzero(theme_of_item == t)
        # theme-specific popularity: a Zipf-like curve over a random order of the theme's items
        pop = 1.0 / np.arange(1, len(members) + 1) ** rng.uniform(0.7, 1.1)
        pop = pop[rng.permutation(len(members))]
        theme_items.append(members)
        theme_cdf.append(np.cumsum(pop) / pop.sum())

    group_vec = rng.normal(size=(cfg.groups, d))
    logits = cfg.theme_affinity * (group_vec @ theme_vec.T) / math.sqrt(d) + 0.3 * rng.normal(
        size=(cfg.groups, n_themes)
    )
    logits += np.log(theme_share)[None, :]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)

    # Centre the taste term per group: users rate what their group likes, which would otherwise
    # push every rating up; the spread within a group is the signal, not the offset.
    item_pop = np.zeros(n_items)
    for members, cdf in zip(theme_items, theme_cdf):
        item_pop[members] = np.diff(cdf, prepend=0.0)
    taste = (group_vec @ item_vec.T) / math.sqrt(d)  # [groups, items]
    group_taste_mean = np.array([(probs[g][theme_of_item] * item_pop * taste[g]).sum() for g in range(cfg.groups)])

    primary = rng.choice(len(GENRES), size=n_themes)
    secondary = (primary + 1 + rng.choice(len(GENRES) - 1, size=n_themes)) % len(GENRES)
    decade = rng.choice(np.arange(1940, 2010, 10), size=n_themes, p=_decade_weights())
    theme_names = [f"theme-{t:02d}-{GENRES[primary[t]].replace(chr(39), '')}" for t in range(n_themes)]
    meta = {"primary": primary, "secondary": secondary, "decade": decade}
    world = _World(
        theme_of_item,
        item_vec,
        item_bias,
        theme_items,
        theme_cdf,
        group_vec,
        np.cumsum(probs, axis=1),
        group_taste_mean,
        theme_names,
    )
    return world, meta


def _decade_weights() -> np.ndarray:
    w = np.array([1, 1, 2, 3, 5, 9, 12], dtype=float)
    return w / w.sum()


def _write_items(out: Path, cfg: SyntheticConfig, world: _World, meta: dict, rng: np.random.Generator) -> None:
    n_items = len(world.theme_of_item)
    n_themes = cfg.themes
    directors = [[f"Director {t:02d}-{k:02d}" for k in range(8)] for t in range(n_themes)]
    actors = [[f"Actor {t:02d}-{k:02d}" for k in range(25)] for t in range(n_themes)]
    rated_p = rng.dirichlet(np.full(len(RATED), 1.0), size=n_themes)
    with (
        open(out / "movies.dat", "w", encoding="utf-8", newline="\n") as movies,
        open(out / "movies_extrainfos.dat", "w", encoding="utf-8", newline="\n") as extra,
        open(out / "item_themes.dat", "w", encoding="utf-8", newline="\n") as themes,
    ):
        for i in range(n_items):
            t = int(world.theme_of_item[i])
            genres = [GENRES[meta["primary"][t]]]
            if rng.random() < 0.5:
                genres.append(GENRES[meta["secondary"][t]])
            if rng.random() < 0.1:
                other = GENRES[rng.integers(len(GENRES))]
                if other not in genres:
                    genres.append(other)
            year = int(meta["decade"][t] + rng.integers(10))
            title = f"Synthetic Movie {i + 1}"
            item_id = i + 1
            movies.write(f"{item_id}::{title} ({year})::{'|'.join(genres)}\n")
            cast = rng.choice(actors[t], size=3, replace=False)
            fields = [
                str(item_id),
                title,
                str(year),
                RATED[rng.choice(len(RATED), p=rated_p[t])],
                f"01 Jan {year}",
                ", ".join(genres),
                str(rng.choice(directors[t])),
                "Synthetic Writer",
                ", ".join(cast),
                "N/A",
                "N/A",
            ]
            extra.write("::".join(fields) + "\n")
            themes.write(f"{item_id}::{world.theme_names[t]}\n")


def _sample_chunk(cfg: SyntheticConfig, world: _World, rng: np.random.Generator, first_user: int, n_users: int):
    """Draws users [first_user, first_user + n_users) and their ratings; returns columns."""
    d = cfg.latent_dim
    group = rng.integers(cfg.groups, size=n_users)
    taste = world.group_vec[group] + 0.35 * rng.normal(size=(n_users, d))
    user_bias = rng.normal(0.0, 0.3, size=n_users)
    counts = _rating_counts(rng, cfg, n_users)
    n_items = len(world.theme_of_item)
    counts = np.minimum(counts, n_items // 2)

    # Over-draw (theme by group preference, item by theme popularity), then keep each user's
    # first `count` distinct items.
    draws = (counts * 1.6 + 8).astype(np.int64)
    owner = np.repeat(np.arange(n_users), draws)
    u = rng.random(len(owner))
    owner_group = group[owner]
    theme = np.empty(len(owner), dtype=np.int64)
    for g in range(cfg.groups):
        sel = owner_group == g
        theme[sel] = np.searchsorted(world.group_theme_cdf[g], u[sel], side="right")
    theme = np.minimum(theme, cfg.themes - 1)
    item = np.empty(len(owner), dtype=np.int64)
    v = rng.random(len(owner))
    for t in range(cfg.themes):
        sel = theme == t
        if sel.any():
            pos = np.searchsorted(world.theme_cdf[t], v[sel])
            item[sel] = world.theme_items[t][np.minimum(pos, len(world.theme_items[t]) - 1)]
    order = np.lexsort((np.arange(len(owner)), item, owner))
    owner_s, item_s = owner[order], item[order]
    first = np.ones(len(owner_s), dtype=bool)
    first[1:] = (owner_s[1:] != owner_s[:-1]) | (item_s[1:] != item_s[:-1])
    keep_idx = order[first]  # first draw of each distinct (user, item), in draw order after re-sort
    keep_idx.sort()
    owner_k, item_k = owner[keep_idx], item[keep_idx]
    rank = np.arange(len(owner_k)) - np.searchsorted(owner_k, owner_k, side="left")
    keep = rank < counts[owner_k]
    owner_k, item_k = owner_k[keep], item_k[keep]

    score = (
        3.55
        + user_bias[owner_k]
        + world.item_bias[item_k]
        + cfg.taste_strength
        * (
            np.einsum("nd,nd->n", taste[owner_k], world.item_vec[item_k]) / math.sqrt(d)
            - world.group_taste_mean[group[owner_k]]
        )
        + cfg.noise * rng.normal(size=len(owner_k))
    )
    rating = np.clip(np.rint(score), 1, 5).astype(np.int64)
    start = START_TIME + rng.integers(0, 2 * 365 * 86400, size=n_users)
    gaps = rng.exponential(3600.0, size=len(owner_k)).astype(np.int64) + 1
    csum = np.cumsum(gaps)
    offsets = csum - np.concatenate([[0], csum])[np.searchsorted(owner_k, owner_k, side="left")]
    timestamp = start[owner_k] + offsets

    users = {
        "user": np.arange(first_user, first_user + n_users) + 1,
        "gender": rng.choice(np.array(["M", "F"]), size=n_users, p=[0.71, 0.29]),
        "age": rng.choice(np.array(AGE_BUCKETS), size=n_users, p=AGE_WEIGHTS),
        "occupation": rng.integers(0, 21, size=n_users),
        "zip": rng.integers(0, 100_000, size=n_users),
        "group": group,
    }
    ratings = {"user": owner_k + first_user + 1, "item": item_k + 1, "rating": rating, "timestamp": timestamp}
    return users, ratings


def _lines(*columns, sep: str = "::") -> bytes:
    """Joins columns into '\\n'-terminated lines as bytes, without a Python object per row."""
    strings = [pc.cast(c if isinstance(c, pa.Array) else pa.array(c), pa.string()) for c in columns]
    if not len(strings[0]):
        return b""
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*strings, sep), pa.scalar(""), "\n")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def generate(dest: str | Path, cfg: SyntheticConfig, progress: TextIO | None = sys.stderr) -> dict:
    """Writes a synthetic dataset into ``dest`` (created). Returns a summary dict."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng([cfg.seed, 0])
    world, meta = _build_world(cfg, rng)
    _write_items(out, cfg, world, meta, rng)
    n_ratings = 0
    n_chunks = -(-cfg.users // USERS_PER_CHUNK)
    with (
        open(out / "ratings.dat", "wb") as rf,
        open(out / "users.dat", "wb") as uf,
        open(out / "user_groups.dat", "wb") as gf,
    ):
        for c in range(n_chunks):
            first = c * USERS_PER_CHUNK
            n = min(USERS_PER_CHUNK, cfg.users - first)
            users, ratings = _sample_chunk(cfg, world, np.random.default_rng([cfg.seed, 1, c]), first, n)
            zips = pc.utf8_lpad(pc.cast(pa.array(users["zip"]), pa.string()), 5, "0")
            uf.write(_lines(users["user"], users["gender"], users["age"], users["occupation"], zips))
            gf.write(_lines(users["user"], users["group"]))
            rf.write(_lines(ratings["user"], ratings["item"], ratings["rating"], ratings["timestamp"]))
            n_ratings += len(ratings["user"])
            if progress is not None and (n_chunks > 1):
                print(f"  synthetic: users {first + n:,}/{cfg.users:,}, ratings {n_ratings:,}", file=progress)
    summary = {
        "config": dataclasses.asdict(cfg),
        "items": int(len(world.theme_of_item)),
        "ratings": int(n_ratings),
        "themes": world.theme_names,
        "generator": "cmml.data.synthetic v1",
    }
    (out / "synthetic.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if progress is not None:
        print(
            f"synthetic: {cfg.users:,} users, {summary['items']:,} items, {n_ratings:,} ratings "
            f"in {out} ({time.time() - t0:.1f} s)",
            file=progress,
        )
    return summary
