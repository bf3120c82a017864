"""Scorers modulated by the hybrid context C_h, and FiLM, the modulation they share.

Every scorer maps ``[x [N, D_x], C_h [N, D_h]]`` to ``{"score": [N]}``. The last layer of a
scorer has no bias: the model owns the global offset. A scorer also accepts a per-task context
``[N / Q, D_h]`` with ``context_repeats=Q`` (see :func:`~cmml.models.layers.core.expand_context`):
the hyper-network then runs once per task, with the same result as the per-row context.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cmml.models.layers.core import MLP, expand_context

keras = tf.keras


class FiLM(keras.layers.Layer):
    """Feature-wise linear modulation: FiLM(z; γ, β) = γ ⊙ z + β.

    No parameters: γ and β come from a network over the conditioning input (here the context).

    Call args:
      inputs: ``[z, gamma, beta]`` of one shape (or shapes that broadcast).

    Returns:
      γ ⊙ z + β, the shape of z.

    References:
      Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> z = tf.constant([[1.0, 2.0]])
    >>> FiLM()([z, tf.constant([[2.0, 3.0]]), tf.constant([[0.5, 0.0]])]).numpy()
    array([[2.5, 6. ]], dtype=float32)
    """

    def call(self, inputs):
        z, gamma, beta = inputs
        return gamma * z + beta


class PlainMLP(keras.layers.Layer):
    """The backbone without modulation (the no-adaptation ablation): the context is ignored.

    Computes score = wᵀ MLP(x), an MLP with ReLU on every layer (named ``backbone``, dropout after
    every layer but the last) and an output weight w without bias (named ``output``).

    Args:
      hidden: the backbone's layer widths.
      dropout: the backbone's dropout rate.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs: ``[x, ctx]``, the features ``[N, D_x]`` and the (ignored) context.
      training: dropout is applied only when True.
      context_repeats: accepted for the common scorer signature, unused.

    Returns:
      ``{"score": [N]}``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> scorer = PlainMLP([8, 8])
    >>> scorer([tf.random.normal([6, 5]), tf.random.normal([6, 4])])["score"].shape
    TensorShape([6])
    """

    def __init__(self, hidden: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.dropout = list(hidden), dropout
        self.backbone = MLP(self.hidden, dropout=dropout, name="backbone")
        self.out = keras.layers.Dense(1, use_bias=False, name="output")  # the model owns the global offset

    def call(self, inputs, training=None, context_repeats=None):
        x, _ = inputs
        return {"score": tf.squeeze(self.out(self.backbone(x, training=training)), -1)}

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "dropout": self.dropout}


class WeightModulatedMLP(keras.layers.Layer):
    """Final-layer weight modulation: the context generates the scoring layer.

    Computes h = MLP(x) (ReLU, named ``backbone``), [w; b] = W_g MLP_hyper(C_h) + b_g (the
    hyper-network ``hyper`` with ReLU, then the linear ``generate_w_b`` of width ``hidden[-1] + 1``)
    and score = wᵀh + b.

    Args:
      hidden: the backbone's layer widths.
      hyper_hidden: the hyper-network's layer widths.
      dropout: the backbone's dropout rate.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs: ``[x, ctx]``, the features ``[N, D_x]`` and the context ``[N, D_h]`` (``[N / Q, D_h]``
        with ``context_repeats=Q``).
      training: dropout is applied only when True.
      context_repeats: None, or Q for a per-task context.

    Returns:
      ``{"score": [N]}``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> scorer = WeightModulatedMLP([8, 8], [16])
    >>> scorer([tf.random.normal([6, 5]), tf.random.normal([6, 4])])["score"].shape
    TensorShape([6])
    >>> scorer([tf.random.normal([6, 5]), tf.random.normal([2, 4])], context_repeats=3)["score"].shape
    TensorShape([6])
    """

    def __init__(self, hidden: Sequence[int], hyper_hidden: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.hyper_hidden, self.dropout = list(hidden), list(hyper_hidden), dropout
        self.backbone = MLP(self.hidden, dropout=dropout, name="backbone")
        self.hyper = MLP(self.hyper_hidden, name="hyper")
        self.generate = keras.layers.Dense(self.hidden[-1] + 1, name="generate_w_b")

    def call(self, inputs, training=None, context_repeats=None):
        x, ctx = inputs
        h = self.backbone(x, training=training)
        wb = expand_context(self.generate(self.hyper(ctx)), context_repeats)
        return {"score": tf.reduce_sum(wb[:, :-1] * h, axis=-1) + wb[:, -1]}

    def get_config(self):
        return {
            **super().get_config(),
            "hidden": self.hidden,
            "hyper_hidden": self.hyper_hidden,
            "dropout": self.dropout,
        }


class _LayerModulatedMLP(keras.layers.Layer):
    """The shared body of S-LM and F-LM: every hidden layer of the backbone is modulated.

    Computes t = MLP_hyper(C_h) (ReLU, named ``hyper_trunk``), then for j = 1..J with h_0 = x:
    z_j = W_j h_{j-1} + b_j (``layer_{j-1}``) and h_j = modulate(j, z_j, [head_{j,k}(t)]_k), with
    ``heads_per_layer`` linear heads per layer (``head_{j-1}_{k}``) of the layer's width, dropout
    after every layer, and score = wᵀh_J (``output``, no bias). Subclasses define ``modulate``.

    Args:
      hidden: the backbone's layer widths.
      hyper_hidden: the hyper-network trunk's layer widths.
      dropout: the dropout rate after every backbone layer.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs, training, context_repeats: as for ``WeightModulatedMLP`` (``[x, ctx]``: ``[N, D_x]``, ``[N, D_h]``).

    Returns:
      ``{"score": [N]}``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021
      (layer modulation).

    Example:

    >>> class Gated(_LayerModulatedMLP):
    ...     def modulate(self, j, z, heads_out):
    ...         return tf.maximum(z, 0.0) * tf.tanh(heads_out[0])
    >>> Gated([8, 8], [16])([tf.random.normal([6, 5]), tf.random.normal([6, 4])])["score"].shape
    TensorShape([6])
    """

    heads_per_layer = 1

    def __init__(self, hidden: Sequence[int], hyper_hidden: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.hyper_hidden, self.dropout = list(hidden), list(hyper_hidden), dropout
        self.layers_ = [keras.layers.Dense(u, name=f"layer_{j}") for j, u in enumerate(self.hidden)]
        self.trunk = MLP(self.hyper_hidden, name="hyper_trunk")
        self.heads = [
            [self._head(u, f"head_{j}_{k}") for k in range(self.heads_per_layer)] for j, u in enumerate(self.hidden)
        ]
        self.drop = keras.layers.Dropout(dropout) if dropout else None
        self.out = keras.layers.Dense(1, use_bias=False, name="output")  # the model owns the global offset

    def _head(self, units: int, name: str) -> keras.layers.Dense:
        return keras.layers.Dense(units, name=name)

    def modulate(self, j: int, z, heads_out):
        raise NotImplementedError

    def call(self, inputs, training=None, context_repeats=None):
        x, ctx = inputs
        t = self.trunk(ctx)
        h = x
        for j, layer in enumerate(self.layers_):
            h = self.modulate(j, layer(h), [expand_context(head(t), context_repeats) for head in self.heads[j]])
            if self.drop is not None:
                h = self.drop(h, training=training)
        return {"score": tf.squeeze(self.out(h), -1)}

    def get_config(self):
        return {
            **super().get_config(),
            "hidden": self.hidden,
            "hyper_hidden": self.hyper_hidden,
            "dropout": self.dropout,
        }


class SigmoidModulatedMLP(_LayerModulatedMLP):
    """S-LM: every hidden layer gated by a sigmoid of the context.

    Computes h_j = ReLU(W_j h_{j-1} + b_j) ⊙ σ(f_j(C_h)), with f_j a linear head on the shared
    hyper-network trunk (the body, arguments and layer names of ``_LayerModulatedMLP``).

    Args:
      hidden, hyper_hidden, dropout, **kwargs: as for ``_LayerModulatedMLP``.

    Call args:
      inputs, training, context_repeats: as for ``WeightModulatedMLP`` (``[x, ctx]``: ``[N, D_x]``, ``[N, D_h]``).

    Returns:
      ``{"score": [N]}``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (sigmoid layer modulation, S-LM).

    Example:

    >>> scorer = SigmoidModulatedMLP([8, 8], [16])
    >>> scorer([tf.random.normal([6, 5]), tf.random.normal([6, 4])])["score"].shape
    TensorShape([6])
    """

    def modulate(self, j, z, heads_out):
        # tf.maximum rather than tf.nn.relu: oneDNN's CPU remapper mis-fuses Relu in this pattern
        return tf.maximum(z, 0.0) * tf.sigmoid(heads_out[0])


class FiLMModulatedMLP(_LayerModulatedMLP):
    """F-LM: every hidden layer modulated by FiLM with parameters from the context.

    Computes (Δγ_j, β_j) = f_j(C_h), two linear heads on the shared hyper-network trunk, and
    h_j = ReLU(FiLM(W_j h_{j-1} + b_j; 1 + Δγ_j, β_j)) (the body, arguments and layer names of
    ``_LayerModulatedMLP``, plus ``film``). Both heads start at zero, so γ = 1, β = 0 and training
    starts from the plain MLP.

    Args:
      hidden, hyper_hidden, dropout, **kwargs: as for ``_LayerModulatedMLP`` (plus a ``FiLM`` named ``film``).

    Call args:
      inputs, training, context_repeats: as for ``WeightModulatedMLP`` (``[x, ctx]``: ``[N, D_x]``, ``[N, D_h]``).

    Returns:
      ``{"score": [N]}``, one score per row of ``x``.

    References:
      Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (FiLM layer modulation, F-LM).

    Example:

    >>> scorer = FiLMModulatedMLP([8, 8], [16])
    >>> x = tf.random.normal([6, 5])
    >>> a = scorer([x, tf.random.normal([6, 4])])["score"]
    >>> b = scorer([x, tf.random.normal([2, 4])], context_repeats=3)["score"]
    >>> a.shape, bool(tf.reduce_all(a == b))  # untrained: the context has no effect yet
    (TensorShape([6]), True)
    """

    heads_per_layer = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.film = FiLM(name="film")

    def _head(self, units, name):
        return keras.layers.Dense(units, kernel_initializer="zeros", name=name)

    def modulate(self, j, z, heads_out):
        delta_gamma, beta = heads_out
        return tf.maximum(self.film([z, 1.0 + delta_gamma, beta]), 0.0)  # see SigmoidModulatedMLP
