"""Scoring a model on evaluation episodes and computing the SPEC §3 metrics per task.

Shared by the pipeline's Evaluator component and the experiment runner, so both report the same
numbers for the same records.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from cmml.models import metrics as M
from cmml.schemas.episodes import LABEL, MASK, QUERY, key

ScoreFn = Callable[[Mapping[str, object]], object]  # episode batch (no query labels) -> scores [B, Q]

USER_METRICS = ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5")
SCENARIO_METRICS = ("recall@10", "recall@20", "recall@50", "ndcg@10")
# metric that decides blessing and model selection, and whether lower is better
PRIMARY = {"user": ("mae", True), "scenario": ("recall@20", False)}


def metric_names(setting: str) -> tuple[str, ...]:
    return USER_METRICS if setting == "user" else SCENARIO_METRICS


def lower_is_better(metric: str) -> bool:
    return metric in ("mae", "rmse")


def score_episodes(score: ScoreFn, batches: Iterable[Mapping[str, object]], clip: tuple[float, float] | None = None):
    """Runs ``score`` over batches; yields ``(scores, labels, mask, batch)`` as numpy arrays.

    ``clip`` bounds the predictions (e.g. to the rating scale) before any metric is computed.
    """
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != key(QUERY, LABEL) and k != "task_key" and k != "user_raw_id"}
        scores = np.asarray(score(inputs), dtype=np.float64)
        if clip is not None:
            scores = np.clip(scores, *clip)
        yield scores, np.asarray(batch[key(QUERY, LABEL)]), np.asarray(batch[key(QUERY, MASK)]), batch


def evaluate_episodes(
    score: ScoreFn,
    batches: Iterable[Mapping[str, object]],
    setting: str,
    clip: tuple[float, float] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per-task metrics of a scorer over evaluation episodes and their means.

    User setting: MAE, RMSE, NDCG@1/3/5 over each user's query ratings (gain 2^r − 1).
    Scenario setting (ranking layout): Recall@10/20/50 and NDCG@10 per (scenario, user) row.
    Returns ``(summary, per_task)``; ``summary`` also holds ``tasks`` and the 95 % half-width of
    the primary metric.
    """
    if setting not in PRIMARY:
        raise ValueError(f"setting must be 'user' or 'scenario', not {setting!r}")
    kwargs = (
        {"rating": True, "ndcg_ks": (1, 3, 5)}
        if setting == "user"
        else {"rating": False, "ndcg_ks": (10,), "recall_ns": (10, 20, 50)}
    )
    per_task = M.concat(M.per_task_metrics(s, y, m, **kwargs) for s, y, m, _ in score_episodes(score, batches, clip))
    if not per_task:
        raise ValueError("no evaluation episodes")
    summary = M.summarize(per_task)
    primary = PRIMARY[setting][0]
    summary["tasks"] = int(len(per_task[primary]))
    summary[f"{primary}_halfwidth95"] = M.halfwidth95(per_task[primary])
    return summary, per_task
