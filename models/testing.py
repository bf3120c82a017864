"""Small in-process episode sources for unit tests and micro-benchmarks of the model library.

The production path is TaskGen's records read through the tf.data builders in
``cmml.schemas.tasks``; these helpers only make tensors of the same layout without a pipeline.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, FeatureSpec, key

DEFAULT_SPECS = (
    FeatureSpec("user_id", "user", "categorical", 60),
    FeatureSpec("gender", "user", "categorical", 4),
    FeatureSpec("item_id", "item", "categorical", 80),
    FeatureSpec("genres", "item", "multi", 12, max_len=3),
)


def random_episodes(
    specs: Sequence[FeatureSpec] = DEFAULT_SPECS,
    tasks: int = 4,
    support: int = 8,
    query: int = 6,
    head: str = "rating",
    seed: int = 0,
    ragged: bool = True,
) -> dict[str, np.ndarray]:
    """Random but learnable episodes in the episodes.md layout.

    A task has a hidden preference vector; a row's label depends on it and on the item, so the
    support set is informative about the query labels. With ``ragged`` each task has a random
    number of valid rows, padded at the end. For ``head='ctr'`` query rows are (positive,
    negative) pairs.
    """
    rng = np.random.default_rng(seed)
    item_spec = next(s for s in specs if s.name == "item_id")
    item_vec = rng.normal(size=(item_spec.vocab_size, 4))
    out: dict[str, np.ndarray] = {}
    for part, size in ((SUPPORT, support), (QUERY, query)):
        n_valid = rng.integers(max(1, size // 2), size + 1, size=tasks) if ragged else np.full(tasks, size)
        if head == "ctr":
            n_valid = n_valid - n_valid % 2 if part == QUERY else n_valid
            n_valid = np.maximum(n_valid, 2)
        mask = (np.arange(size)[None, :] < n_valid[:, None]).astype(np.float32)
        out[key(part, MASK)] = mask
        for s in specs:
            shape = (tasks, size) if s.kind == "categorical" else (tasks, size, s.max_len)
            ids = rng.integers(1, s.vocab_size, size=shape)
            if s.kind == "multi":
                ids[..., 1:] *= rng.random(shape[:-1] + (s.max_len - 1,)) < 0.5  # variable-length lists
            ids = ids * (mask if s.kind == "categorical" else mask[..., None]).astype(np.int64)
            out[key(part, s.name)] = ids.astype(np.int64)
    pref = rng.normal(size=(tasks, 4))
    for part in (SUPPORT, QUERY):
        affinity = np.einsum("td,tsd->ts", pref, item_vec[out[key(part, "item_id")]])
        if head == "rating":
            label = np.clip(np.rint(3.0 + affinity), 1, 5)
        else:
            label = (np.arange(affinity.shape[1])[None, :] % 2 == 0).astype(np.float64)
            if part == SUPPORT:
                label = (affinity > 0).astype(np.float64)
        out[key(part, LABEL)] = (label * out[key(part, MASK)]).astype(np.float32)
    return out


class UserTasks:
    """User-specific tasks built in memory from a dataset's canonical tables (tests, micro-benchmarks).

    Users with ``min_ratings..max_ratings`` ratings are split by a seeded permutation into
    meta-train and meta-test. Features: user_id, gender, age, occupation (user side); item_id,
    genres, rated, directors (item side). The user-id vocabulary holds meta-train users only, so
    meta-test users fall into the OOV bucket, as they would in production.
    """

    def __init__(
        self,
        dataset,
        test_fraction: float = 0.2,
        min_ratings: int = 13,
        max_ratings: int = 100,
        query: int = 10,
        seed: int = 0,
    ):
        table = dataset.read_interactions().table
        users, _ = dataset.read_users()
        items, _ = dataset.read_items()
        uid = np.asarray(table["user_id"].to_numpy(), dtype=object)
        iid = np.asarray(table["item_id"].to_numpy(), dtype=object)
        label = table["label"].to_numpy().astype(np.float32)
        names, inverse, counts = np.unique(uid, return_inverse=True, return_counts=True)
        keep_user = (counts >= min_ratings) & (counts <= max_ratings)
        kept = np.flatnonzero(keep_user)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(kept)
        n_test = int(round(len(perm) * test_fraction))
        self.test_users, self.train_users = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        self.query = query

        def vocab(values):
            uniq = sorted({v for v in values if v is not None and v != ""})
            return {v: i + 1 for i, v in enumerate(uniq)}

        train_names = set(names[self.train_users])
        user_vocab = vocab(train_names)
        user_rows = {r["user_id"]: r for r in users.to_pylist()}
        item_rows = {r["item_id"]: r for r in items.to_pylist()}
        cat_user = {f: vocab(str(r[f]) for r in user_rows.values()) for f in ("gender", "age", "occupation")}
        item_vocab = vocab(iid)
        cat_item = {"rated": vocab(r["rated"] for r in item_rows.values())}
        multi_item = {f: vocab(v for r in item_rows.values() for v in (r[f] or [])) for f in ("genres", "directors")}
        self.max_len = {f: max(1, max((len(r[f] or []) for r in item_rows.values()), default=1)) for f in multi_item}

        # per-user feature rows, indexed by the user's position in `names`
        n_users = len(names)
        self.user_feats = {"user_id": np.array([user_vocab.get(n, len(user_vocab) + 1) for n in names], np.int64)}
        for f, voc in cat_user.items():
            self.user_feats[f] = np.array([voc.get(str(user_rows.get(n, {}).get(f)), 0) for n in names], np.int64)
        item_names, item_index = np.unique(iid, return_inverse=True)
        self.item_feats = {"item_id": np.array([item_vocab[n] for n in item_names], np.int64)}
        self.item_feats["rated"] = np.array(
            [cat_item["rated"].get(item_rows.get(n, {}).get("rated"), 0) for n in item_names], np.int64
        )
        for f, voc in multi_item.items():
            arr = np.zeros((len(item_names), self.max_len[f]), np.int64)
            for k, n in enumerate(item_names):
                vals = [voc[v] for v in (item_rows.get(n, {}).get(f) or [])][: self.max_len[f]]
                arr[k, : len(vals)] = vals
            self.item_feats[f] = arr
        self.specs = [
            FeatureSpec("user_id", "user", "categorical", len(user_vocab) + 2),
            *[FeatureSpec(f, "user", "categorical", len(v) + 1) for f, v in cat_user.items()],
            FeatureSpec("item_id", "item", "categorical", len(item_vocab) + 1),
            FeatureSpec("rated", "item", "categorical", len(cat_item["rated"]) + 1),
            *[FeatureSpec(f, "item", "multi", len(v) + 1, self.max_len[f]) for f, v in multi_item.items()],
        ]
        # each kept user's ratings, sorted by user
        order = np.argsort(inverse, kind="stable")
        self._starts = np.searchsorted(inverse[order], np.arange(n_users))
        self._counts = counts
        self._item_of = item_index[order]
        self._label_of = label[order]
        self.max_support = int(counts[kept].max()) - query

    def episodes(
        self, users: np.ndarray, rng: np.random.Generator | None = None, support_width: int | None = None
    ) -> dict[str, np.ndarray]:
        """One episode per user: ``query`` random ratings as the query set, the rest as support.

        With ``rng=None`` the split is fixed (seeded by the user's position) for evaluation.
        ``support_width`` pads every batch to the same support size (one compiled shape).
        """
        n = self._counts[users]
        width = int(n.max())
        rows = self._starts[users][:, None] + np.minimum(np.arange(width)[None, :], n[:, None] - 1)
        valid = np.arange(width)[None, :] < n[:, None]
        if rng is not None:
            noise = rng.random((len(users), width))
        else:  # fixed per user, whatever the batch
            noise = np.stack([np.random.default_rng(int(u)).random(width) for u in users])
        noise = np.where(valid, noise, 2.0)  # padding sorts last
        order = np.argsort(noise, axis=1)
        rows = np.take_along_axis(rows, order, axis=1)
        # the first n - query valid rows are support, the next `query` are the query set
        s_len = n - self.query
        support_w = int(s_len.max()) if support_width is None else support_width
        out: dict[str, np.ndarray] = {}
        for part, start, length, size in (
            (SUPPORT, np.zeros_like(n), s_len, support_w),
            (QUERY, s_len, np.full_like(n, self.query), self.query),
        ):
            idx = np.take_along_axis(rows, np.minimum(start[:, None] + np.arange(size)[None, :], width - 1), axis=1)
            mask = (np.arange(size)[None, :] < length[:, None]).astype(np.float32)
            items = self._item_of[idx]
            for f, values in self.user_feats.items():
                out[key(part, f)] = np.repeat(values[users][:, None], size, axis=1) * mask.astype(np.int64)
            for f, values in self.item_feats.items():
                v = values[items]
                out[key(part, f)] = v * (mask.astype(np.int64) if v.ndim == 2 else mask.astype(np.int64)[..., None])
            out[key(part, LABEL)] = self._label_of[idx] * mask
            out[key(part, MASK)] = mask
        return out
