"""Losses over padded query sets, shaped for ``tfrs.tasks.Ranking``.

Ranking calls ``loss(y_true, y_pred, sample_weight)``. Both losses here use SUM reduction and the
model passes weights ``mask / Σ mask``, which makes the result the mean over real (unpadded)
query rows or pairs, independent of the padding.
"""

from __future__ import annotations

import tensorflow as tf

import cmml  # noqa: F401


class PairwiseHingeLoss(tf.keras.losses.Loss):
    """max(0, margin − f(u, i⁺) + f(u, i⁻)) per (positive, negative) pair.

    ``y_pred``: ``[P, 2]`` scores, column 0 the positive, column 1 its negative; ``y_true`` is
    ignored (the pair layout carries the labels). Returns ``[P]`` before reduction.
    """

    def __init__(self, margin: float = 1.0, reduction=tf.keras.losses.Reduction.SUM, name: str = "pairwise_hinge"):
        super().__init__(reduction=reduction, name=name)
        self.margin = margin

    def call(self, y_true, y_pred):
        return tf.nn.relu(self.margin - y_pred[..., 0] + y_pred[..., 1])

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def squared_error() -> tf.keras.losses.Loss:
    """Per-element squared error on ``[N, 1]`` inputs, summed with the caller's weights."""
    return tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.SUM, name="squared_error")


def normalised_weights(mask: tf.Tensor) -> tf.Tensor:
    """mask / Σ mask (zeros when the mask is empty)."""
    mask = tf.cast(mask, tf.float32)
    return mask / tf.maximum(tf.reduce_sum(mask), 1.0)


def query_pairs(scores: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Interleaved query rows (positive, negative, ...) ``[B, Q]`` → pairs ``[B·Q/2, 2]`` and pair mask."""
    pairs = tf.reshape(scores, [-1, 2])
    pair_mask = tf.reduce_prod(tf.reshape(tf.cast(mask, scores.dtype), [-1, 2]), axis=-1)
    return pairs, pair_mask


def listwise_softmax_loss(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """ListNet top-one cross-entropy per task, averaged over tasks with at least two query rows.

    ``scores``, ``labels``, ``mask``: ``[B, Q]``. Target distribution softmax(labels / τ) and the
    predicted softmax(scores), both over the task's real (mask = 1) query rows. A scalar; 0 when
    no task has two rows. Rating MSE is blind to how a user's items are ordered relative to each
    other once the errors are small; this term scores exactly that order.
    """
    mask = tf.cast(mask, scores.dtype)
    very_negative = tf.constant(-1e9, scores.dtype)
    real = mask > 0
    target = tf.nn.softmax(tf.where(real, tf.cast(labels, scores.dtype) / temperature, very_negative), axis=-1)
    log_predicted = tf.nn.log_softmax(tf.where(real, scores, very_negative), axis=-1)
    per_task = -tf.reduce_sum(tf.where(real, target * log_predicted, 0.0), axis=-1)
    counted = tf.cast(tf.reduce_sum(mask, axis=-1) >= 2.0, scores.dtype)
    return tf.reduce_sum(per_task * counted) / tf.maximum(tf.reduce_sum(counted), 1.0)


def sampled_catalog_softmax(
    positive: tf.Tensor, positive_mask: tf.Tensor, negative: tf.Tensor, negative_mask: tf.Tensor
) -> tf.Tensor:
    """Sampled softmax of each task's positive items against catalog items sampled for the batch.

    ``positive``, ``positive_mask``: ``[B, Q]`` logits of the task's positive rows (mask 1 = a positive);
    ``negative``, ``negative_mask``: ``[B, M]`` logits of the sampled items (mask 0 = left out, e.g. an
    item the task's user did pick). Per positive (b, j): −log(e^{p_bj} / (e^{p_bj} + Σ_m e^{n_bm})), the
    mean over positives; 0 when there is none. With negatives drawn uniformly from the catalog the
    sampled softmax estimates the full softmax over the catalog up to a constant, so the logits keep
    the items' popularity (what a full-catalog ranking needs).
    """
    mask = tf.cast(positive_mask, positive.dtype)
    very_negative = tf.constant(-1e9, negative.dtype)
    others = tf.reduce_logsumexp(tf.where(negative_mask > 0, negative, very_negative), axis=-1, keepdims=True)
    per_positive = tf.math.softplus(others - positive)  # −log σ(p − logsumexp(n))
    return tf.reduce_sum(per_positive * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
