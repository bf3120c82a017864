"""Building blocks shared by the baseline models (DCN, DCN-F, MeLU, MetaCS-DNN).

Everything works on the batched episodes of ``schemas/episodes.md``. Shapes use B = tasks,
S = support rows, Q = query rows, R = rows of either part, L = list length of a multi-valued
feature, d = embedding width. Per-task ("fast") weights carry a leading task axis B, so a batch
of tasks adapts in one computation: per-task gradients come from one tape over the *sum* of the
per-task losses, because each task's fast weights only reach its own loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.models import losses
from cmml.models.layers.embeddings import FeatureEmbedding
from cmml.schemas.episodes import FeatureSpec, key

keras = tf.keras
Params = list[
    tuple[tf.Tensor, tf.Tensor]
]  # [(kernel, bias), ...]: shared ([Din, Dout], [Dout]) or per task ([B, Din, Dout], [B, Dout])

HEADS = ("rating", "ctr")


def check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")


class RowEmbedding(keras.layers.Layer):
    """x = [e_u; e_i] for every row of one part of an episode (CMML's embedding, same widths).

    ``call(features, part) → [B, R, (n_user + n_item) · dim]``: one :class:`FeatureEmbedding` per
    side, user side first, features in the order of ``specs``.

    ``tokens`` / ``pool`` split the same computation into the per-id lookup and the pooling, so a
    model can adapt the looked-up vectors (MetaCS-DNN adapts the embeddings in its inner loop);
    ``pool(tokens(...))`` equals ``call(...)``.
    """

    def __init__(self, specs: Sequence[FeatureSpec | dict], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.specs = [s if isinstance(s, FeatureSpec) else FeatureSpec(**s) for s in specs]
        self.dim = dim
        user = [s for s in self.specs if s.side == "user"]
        item = [s for s in self.specs if s.side == "item"]
        if not item:
            raise ValueError("the baselines need at least one item-side feature")
        self.user_embedding = FeatureEmbedding(user, dim, name="user_embedding") if user else None
        self.item_embedding = FeatureEmbedding(item, dim, name="item_embedding")
        self.ordered = user + item  # concatenation order of ``call``

    @property
    def output_dim(self) -> int:
        return len(self.ordered) * self.dim

    def _table(self, spec: FeatureSpec) -> keras.layers.Embedding:
        side = self.user_embedding if spec.side == "user" else self.item_embedding
        return side.tables[spec.name]

    def call(self, features, part: str):
        parts = []
        for side in (self.user_embedding, self.item_embedding):
            if side is not None:
                parts.append(side({s.name: features[key(part, s.name)] for s in side.specs}))
        return tf.concat(parts, axis=-1)

    def tokens(self, features, part: str) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """Per feature (in ``ordered``): ids ``[B, R, L]`` (L = 1 for categorical) and vectors ``[B, R, L, d]``."""
        out = []
        for s in self.ordered:
            ids = features[key(part, s.name)]
            if s.kind == "categorical":
                ids = ids[..., None]
            out.append((ids, self._table(s)(ids)))
        return out

    def pool(self, tokens: Sequence[tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
        """Token vectors → rows ``[B, R, output_dim]``, pooling multi-valued features like FeatureEmbedding."""
        parts = []
        for s, (ids, vectors) in zip(self.ordered, tokens):
            if s.kind == "categorical":
                parts.append(vectors[..., 0, :])  # index 0 keeps its own (learned) vector, as in FeatureEmbedding
            else:
                present = tf.cast(tf.not_equal(ids, 0), vectors.dtype)[..., None]
                parts.append(
                    tf.reduce_sum(vectors * present, axis=-2) / tf.maximum(tf.reduce_sum(present, axis=-2), 1.0)
                )
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "specs": [s.__dict__ for s in self.specs], "dim": self.dim}


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``x [B, N, Din]`` times a shared (``[Din, Dout]``) or per-task (``[B, Din, Dout]``) kernel."""
    if kernel.shape.rank == 3:
        return tf.einsum("bni,bio->bno", x, kernel) + bias[:, None, :]
    return tf.tensordot(x, kernel, 1) + bias


def per_task(params: Params, tasks: tf.Tensor | int) -> Params:
    """Shared weights → one copy per task (leading axis ``tasks``); gradients flow back to the originals."""
    out = []
    for kernel, bias in params:
        out.append(
            (
                tf.broadcast_to(kernel, tf.concat([[tasks], tf.shape(kernel)], 0)),
                tf.broadcast_to(bias, tf.concat([[tasks], tf.shape(bias)], 0)),
            )
        )
    return out


class DenseStack(keras.layers.Layer):
    """A ReLU MLP ending in a linear scalar output, callable with substitute (fast) weights.

    ``units`` lists the hidden widths; a final 1-unit linear layer is added. ``call(x [B, N, D]) →
    [B, N]`` uses the layer's own variables. ``apply(x, params, start)`` runs layers ``start..``
    with ``params`` (one ``(kernel, bias)`` per layer, each shared or per task, see :func:`dense`);
    ``hidden(x, stop)`` runs layers ``..stop-1`` with the own variables.
    """

    def __init__(self, units: Sequence[int], output_bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.output_bias = list(units), float(output_bias)
        self.widths = self.units + [1]

    @property
    def depth(self) -> int:
        return len(self.widths)

    def build(self, input_shape):
        d_in = int(input_shape[-1])
        self.kernels, self.biases = [], []
        for j, width in enumerate(self.widths):
            last = j == len(self.widths) - 1
            self.kernels.append(self.add_weight(name=f"kernel_{j}", shape=(d_in, width), initializer="glorot_uniform"))
            bias_init = keras.initializers.Constant(self.output_bias) if last else "zeros"
            self.biases.append(self.add_weight(name=f"bias_{j}", shape=(width,), initializer=bias_init))
            d_in = width
        super().build(input_shape)

    @property
    def params(self) -> Params:
        return list(zip(self.kernels, self.biases))

    def apply(self, x: tf.Tensor, params: Params, start: int = 0) -> tf.Tensor:
        for j, (kernel, bias) in enumerate(params, start=start):
            x = dense(x, kernel, bias)
            if j < self.depth - 1:
                x = tf.maximum(x, 0.0)  # ReLU (see layers.modulation.SigmoidModulatedMLP on tf.nn.relu fusion)
        return tf.squeeze(x, -1)

    def hidden(self, x: tf.Tensor, stop: int) -> tf.Tensor:
        for kernel, bias in self.params[:stop]:
            x = tf.maximum(dense(x, kernel, bias), 0.0)
        return x

    def call(self, x):
        return self.apply(x, self.params)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "output_bias": self.output_bias}


def sgd_steps(
    params, loss_fn: Callable[[object], tf.Tensor], steps: int, learning_rate: float, first_order: bool = False
):
    """``steps`` plain SGD steps on per-task parameters (any nest of tensors with a leading task axis).

    ``loss_fn(params) → [B]`` per-task losses. Each step differentiates their sum, which gives
    every task the gradient of its own loss. With ``first_order`` the gradients are treated as
    constants (FOMAML); otherwise an enclosing tape differentiates through them (second order).
    Unused parameters get a zero gradient. ``steps`` is a Python int: the loop unrolls in a graph.
    """
    for _ in range(steps):
        flat = tf.nest.flatten(params)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            loss = tf.reduce_sum(loss_fn(tf.nest.pack_sequence_as(params, flat)))
        grads = tape.gradient(loss, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        params = tf.nest.pack_sequence_as(params, [p - learning_rate * g for p, g in zip(flat, grads)])
    return params


def _pad_even(x: tf.Tensor) -> tf.Tensor:
    return tf.pad(x, [[0, 0], [0, tf.shape(x)[1] % 2]])


def pairs(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Interleaved rows (positive, negative, ...) ``[B, R]`` → pair scores ``[B, R/2, 2]`` and validity ``[B, R/2]``.

    A pair counts only when both rows are real and it really is (label 1, label 0): data that does
    not follow the interleaved layout loses pairs instead of training the wrong way.
    """
    s = tf.reshape(_pad_even(scores), [tf.shape(scores)[0], -1, 2])
    y = tf.reshape(_pad_even(tf.cast(labels, scores.dtype)), [tf.shape(scores)[0], -1, 2])
    m = tf.reshape(_pad_even(tf.cast(mask, scores.dtype)), [tf.shape(scores)[0], -1, 2])
    valid = m[..., 0] * m[..., 1] * tf.cast(y[..., 0] > 0.5, s.dtype) * tf.cast(y[..., 1] <= 0.5, s.dtype)
    return s, valid


def task_losses(scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, head: str, margin: float = 1.0) -> tf.Tensor:
    """Per-task mean loss ``[B]`` over the real rows: squared error (rating) or pairwise hinge (ctr)."""
    if head == "rating":
        m = tf.cast(mask, scores.dtype)
        err = tf.square(scores - tf.cast(labels, scores.dtype)) * m
        return tf.reduce_sum(err, -1) / tf.maximum(tf.reduce_sum(m, -1), 1.0)
    s, valid = pairs(scores, labels, mask)
    hinge = tf.nn.relu(margin - s[..., 0] + s[..., 1]) * valid
    return tf.reduce_sum(hinge, -1) / tf.maximum(tf.reduce_sum(valid, -1), 1.0)


def ranking_loss(
    task: tfrs.tasks.Ranking, scores: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor, head: str, training: bool = False
) -> tf.Tensor:
    """Batch loss through a TFRS Ranking task (SUM-reduced loss, as CMML): mean over the batch's
    real rows (rating) or valid pairs (ctr), so padding never changes it."""
    if head == "rating":
        m = tf.reshape(tf.cast(mask, scores.dtype), [-1])
        return task(
            labels=tf.reshape(tf.cast(labels, scores.dtype), [-1, 1]),
            predictions=tf.reshape(scores, [-1, 1]),
            sample_weight=m / tf.maximum(tf.reduce_sum(m), 1.0),
            training=training,
        )
    s, valid = pairs(scores, labels, mask)
    s, valid = tf.reshape(s, [-1, 2]), tf.reshape(valid, [-1])
    return task(
        labels=tf.zeros_like(s),
        predictions=s,
        sample_weight=valid / tf.maximum(tf.reduce_sum(valid), 1.0),
        training=training,
    )


def ranking_task(head: str) -> tfrs.tasks.Ranking:
    """The TFRS task of a head, as in CMMLModel: squared error with MAE/RMSE metrics, or pairwise hinge."""
    check_head(head)
    if head == "rating":
        return tfrs.tasks.Ranking(
            loss=losses.squared_error(),
            metrics=[keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")],
        )
    return tfrs.tasks.Ranking(loss=losses.PairwiseHingeLoss(margin=1.0))
