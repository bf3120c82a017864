"""Per-task rating and ranking metrics over padded query sets (SPEC §3).

Every function takes ``scores [T, Q]``, ``labels [T, Q]`` and ``mask [T, Q]`` (numpy arrays or
eager tensors; T = tasks: users, or (scenario, evaluation user) rows; Q = padded query size; mask 1
for a real row). A metric is computed per task over its real rows, then averaged over tasks so
that every task counts once. Tasks where a metric is undefined (no real rows; NDCG with an ideal
DCG of 0; Recall without positives) are left out of the average; ``per_task_*`` return NaN there.

* MAE / RMSE: per task over the real rows, then the mean over tasks.
* NDCG@k: rows ranked by score; gain 2^label − 1, discount log2(rank + 1) (rank from 1);
  DCG@k over the first min(k, n) ranks, normalised by the DCG@k of the ideal (label) ordering.
* Recall@N: share of the task's positives (label > ``positive_threshold``) in its top N rows.

**Ties.** Ranking sorts by score, descending. Equal scores are ordered deterministically:

* ``ties="pessimistic"`` (default): among equal scores, lower labels rank first (positives and
  higher ratings after everything they tie with), then by position. A tie never helps a
  positive, whatever order the data lists its rows in, so the figure is a lower bound.
* ``ties="position"``: among equal scores, the earlier query row ranks first (stable order).

Padded rows always rank last and carry no gain.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

TIES = ("pessimistic", "position")


def _arrays(scores, labels, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, y, m = (np.asarray(a, dtype=np.float64) for a in (scores, labels, mask))
    if s.ndim != 2 or s.shape != y.shape or s.shape != m.shape:
        raise ValueError(
            f"scores, labels and mask must share one [tasks, rows] shape, got {s.shape}, {y.shape}, {m.shape}"
        )
    return s, y, m > 0


def rank_order(scores, labels, mask, ties: str = "pessimistic") -> np.ndarray:
    """Row indices ``[T, Q]`` of each task in rank order (best first, padded rows last)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    s, y, m = _arrays(scores, labels, mask)
    position = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    label_key = y if ties == "pessimistic" else np.zeros_like(y)
    # np.lexsort: the last key is the primary one; the sort is stable
    return np.lexsort((position, label_key, -s, ~m), axis=-1)


def _mean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def per_task_mae(scores, labels, mask) -> np.ndarray:
    s, y, m = _arrays(scores, labels, mask)
    n = m.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (np.abs(s - y) * m).sum(-1) / n, np.nan)


def per_task_rmse(scores, labels, mask) -> np.ndarray:
    s, y, m = _arrays(scores, labels, mask)
    n = m.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt((np.square(s - y) * m).sum(-1) / n), np.nan)


def _dcg(gains: np.ndarray, k: int) -> np.ndarray:
    top = gains[:, :k]
    return (top / np.log2(np.arange(top.shape[1]) + 2.0)).sum(-1)


def per_task_ndcg(scores, labels, mask, k: int, ties: str = "pessimistic") -> np.ndarray:
    """NDCG@k per task ``[T]`` (gain 2^label − 1); NaN for tasks whose ideal DCG is 0."""
    if k < 1:
        raise ValueError("k must be at least 1")
    s, y, m = _arrays(scores, labels, mask)
    gains = np.where(m, np.power(2.0, y) - 1.0, 0.0)
    order = rank_order(s, y, m, ties)
    dcg = _dcg(np.take_along_axis(gains, order, axis=-1), k)
    ideal = _dcg(-np.sort(-gains, axis=-1), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


def per_task_recall(
    scores, labels, mask, n: int, positive_threshold: float = 0.5, ties: str = "pessimistic"
) -> np.ndarray:
    """Recall@N per task ``[T]``: positives in the top N / positives; NaN for tasks without positives."""
    if n < 1:
        raise ValueError("N must be at least 1")
    s, y, m = _arrays(scores, labels, mask)
    positive = m & (y > positive_threshold)
    order = rank_order(s, y, m, ties)
    hits = np.take_along_axis(positive, order, axis=-1)[:, :n].sum(-1)
    total = positive.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / total, np.nan)


def mae(scores, labels, mask) -> float:
    """Mean over tasks of the per-task mean absolute error."""
    return _mean(per_task_mae(scores, labels, mask))


def rmse(scores, labels, mask) -> float:
    """Mean over tasks of the per-task root mean squared error."""
    return _mean(per_task_rmse(scores, labels, mask))


def ndcg_at_k(scores, labels, mask, k: int, ties: str = "pessimistic") -> float:
    """Mean over tasks of NDCG@k."""
    return _mean(per_task_ndcg(scores, labels, mask, k, ties))


def recall_at_n(scores, labels, mask, n: int, positive_threshold: float = 0.5, ties: str = "pessimistic") -> float:
    """Mean over tasks (with at least one positive) of Recall@N."""
    return _mean(per_task_recall(scores, labels, mask, n, positive_threshold, ties))


def per_task_metrics(
    scores,
    labels,
    mask,
    *,
    rating: bool = True,
    ndcg_ks: Sequence[int] = (1, 3, 5),
    recall_ns: Sequence[int] = (),
    positive_threshold: float = 0.5,
    ties: str = "pessimistic",
) -> dict[str, np.ndarray]:
    """Every requested metric per task (``{"mae": [T], "ndcg@3": [T], "recall@10": [T], ...}``).

    Per-task arrays of several batches concatenate; :func:`summarize` averages them.
    """
    out: dict[str, np.ndarray] = {}
    if rating:
        out["mae"] = per_task_mae(scores, labels, mask)
        out["rmse"] = per_task_rmse(scores, labels, mask)
    for k in ndcg_ks:
        out[f"ndcg@{k}"] = per_task_ndcg(scores, labels, mask, k, ties)
    for n in recall_ns:
        out[f"recall@{n}"] = per_task_recall(scores, labels, mask, n, positive_threshold, ties)
    return out


def concat(batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Joins the per-task metrics of several batches."""
    batches = list(batches)
    return {name: np.concatenate([b[name] for b in batches]) for name in (batches[0] if batches else {})}


def summarize(per_task: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean over the tasks where each metric is defined."""
    return {name: _mean(np.asarray(values, np.float64)) for name, values in per_task.items()}


def halfwidth95(values: np.ndarray) -> float:
    """Half-width of the normal 95% confidence interval of the mean over tasks (NaNs dropped)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    return float(1.96 * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def evaluate(scores, labels, mask, **kwargs) -> dict[str, float]:
    """:func:`per_task_metrics` averaged over tasks."""
    return summarize(per_task_metrics(scores, labels, mask, **kwargs))
