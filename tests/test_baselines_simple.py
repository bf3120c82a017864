"""Simple predictors: the reference definitions against direct computations, ItemPop's ranking, real data."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models import metrics, simple


def _episode(support_items, support_labels, query_items, query_labels=None) -> dict[str, np.ndarray]:
    """A batch from per-task lists (ragged → padded at the end)."""
    out = {}
    query_labels = query_labels or [[0.0] * len(q) for q in query_items]
    for part, items, labels in (("support", support_items, support_labels), ("query", query_items, query_labels)):
        width = max(len(x) for x in items)
        ids, lab, mask = (np.zeros((len(items), width), dt) for dt in (np.int64, np.float32, np.float32))
        for t, (i, l) in enumerate(zip(items, labels)):
            ids[t, : len(i)], lab[t, : len(l)], mask[t, : len(i)] = i, l, 1.0
        out.update({f"{part}_item_id": ids, f"{part}_label": lab, f"{part}_mask": mask})
    return out


# meta-train: 3 tasks (users), each row (item, rating); support and query rows both count
TRAIN = _episode(
    support_items=[[1, 2, 3], [1, 2], [2, 4, 4]],
    support_labels=[[5, 3, 4], [4, 1], [2, 5, 3]],
    query_items=[[4], [3, 1], [1]],
    query_labels=[[4], [2, 5], [3]],
)
# meta-test: task 0 is a user with three known ratings; task 1 a user with none (padding only)
TEST = _episode(support_items=[[1, 4, 9], [0]], support_labels=[[2, 5, 4], [0]], query_items=[[2, 3, 9, 1], [4, 7]])
TEST["support_mask"][1, 0] = 0.0


def _direct_bias_model(train, test):
    """The reference bias model, literally: μ, b_i (shrinkage 2), b_u over the support set (shrinkage 5),
    clipped to [1, 5]."""
    ratings = [
        (i, r)
        for part in ("support", "query")
        for i, r, m in zip(
            train[f"{part}_item_id"].ravel(), train[f"{part}_label"].ravel(), train[f"{part}_mask"].ravel()
        )
        if m
    ]
    mu = sum(r for _, r in ratings) / len(ratings)
    residuals = defaultdict(list)
    for i, r in ratings:
        residuals[i].append(r - mu)
    b_i = {i: sum(v) / (len(v) + 2) for i, v in residuals.items()}
    out = np.zeros(test["query_item_id"].shape)
    for t in range(len(out)):
        known = [
            (i, r)
            for i, r, m in zip(test["support_item_id"][t], test["support_label"][t], test["support_mask"][t])
            if m
        ]
        b_u = sum(r - mu - b_i.get(i, 0.0) for i, r in known) / (len(known) + 5)
        for q, i in enumerate(test["query_item_id"][t]):
            out[t, q] = min(5.0, max(1.0, mu + b_u + b_i.get(i, 0.0)))
    return mu, b_i, out


def test_bias_model_equals_the_targets_definition():
    mu, b_i, expected = _direct_bias_model(TRAIN, TEST)
    model = simple.BiasModel().fit(TRAIN)
    np.testing.assert_allclose(model({k: tf.constant(v) for k, v in TEST.items()}).numpy(), expected, rtol=1e-6)
    # the pieces: the user without support gets b_u = 0, an unseen item (9, 7) gets b_i = 0
    assert model.user_bias(TEST).numpy()[1] == 0.0
    assert float(model.mean.numpy()) == pytest.approx(mu)


def test_item_mean_and_global_mean_and_clipping():
    mu, b_i, _ = _direct_bias_model(TRAIN, TEST)
    item_mean = simple.ItemMean().fit(TRAIN)(TEST).numpy()
    np.testing.assert_allclose(item_mean[0], [mu + b_i[2], mu + b_i[3], mu, mu + b_i[1]], rtol=1e-6)
    np.testing.assert_allclose(simple.GlobalMean().fit([TRAIN])(TEST).numpy(), np.full((2, 4), mu), rtol=1e-6)
    # a user who rated everything 5 far above the item means is clipped to 5 (and left unclipped without clip)
    high = _episode([[1, 2, 3, 4] * 5], [[5.0] * 20], [[1, 2]])
    assert simple.BiasModel().fit(TRAIN)(high).numpy().max() == pytest.approx(5.0)
    assert simple.BiasModel(clip=None).fit(TRAIN)(high).numpy().max() > 5.0
    with pytest.raises(RuntimeError):
        simple.BiasModel()(TEST)


def test_item_pop_ranks_by_positive_support_counts_with_deterministic_ties():
    batch = _episode(
        support_items=[[5, 7, 5, 9, 7, 5], [3, 3]],
        support_labels=[[1, 1, 1, 0, 0, 1], [1, 1]],
        query_items=[[9, 7, 5, 11], [5, 3, 0, 0]],
    )
    scores = simple.ItemPop()(batch).numpy()
    # item 5: three positive rows; 7: one (its label-0 row does not count); 9: only a negative; 11: absent
    np.testing.assert_array_equal(scores[0], [0, 1, 3, 0])
    np.testing.assert_array_equal(scores[1, :2], [0, 2])  # tasks do not share counts
    order = metrics.rank_order(scores, np.zeros_like(scores), np.ones_like(scores), ties="position")
    assert order[0].tolist() == [2, 1, 0, 3]  # 5, 7, then the 9/11 tie by position
    # fitted on meta-training positives, popularity breaks the tie (11 is popular there) but never beats a count
    train = _episode([[11, 11, 11, 9]], [[1, 1, 1, 1]], [[11, 5]], [[1, 0]])
    fitted = simple.ItemPop().fit(train)(batch).numpy()
    assert np.argsort(-fitted[0], kind="stable").tolist() == [2, 1, 3, 0]
    assert np.all(np.floor(fitted) == scores)


def test_bias_model_on_real_users_beats_item_and_global_means(ml1m_partial_dir):
    """On ML-1M users (13-100 ratings, 10 query ratings each) the floor predictors order as in the reference figures."""
    from cmml.data import open_dataset
    from cmml.models.testing import UserTasks

    tasks = UserTasks(open_dataset(ml1m_partial_dir), seed=0)
    train = [tasks.episodes(tasks.train_users[i : i + 512]) for i in range(0, len(tasks.train_users), 512)]
    test = tasks.episodes(tasks.test_users)
    mae = {}
    for name, model in (("global", simple.GlobalMean()), ("item", simple.ItemMean()), ("bias", simple.BiasModel())):
        mae[name] = metrics.mae(model.fit(train)(test).numpy(), test["query_label"], test["query_mask"])
    print(f"query MAE on {len(tasks.test_users)} unseen users: {mae}")
    assert mae["bias"] < mae["item"] - 0.02 < mae["global"] - 0.1
    assert 0.72 < mae["bias"] < 0.82  # the reference figures: 0.775 on their own split of the same users
