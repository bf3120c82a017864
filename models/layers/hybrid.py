"""The hybrid context: the task context combined with each query pair's features."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cmml.models.layers.core import MLP

keras = tf.keras


class HybridContext(keras.layers.Layer):
    """Combines the task context C with each query pair's features x into C_h.

    With C broadcast over the Q query rows of its task:

    * ``none``: C_h = C (task level only), D_h = D_c;
    * ``dot``: C_h = C ⊙ x (needs D_c = D_x), D_h = D_x, no parameters;
    * ``mlp``: C_h = MLP([C; x]) (ReLU hidden layers, linear last layer of width D_x, named
      ``mlp``), D_h = D_x.

    Args:
      mode: ``"none"``, ``"dot"`` or ``"mlp"``.
      mlp_units: the hidden layer widths of the ``mlp`` mode.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs: ``[context, x]``, the context ``[B, D_c]`` and the query features ``[B, Q, D_x]``.

    Returns:
      C_h, ``[B, Q, D_h]``.

    Raises:
      ValueError: an unknown mode, or ``dot`` with D_c ≠ D_x (when the layer is built).

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (the hybrid context generator).

    Example:

    >>> context, x = tf.random.normal([2, 6]), tf.random.normal([2, 5, 6])
    >>> HybridContext("dot")([context, x]).shape
    TensorShape([2, 5, 6])
    >>> HybridContext("mlp", [8])([tf.random.normal([2, 4]), x]).shape
    TensorShape([2, 5, 6])
    """

    def __init__(self, mode: str, mlp_units: Sequence[int] = (128,), **kwargs):
        super().__init__(**kwargs)
        if mode not in ("none", "dot", "mlp"):
            raise ValueError(f"hybrid mode must be none, dot or mlp, not {mode!r}")
        self.mode, self.mlp_units = mode, list(mlp_units)
        self.mlp = None

    def build(self, input_shape):
        context_shape, x_shape = input_shape
        if self.mode == "dot" and context_shape[-1] != x_shape[-1]:
            raise ValueError(
                f"dot hybrid needs the context width ({context_shape[-1]}) to equal the feature width ({x_shape[-1]})"
            )
        if self.mode == "mlp":
            self.mlp = MLP(self.mlp_units + [int(x_shape[-1])], activate_last=False, name="mlp")
        super().build(input_shape)

    def call(self, inputs):
        context, x = inputs
        context = tf.broadcast_to(context[:, None, :], tf.concat([tf.shape(x)[:2], tf.shape(context)[-1:]], 0))
        if self.mode == "none":
            return context
        if self.mode == "dot":
            return context * x
        return self.mlp(tf.concat([context, x], axis=-1))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "mlp_units": self.mlp_units}
