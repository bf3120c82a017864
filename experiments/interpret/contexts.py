"""Models of the studies and what they compute per task: context vectors C and Soft-M routes.

Models are built and trained through the training API (:func:`cmml.models.training.build_model`,
:func:`cmml.models.training.train`); episodes carry their ``task_key`` so that every vector can be
matched with its task's ground truth.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cmml.models import episodes
from cmml.models.training import TaskData, available_features, build_model, train
from cmml.schemas import tasks as T
from cmml.schemas.episodes import MASK, QUERY, key, load_feature_specs

Log = Callable[[str], None]
NON_FEATURE_KEYS = ("task_key", "user_raw_id")


def build(root: str, setting: str, model: Mapping[str, Any], seed: int = 0):
    """An untrained, compiled CMML model for the records under ``root`` (weights seeded by ``seed``).

    Returns (model, feature specs)."""
    specs = load_feature_specs(root)
    tf.keras.utils.set_random_seed(seed)
    return build_model("cmml", specs, setting, model), specs


def fit(
    root: str,
    setting: str,
    model: Mapping[str, Any],
    training: Mapping[str, Any],
    log: Log,
    seed: int = 0,
    rating_range: Sequence[float] | None = None,
):
    """Episodic training with early stopping on the meta-valid tasks; returns (model, specs, used config, summary)."""
    data = TaskData(root, setting)
    config = available_features(model, data.specs)  # the candidate features these records have
    trained = train(data, "cmml", config, {**training, "seed": seed}, rating_range, log)
    summary = trained.summary
    metric = "MAE" if setting == "user" else "-Recall@20"
    log(
        f"trained: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"validation {summary['best_validation']:.4f} ({metric}), {summary['seconds']:.0f} s"
    )
    return trained.model, data.specs, trained.config, summary


def user_batches(root: str, specs, split: str = "meta_test", batch_size: int = 128) -> tf.data.Dataset:
    """Fixed user episodes (stored support / query rows) with ``task_key``."""
    return episodes.evaluation_episodes(
        root, specs, setting="user", split=split, batch_size=batch_size, include_task_key=True
    )


def scenario_batches(
    root: str, specs, split: str, seed: int = 0, batch_size: int = 64, support_positives: int = 64
) -> tf.data.Dataset:
    """Scenario episodes with ``task_key``: meta-test — the fixed support set (one row per evaluation
    user, all with the same support set); meta-train / meta-valid — one seeded support draw per scenario."""
    if split == "meta_test":
        return episodes.evaluation_episodes(
            root, specs, setting="scenario", split=split, batch_size=batch_size, include_task_key=True
        )
    return episodes.training_episodes(
        episodes.task_files(T.split_pattern(root, split)),
        specs,
        setting="scenario",
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=0,
        repeat=False,
        include_task_key=True,
        support_positives=support_positives,
        query_positives=1,
    )


def task_key(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _features(batch: Mapping[str, Any]) -> dict:
    return {k: v for k, v in batch.items() if k not in NON_FEATURE_KEYS}


def task_contexts(model, batches: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
    """One context vector C per task: (task keys, ``[tasks, context_dim]``), first occurrence of each key."""
    encode = tf.function(lambda f: model.encode_context(f), reduce_retracing=True)
    keys, rows, seen = [], [], set()
    for batch in batches:
        context = encode(_features(batch)).numpy()
        for k, c in zip(np.asarray(batch["task_key"]), context):
            k = task_key(k)
            if k not in seen:
                seen.add(k)
                keys.append(k)
                rows.append(c)
    width = int(model.context_dim)
    return keys, np.asarray(rows, np.float32).reshape(-1, width)


def task_routes(model, batches: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Soft-M routing probabilities per task: (keys, routes ``[tasks, k-1, m, m]``, final ``[tasks, m]``).

    ``routes[t, l, i, j]`` is the weight of module i of layer l+1 in the input of module j of layer
    l+2 (sums to 1 over i); ``final[t, j]`` weighs module j of the last layer. With a per-row
    hybrid context (``hybrid: dot|mlp``) routes differ per query pair and are averaged over the
    task's valid query rows; with ``hybrid: none`` they are the task's own.
    """
    if getattr(model.config, "modulation", None) != "soft":
        raise ValueError("routes exist only for a Soft-M model (CMMLConfig.modulation = 'soft')")

    @tf.function(reduce_retracing=True)
    def routes_of(features):
        out = model.score(model.encode_context(features), features, training=False)
        mask = tf.cast(features[key(QUERY, MASK)], tf.float32)  # [B, Q]
        weight = mask / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        routes = tf.einsum("bq,bqlij->blij", weight, out["routes"])
        final = tf.einsum("bq,bqj->bj", weight, out["final_route"])
        return routes, final

    keys, all_routes, all_final, seen = [], [], [], set()
    for batch in batches:
        routes, final = (t.numpy() for t in routes_of(_features(batch)))
        for k, r, f in zip(np.asarray(batch["task_key"]), routes, final):
            k = task_key(k)
            if k not in seen:
                seen.add(k)
                keys.append(k)
                all_routes.append(r)
                all_final.append(f)
    k_1, m = model.config.soft_layers - 1, model.config.soft_modules
    return (
        keys,
        np.asarray(all_routes, np.float32).reshape(-1, k_1, m, m),
        np.asarray(all_final, np.float32).reshape(-1, m),
    )
