"""Synthetic generator: determinism, MovieLens format, and recoverable planted structure."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.compute as pc

from cmml.data import open_dataset, synthetic
from cmml.data import records as R


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_byte_identical(tmp_path):
    cfg = synthetic.SyntheticConfig(users=700, seed=3)
    synthetic.generate(tmp_path / "a", cfg, progress=None)
    synthetic.generate(tmp_path / "b", cfg, progress=None)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert set(a) == {
        "ratings.dat",
        "users.dat",
        "movies.dat",
        "movies_extrainfos.dat",
        "item_themes.dat",
        "user_groups.dat",
        "synthetic.json",
    }
    assert a == b
    synthetic.generate(tmp_path / "c", synthetic.SyntheticConfig(users=700, seed=4), progress=None)
    assert _digests(tmp_path / "c")["ratings.dat"] != a["ratings.dat"]


def test_chunks_are_independent_of_total_size(tmp_path, monkeypatch):
    """With the same item catalogue, the first chunks are the same whatever the total: outputs nest."""
    monkeypatch.setattr(synthetic, "USERS_PER_CHUNK", 100)
    synthetic.generate(tmp_path / "small", synthetic.SyntheticConfig(users=200, items=500, seed=5), progress=None)
    synthetic.generate(tmp_path / "big", synthetic.SyntheticConfig(users=350, items=500, seed=5), progress=None)
    small = (tmp_path / "small" / "ratings.dat").read_text()
    big = (tmp_path / "big" / "ratings.dat").read_text()
    assert big.startswith(small) and len(big) > len(small)


def test_files_read_back_as_movielens(synthetic_small):
    ds = open_dataset(synthetic_small)
    result = ds.read_interactions()
    assert result.stats.rows_rejected == 0
    t = result.table
    labels = t[R.LABEL].to_numpy()
    assert set(np.unique(labels)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    shares = np.bincount(labels.astype(int), minlength=6)[1:] / len(labels)
    assert shares.min() > 0.02 and shares.max() < 0.45  # a MovieLens-like spread, not all 5s
    users, _ = ds.read_users()
    items, _ = ds.read_items()
    assert users.num_rows == 1500
    assert items.num_rows == synthetic.SyntheticConfig(users=1500).resolved_items()
    assert all(len(g) >= 1 for g in items["genres"].to_pylist())
    assert items["rated"].null_count == 0 and items["directors"].null_count == 0
    # user/item pairs are unique
    pairs = pc.binary_join_element_wise(t[R.USER_ID], t[R.ITEM_ID], ":")
    assert len(pc.unique(pairs)) == t.num_rows


def _rating_matrix(t, n_users, n_items):
    u = np.asarray(t[R.USER_ID].to_numpy(), dtype=np.int64) - 1
    i = np.asarray(t[R.ITEM_ID].to_numpy(), dtype=np.int64) - 1
    m = np.zeros((n_users, n_items))
    m[u, i] = t[R.LABEL].to_numpy()
    return m


def test_latent_groups_recoverable_from_ratings_not_features(synthetic_small):
    ds = open_dataset(synthetic_small)
    t = ds.read_interactions().table
    groups = ds.latent_groups()
    n_users = len(groups)
    n_items = int(max(map(int, pc.unique(t[R.ITEM_ID]).to_pylist())))
    g = np.array([groups[str(k + 1)] for k in range(n_users)])
    m = _rating_matrix(t, n_users, n_items)
    rated = m > 0
    # centre each user's ratings so that similarity reflects taste, not leniency
    means = np.where(rated.any(1), m.sum(1) / np.maximum(rated.sum(1), 1), 0)
    centred = np.where(rated, m - means[:, None], 0.0)
    norms = np.linalg.norm(centred, axis=1)
    x = centred / np.maximum(norms, 1e-9)[:, None]
    sim = x @ x.T
    same = g[:, None] == g[None, :]
    off_diag = ~np.eye(n_users, dtype=bool)
    within, between = sim[same & off_diag].mean(), sim[~same].mean()
    print(f"centred cosine within groups {within:.3f}, between {between:.3f}")
    assert within > between + 0.02, (within, between)
    # which themes a user rates also reveals the group
    item_theme = {}
    for line in (synthetic_small / "item_themes.dat").read_text().splitlines():
        k, theme = line.split("::")
        item_theme[int(k) - 1] = theme
    themes = sorted(set(item_theme.values()))
    tidx = np.array([themes.index(item_theme[k]) for k in range(n_items)])
    profile = np.zeros((n_users, len(themes)))
    np.add.at(profile, (np.nonzero(rated)[0], tidx[np.nonzero(rated)[1]]), 1.0)
    profile /= profile.sum(1, keepdims=True)
    centroids = np.stack([profile[g == k].mean(0) for k in range(g.max() + 1)])
    nearest = np.argmin(((profile[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    print(f"nearest theme-profile centroid recovers the group for {(nearest == g).mean():.0%} of users")
    assert (nearest == g).mean() > 0.5  # chance is 1/8
    # ...but not from the user features: gender shares barely differ between groups
    users, _ = ds.read_users()
    gender = {r["user_id"]: r["gender"] for r in users.to_pylist()}
    male = np.array([gender[str(k + 1)] == "M" for k in range(n_users)])
    shares = np.array([male[g == k].mean() for k in range(g.max() + 1)])
    assert shares.max() - shares.min() < 0.2


def test_themes_have_their_own_popularity(synthetic_small):
    """Each scenario's interactions concentrate on a few of its own items (ItemPop-able)."""
    t = open_dataset(synthetic_small).read_interactions().table
    scen = np.asarray(t[R.SCENARIO].to_numpy(), dtype=object)
    items = np.asarray(t[R.ITEM_ID].to_numpy(), dtype=object)
    for theme in np.unique(scen)[:5]:
        counts = np.sort(np.unique(items[scen == theme], return_counts=True)[1])[::-1]
        top = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
        assert top > 0.25, (theme, top)  # top 10% of the theme's items take > 25% of its interactions
