"""The building blocks every CMML layer uses: the MLP stack and the per-task context expansion."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)

keras = tf.keras


def expand_context(values: tf.Tensor, repeats: int | tf.Tensor | None) -> tf.Tensor:
    """Repeats per-task values once per query row.

    ``[B, ...]`` → ``[B·repeats, ...]`` (row b·repeats + q holds task b's values); identity when
    ``repeats`` is None. Scorers accept a per-task context with ``context_repeats=Q`` so that a
    hyper-network whose input does not depend on the query row runs once per task instead of once
    per row.

    Example:

    >>> expand_context(tf.constant([[1.0], [2.0]]), 3)[:, 0].numpy()
    array([1., 1., 1., 2., 2., 2.], dtype=float32)
    """
    return values if repeats is None else tf.repeat(values, repeats, axis=0)


class MLP(keras.layers.Layer):
    """A stack of Dense layers, the backbone of every network in CMML.

    Computes h_0 = x, h_l = a(W_l h_{l-1} + b_l) for l = 1..L with L = ``len(units)`` and a =
    ``activation``; the last layer is linear when ``activate_last`` is False. With ``dropout`` > 0
    a dropout layer follows every layer but the last (active in training only). The Dense layers
    are named ``dense_0`` … ``dense_{L-1}``.

    Args:
      units: the width of each Dense layer, input side first.
      activation: a Keras activation name.
      activate_last: whether the last layer uses ``activation`` too.
      dropout: the dropout rate after every layer but the last.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      x: ``[..., D_in]`` float tensor.
      training: dropout is applied only when True.

    Returns:
      ``[..., units[-1]]``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> mlp = MLP([8, 4], activate_last=False)
    >>> mlp(tf.zeros([2, 5, 3])).shape
    TensorShape([2, 5, 4])
    >>> [d.units for d in mlp.dense]
    [8, 4]
    """

    def __init__(
        self, units: Sequence[int], activation: str = "relu", activate_last: bool = True, dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.units, self.activation, self.activate_last, self.dropout = list(units), activation, activate_last, dropout
        n = len(self.units)
        self.dense = [
            keras.layers.Dense(u, activation=activation if (i < n - 1 or activate_last) else None, name=f"dense_{i}")
            for i, u in enumerate(self.units)
        ]
        self.drop = [keras.layers.Dropout(dropout) for _ in self.units[:-1]] if dropout else []

    def call(self, x, training=None):
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if self.drop and i < len(self.drop):
                x = self.drop[i](x, training=training)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "activate_last": self.activate_last,
            "dropout": self.dropout,
        }
