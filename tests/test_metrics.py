"""Metrics against values computed by hand: MAE/RMSE per task, NDCG with gain 2^r − 1, Recall@N, ties, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models import metrics


def test_mae_and_rmse_are_per_task_then_averaged_and_ignore_padding():
    scores = np.array([[2.0, 4.0, 0.0], [3.5, 9.0, 9.0]])
    labels = np.array([[3.0, 1.0, 0.0], [4.0, 1.0, 1.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    # task 0: errors 1 and 3; task 1: error 0.5 (its padded rows have error 8 and must not count)
    assert metrics.per_task_mae(scores, labels, mask) == pytest.approx([2.0, 0.5])
    assert metrics.mae(scores, labels, mask) == pytest.approx(1.25)  # not the pooled (1 + 3 + 0.5) / 3
    assert metrics.rmse(scores, labels, mask) == pytest.approx((math.sqrt((1 + 9) / 2) + 0.5) / 2)


def test_ndcg_matches_a_hand_computed_example():
    # scores rank the rows 0, 1, 3, 2; gains 2^r - 1 of labels 3, 1, 5, 2 are 7, 1, 31, 3
    scores = np.array([[0.9, 0.8, 0.1, 0.5]])
    labels = np.array([[3.0, 1.0, 5.0, 2.0]])
    mask = np.ones((1, 4))
    log2_3 = math.log2(3)
    assert metrics.ndcg_at_k(scores, labels, mask, 1) == pytest.approx(7 / 31)
    assert metrics.ndcg_at_k(scores, labels, mask, 3) == pytest.approx(
        (7 + 1 / log2_3 + 3 / 2) / (31 + 7 / log2_3 + 3 / 2)
    )
    dcg4 = 7 + 1 / log2_3 + 3 / 2 + 31 / math.log2(5)
    idcg4 = 31 + 7 / log2_3 + 3 / 2 + 1 / math.log2(5)
    assert metrics.ndcg_at_k(scores, labels, mask, 5) == pytest.approx(dcg4 / idcg4)  # k beyond the rows: all 4 count
    # a perfect ordering scores 1
    assert metrics.ndcg_at_k(labels, labels, mask, 3) == pytest.approx(1.0)


def test_ndcg_ignores_padded_rows_and_skips_tasks_without_gain():
    scores = np.array([[0.9, 0.8, 5.0], [0.3, 0.2, 0.1]])
    labels = np.array([[1.0, 2.0, 5.0], [0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    per_task = metrics.per_task_ndcg(scores, labels, mask, 1)
    # task 0: the padded row (best score, best label) is invisible, so rank 1 holds label 1 of the ideal label 2
    assert per_task[0] == pytest.approx(1 / 3)
    assert np.isnan(per_task[1])  # no gain at all: undefined, left out of the mean
    assert metrics.ndcg_at_k(scores, labels, mask, 1) == pytest.approx(1 / 3)


def test_recall_at_n_by_hand_and_masks():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    labels = np.array([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    # task 0: top 2 = rows 0, 1 → 1 of 3 positives; top 4 → 2 of 3
    # task 1: no positives → undefined; task 2: rows 4, 5 are padding, its only positive is row 0 (rank 4)
    assert metrics.per_task_recall(scores, labels, mask, 2)[[0, 2]] == pytest.approx([1 / 3, 0.0])
    assert np.isnan(metrics.per_task_recall(scores, labels, mask, 2)[1])
    assert metrics.recall_at_n(scores, labels, mask, 2) == pytest.approx((1 / 3 + 0.0) / 2)
    assert metrics.recall_at_n(scores, labels, mask, 4) == pytest.approx((2 / 3 + 1.0) / 2)
    assert metrics.recall_at_n(scores, labels, mask, 50) == pytest.approx(1.0)


def test_ties_are_deterministic_and_never_favour_positives():
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])  # three-way tie at the top
    labels = np.array([[1.0, 0.0, 0.0, 0.0]])  # the positive is listed first
    mask = np.ones((1, 4))
    # default rule: among equal scores, positives rank after the rest
    assert metrics.rank_order(scores, labels, mask).tolist() == [[1, 2, 0, 3]]
    assert metrics.recall_at_n(scores, labels, mask, 2) == 0.0
    assert metrics.recall_at_n(scores, labels, mask, 3) == 1.0
    # the order rows are listed in does not matter under the default rule
    flipped = (scores[:, ::-1], labels[:, ::-1], mask)
    assert metrics.recall_at_n(*flipped, 2) == 0.0
    # 'position': equal scores keep their listed order, which here happens to help the positive
    assert metrics.rank_order(scores, labels, mask, ties="position").tolist() == [[0, 1, 2, 3]]
    assert metrics.recall_at_n(scores, labels, mask, 1, ties="position") == 1.0
    # graded labels: tied rows are ordered worst label first, so a constant predictor gets the worst NDCG
    ratings = np.array([[5.0, 1.0, 3.0]])
    constant = np.zeros((1, 3))
    worst = (1 + 7 / math.log2(3) + 31 / 2) / (31 + 7 / math.log2(3) + 1 / 2)
    assert metrics.ndcg_at_k(constant, ratings, np.ones((1, 3)), 3) == pytest.approx(worst)
    with pytest.raises(ValueError):
        metrics.rank_order(scores, labels, mask, ties="random")


def test_per_task_metrics_accept_tensors_and_concatenate_over_batches():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(6, 10)), rng.integers(1, 6, size=(6, 10)).astype(float)
    mask = (np.arange(10)[None, :] < rng.integers(3, 11, size=6)[:, None]).astype(np.float32)
    whole = metrics.per_task_metrics(
        tf.constant(scores), tf.constant(labels), tf.constant(mask), recall_ns=(3,), positive_threshold=3.5
    )
    halves = metrics.concat(
        metrics.per_task_metrics(scores[s], labels[s], mask[s], recall_ns=(3,), positive_threshold=3.5)
        for s in (slice(0, 3), slice(3, 6))
    )
    assert set(whole) == {"mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5", "recall@3"}
    for name in whole:
        np.testing.assert_allclose(whole[name], halves[name])
    summary = metrics.summarize(whole)
    assert summary["mae"] == pytest.approx(metrics.mae(scores, labels, mask))
    assert metrics.evaluate(scores, labels, mask, ndcg_ks=(3,)) == {k: summary[k] for k in ("mae", "rmse", "ndcg@3")}
    assert metrics.halfwidth95(np.array([1.0, 3.0])) == pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))
    with pytest.raises(ValueError):
        metrics.mae(scores, labels, mask[:, :5])
