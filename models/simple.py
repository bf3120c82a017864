"""Simple predictors: the floor every results table shows.

All are batched predictors over the episodes of ``schemas/episodes.md``: ``fit(episodes)``
learns from meta-training interactions, ``predictor(features) → scores [B, Q]`` scores the query
sets of a batch of tasks with TensorFlow ops only (no loop over tasks).

* :class:`GlobalMean`: μ, the mean meta-training rating.
* :class:`ItemMean`: μ + b_i with b_i = Σ_u (r_ui − μ) / (n_i + 2) over meta-training ratings.
* :class:`BiasModel`: clip(μ + b_u + b_i, 1, 5), b_i as above and b_u = Σ_S (r − μ − b_i) / (n_S + 5)
  over the task's support set: a feed-forward adaptation from the support set.
* :class:`ItemPop` (scenario setting): an item's score is the number of positive rows of the task's
  support set with that item.

``fit`` takes one episode dict or an iterable of them and uses every real (mask 1) support and
query row: pass each meta-training interaction once (e.g. one episode per meta-training task).
Items unseen at fit time (or beyond the fitted id range) get b_i = 0.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

import cmml  # noqa: F401
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, key

Episodes = Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]]
Features = Mapping[str, tf.Tensor]


def interactions(
    episodes: Episodes, item_feature: str = "item_id", parts: tuple[str, ...] = (SUPPORT, QUERY)
) -> tuple[np.ndarray, np.ndarray]:
    """Item ids ``[N]`` (int64) and labels ``[N]`` (float64) of every real row of ``parts``."""
    batches = [episodes] if isinstance(episodes, Mapping) else episodes
    ids, labels = [], []
    for batch in batches:
        for part in parts:
            mask = np.asarray(batch[key(part, MASK)]) > 0
            ids.append(np.asarray(batch[key(part, item_feature)])[mask].astype(np.int64))
            labels.append(np.asarray(batch[key(part, LABEL)])[mask].astype(np.float64))
    if not ids:
        raise ValueError("no episodes to fit on")
    return np.concatenate(ids), np.concatenate(labels)


def _lookup(table: tf.Variable, ids: tf.Tensor) -> tf.Tensor:
    """``table[ids]`` with 0 for ids beyond the table (items never seen at fit time)."""
    ids = tf.cast(ids, tf.int64)
    size = tf.shape(table, out_type=tf.int64)[0]
    inside = tf.cast(ids < size, table.dtype)
    return tf.gather(table, tf.minimum(ids, size - 1)) * inside


class EpisodePredictor(tf.Module):
    """Base class: ``fit(episodes) → self``; ``__call__(features) → [B, Q]`` float32 scores."""

    def __init__(self, item_feature: str = "item_id", name: str | None = None):
        super().__init__(name=name)
        self.item_feature = item_feature
        self._fitted = False

    def fit(self, episodes: Episodes) -> EpisodePredictor:
        self.fit_interactions(*interactions(episodes, self.item_feature))
        self._fitted = True
        return self

    def fit_interactions(self, item_ids: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _check(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} must be fitted before scoring")

    def _query_items(self, features: Features) -> tf.Tensor:
        return tf.cast(features[key(QUERY, self.item_feature)], tf.int64)


class GlobalMean(EpisodePredictor):
    """μ for every query pair."""

    def fit_interactions(self, item_ids, labels):
        self.mean = tf.Variable(float(labels.mean()), trainable=False, dtype=tf.float32, name="mean")

    def __call__(self, features: Features) -> tf.Tensor:
        self._check()
        return tf.fill(tf.shape(self._query_items(features)), self.mean)


def item_offsets(item_ids: np.ndarray, labels: np.ndarray, mean: float, shrinkage: float) -> np.ndarray:
    """b_i = Σ (r − μ) / (n_i + shrinkage), indexed by item id (``[max id + 1]``)."""
    size = int(item_ids.max()) + 1 if len(item_ids) else 1
    total = np.bincount(item_ids, weights=labels - mean, minlength=size)
    count = np.bincount(item_ids, minlength=size)
    return total / (count + shrinkage)


class ItemMean(EpisodePredictor):
    """μ + b_i, the shrunk item mean (non-personalised)."""

    def __init__(self, shrinkage: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.shrinkage = shrinkage

    def fit_interactions(self, item_ids, labels):
        mean = float(labels.mean())
        self.mean = tf.Variable(mean, trainable=False, dtype=tf.float32, name="mean")
        self.item_bias = tf.Variable(
            item_offsets(item_ids, labels, mean, self.shrinkage).astype(np.float32), trainable=False, name="item_bias"
        )

    def __call__(self, features: Features) -> tf.Tensor:
        self._check()
        return self.mean + _lookup(self.item_bias, self._query_items(features))


class BiasModel(ItemMean):
    """clip(μ + b_u + b_i, low, high) with b_u the shrunk mean residual of the task's support set."""

    def __init__(
        self,
        item_shrinkage: float = 2.0,
        user_shrinkage: float = 5.0,
        clip: tuple[float, float] | None = (1.0, 5.0),
        **kwargs,
    ):
        super().__init__(shrinkage=item_shrinkage, **kwargs)
        self.user_shrinkage, self.clip = user_shrinkage, clip

    def user_bias(self, features: Features) -> tf.Tensor:
        """b_u ``[B]`` from each task's support set."""
        self._check()
        mask = tf.cast(features[key(SUPPORT, MASK)], tf.float32)
        items = tf.cast(features[key(SUPPORT, self.item_feature)], tf.int64)
        residual = (
            tf.cast(features[key(SUPPORT, LABEL)], tf.float32) - self.mean - _lookup(self.item_bias, items)
        ) * mask
        return tf.reduce_sum(residual, -1) / (tf.reduce_sum(mask, -1) + self.user_shrinkage)

    def __call__(self, features: Features) -> tf.Tensor:
        score = super().__call__(features) + self.user_bias(features)[:, None]
        return score if self.clip is None else tf.clip_by_value(score, *self.clip)


class ItemPop(EpisodePredictor):
    """Support-set popularity: score = count of positive support rows with the query item.

    When fitted, ties between equal counts are broken by meta-training popularity (positives per
    item), scaled into [0, 0.5) so it never outweighs one support count; remaining ties are left to
    the metric's documented rule. Unfitted, the scores are the bare counts.
    """

    def __init__(self, positive_threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.positive_threshold = positive_threshold
        self.tie_break = tf.Variable(tf.zeros([1]), trainable=False, shape=[None], name="tie_break")
        self._fitted = True  # usable without fit

    def fit_interactions(self, item_ids, labels):
        positives = item_ids[labels > self.positive_threshold]
        size = int(item_ids.max()) + 1 if len(item_ids) else 1
        count = np.bincount(positives, minlength=size).astype(np.float64)
        self.tie_break.assign((0.5 * count / (count.max() + 1.0)).astype(np.float32))

    def __call__(self, features: Features) -> tf.Tensor:
        support = tf.cast(features[key(SUPPORT, self.item_feature)], tf.int64)
        labels = tf.cast(features[key(SUPPORT, LABEL)], tf.float32)
        positive = tf.cast(features[key(SUPPORT, MASK)], tf.float32) * tf.cast(
            labels > self.positive_threshold, tf.float32
        )
        query = self._query_items(features)
        same = tf.cast(tf.equal(query[:, :, None], support[:, None, :]), tf.float32)  # [B, Q, S]
        counts = tf.einsum("bqs,bs->bq", same, positive)
        return counts + _lookup(self.tie_break, query)
