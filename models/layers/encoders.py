"""Context encoders: a task's support set → its context C, in one call or online, piece by piece.

Both encoders split the call into ``initial_state`` / ``accumulate`` / ``finalize`` over a state
``[B, state_size]``, so a served context can be updated as interactions arrive and still equals
the one computed from the whole support set at once.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cmml.models.layers.core import MLP

keras = tf.keras


class PoolingContextEncoder(keras.layers.Layer):
    """PE: the pooled per-interaction codes of the support set.

    Computes C = pool_{k: m_k = 1} MLP(r_k) over the valid support rows r_k (mask m_k = 1), with
    pool = mean or max. Padded rows do not change C and C does not depend on the order of the
    rows; an empty support set gives C = 0. With max pooling the MLP ends in a ReLU, so per-row
    codes are non-negative and the empty maximum is 0. With mean pooling the MLP's last layer is
    linear, so it commutes with the mean: the state sums the last hidden layer and the last layer
    runs once per task on the mean, not once per support row (exactly the same C, at about half
    the encoder's multiply-adds with the default sizes).

    The state is ``[total; count]``: the running sum (mean) or maximum (max) of the codes and the
    number of valid rows, so ``state_size`` = ``hidden[-1] + 1`` for mean pooling with hidden
    layers and ``output_dim + 1`` otherwise.

    Args:
      hidden: the widths of the per-row MLP's hidden layers.
      output_dim: the width of C (the MLP's last layer).
      pooling: ``"mean"`` or ``"max"``.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      rows: ``[B, S, D]`` support interactions r_k = [x_k; g(y_k)].
      mask: ``[B, S]``, 1 for a real row and 0 for padding.

    Returns:
      C, ``[B, output_dim]``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (the pooling encoder, PE).

    Example:

    >>> encoder = PoolingContextEncoder([16], 12, pooling="mean")
    >>> rows, mask = tf.random.normal([2, 5, 10]), tf.constant([[1.0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    >>> encoder(rows, mask).shape, encoder.state_size
    (TensorShape([2, 12]), 17)
    >>> state = encoder.accumulate(encoder.initial_state(2), rows[:, :2], mask[:, :2])
    >>> state = encoder.accumulate(state, rows[:, 2:], mask[:, 2:])
    >>> bool(tf.reduce_all(tf.abs(encoder.finalize(state) - encoder(rows, mask)) < 1e-5))
    True
    """

    def __init__(self, hidden: Sequence[int], output_dim: int, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', not {pooling!r}")
        self.hidden, self.output_dim, self.pooling = list(hidden), output_dim, pooling
        self.mlp = MLP(self.hidden + [output_dim], activate_last=(pooling == "max"), name="row_mlp")

    @property
    def _pool_hidden(self) -> bool:
        """Mean pooling over the last hidden layer, the linear last layer applied after pooling."""
        return self.pooling == "mean" and bool(self.hidden)

    @property
    def state_size(self) -> int:
        return (self.hidden[-1] if self._pool_hidden else self.output_dim) + 1

    def initial_state(self, batch_size) -> tf.Tensor:
        return tf.zeros([batch_size, self.state_size], self.compute_dtype)

    def accumulate(self, state, rows, mask):
        if self._pool_hidden:
            codes = rows
            for layer in self.mlp.dense[:-1]:
                codes = layer(codes)  # [B, S, hidden[-1]]
        else:
            codes = self.mlp(rows)  # [B, S, Dc]
        mask = tf.cast(mask, codes.dtype)[..., None]
        total, count = state[:, :-1], state[:, -1:]
        if self.pooling == "mean":
            total = total + tf.reduce_sum(codes * mask, axis=1)
        else:
            total = tf.maximum(total, tf.reduce_max(codes * mask, axis=1))
        return tf.concat([total, count + tf.reduce_sum(mask, axis=1)], axis=-1)

    def finalize(self, state):
        total, count = state[:, :-1], state[:, -1:]
        if self.pooling == "max":
            return total
        mean = total / tf.maximum(count, 1.0)
        if not self._pool_hidden:
            return mean
        # mean_k (W h_k + b) = W mean_k h_k + b for a non-empty set; an empty one stays C = 0
        return self.mlp.dense[-1](mean) * tf.cast(count > 0, mean.dtype)

    def call(self, rows, mask):
        return self.finalize(self.accumulate(self.initial_state(tf.shape(rows)[0]), rows, mask))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "output_dim": self.output_dim, "pooling": self.pooling}


class SequentialContextEncoder(keras.layers.Layer):
    """SE: a GRU reads the support rows in order; its last state goes through an MLP.

    Computes h_k = GRU(h_{k-1}, r_k) for the valid rows in order from h_0 = 0, and C = MLP(h_S),
    an MLP with ReLU hidden layers and a linear last layer. Masked (padded) steps leave the GRU
    state unchanged, so padding never changes C. The state ``[B, units]`` is the GRU state:
    ``accumulate`` continues the recurrence from it, so a context can be updated online one
    interaction at a time and equals the full-sequence result for the same order.

    Args:
      units: the GRU state width (``state_size``).
      mlp: the widths of the MLP's hidden layers after the GRU.
      output_dim: the width of C (the MLP's last layer).
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      rows: ``[B, S, D]`` support interactions r_k = [x_k; g(y_k)], in order.
      mask: ``[B, S]``, 1 for a real row and 0 for padding.

    Returns:
      C, ``[B, output_dim]``: the GRU's last output through the MLP.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (the sequential encoder, SE).

    Example:

    >>> encoder = SequentialContextEncoder(16, [16], 12)
    >>> rows, mask = tf.random.normal([2, 5, 10]), tf.ones([2, 5])
    >>> encoder(rows, mask).shape, encoder.state_size
    (TensorShape([2, 12]), 16)
    >>> state = encoder.initial_state(2)
    >>> for k in range(5):  # one interaction at a time
    ...     state = encoder.accumulate(state, rows[:, k : k + 1], mask[:, k : k + 1])
    >>> bool(tf.reduce_all(tf.abs(encoder.finalize(state) - encoder(rows, mask)) < 1e-5))
    True
    """

    def __init__(self, units: int, mlp: Sequence[int], output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.units, self.mlp_units, self.output_dim = units, list(mlp), output_dim
        # A plain RNN over a GRUCell: a while loop of stock ops, without the cuDNN implementation
        # swap of keras.layers.GRU (which adds backend-specific functions to exported graphs).
        self.gru = keras.layers.RNN(keras.layers.GRUCell(units, name="gru_cell"), return_state=True, name="gru")
        self.mlp = MLP(self.mlp_units + [output_dim], activate_last=False, name="mlp")

    @property
    def state_size(self) -> int:
        return self.units

    def initial_state(self, batch_size) -> tf.Tensor:
        return tf.zeros([batch_size, self.units], self.compute_dtype)

    def accumulate(self, state, rows, mask):
        # the final *state* (not the last output): when every step is masked the output is zeros,
        # while the state correctly stays at its initial value
        _, final_state = self.gru(rows, mask=tf.cast(mask, tf.bool), initial_state=[state])
        return final_state

    def finalize(self, state):
        return self.mlp(state)

    def call(self, rows, mask):
        return self.finalize(self.accumulate(self.initial_state(tf.shape(rows)[0]), rows, mask))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mlp": self.mlp_units, "output_dim": self.output_dim}
