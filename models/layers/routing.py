"""Soft modularization: a scorer whose modules are mixed by routes the context chooses."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cmml.models.layers.core import MLP, expand_context

keras = tf.keras


class SoftModularNetwork(keras.layers.Layer):
    """Soft-M: k layers × m modules of width d, mixed by context-dependent routes.

    The modules of layer 1 all read x: o^1_i = ReLU(x W^1_i + b^1_i). The input of module j at
    layer l+1 is Σ_i p^l_ij · o^l_i, with p^l = softmax over i of the route logits, so the weights
    flowing into each module sum to 1: o^{l+1}_j = ReLU((Σ_i p^l_ij o^l_i) W^{l+1}_j + b^{l+1}_j).
    The k-th layer is aggregated by an m-way softmax vector q into the output head:
    score = wᵀ Σ_j q_j o^k_j (``output``, no bias). A route network of the same depth maps C_h to
    the routes: r_1 = MLP(C_h) (``route_in``), p^l = softmax(reshape(W_p^l r_l)) (``route_{l-1}``),
    r_{l+1} = ReLU(W_r^l [r_l; vec(p^l)]) (``route_hidden_{l-1}``, so each route layer also sees
    the previous routes) and q = softmax(W_q r_k) (``route_final``). The module weights are
    ``module_kernel_{l}`` ``[m, d_in, d]`` and ``module_bias_{l}`` ``[m, d]``.

    Args:
      layers: k, the number of module layers (at least 1).
      modules: m, the modules per layer (at least 1).
      width: d, the output width of every module.
      hyper_hidden: the widths of the route network's input MLP (its last width is the width of
        every route layer).
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs: ``[x, ctx]``, the features ``[N, D_x]`` and the context ``[N, D_h]`` (``[N / Q, D_h]``
        with ``context_repeats=Q``: the routes are then computed once per task).
      context_repeats: None, or Q for a per-task context.

    Returns:
      ``{"score": [N], "routes": [N, k-1, m, m], "final_route": [N, m]}``: the scores, the routes
      p^l (``routes[:, l-1, i, j]`` = p^l_ij) and the output aggregation q.

    Raises:
      ValueError: fewer than one layer or module.

    References:
      Yang et al., "Multi-Task Reinforcement Learning with Soft Modularization", NeurIPS 2020.
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation",
      CIKM 2021 (soft modularization as a modulation, Soft-M).

    Example:

    >>> net = SoftModularNetwork(layers=3, modules=4, width=5, hyper_hidden=[8])
    >>> out = net([tf.random.normal([6, 10]), tf.random.normal([6, 4])])
    >>> {name: value.shape for name, value in out.items()}
    {'score': TensorShape([6]), 'routes': TensorShape([6, 2, 4, 4]), 'final_route': TensorShape([6, 4])}
    >>> bool(tf.reduce_all(tf.abs(tf.reduce_sum(out["routes"], axis=2) - 1.0) < 1e-5))  # into each module
    True
    """

    def __init__(
        self, layers: int = 3, modules: int = 4, width: int = 32, hyper_hidden: Sequence[int] = (64,), **kwargs
    ):
        super().__init__(**kwargs)
        if layers < 1 or modules < 1:
            raise ValueError("soft modularization needs at least one layer and one module")
        self.k, self.m, self.d, self.hyper_hidden = layers, modules, width, list(hyper_hidden)
        self.route_in = MLP(self.hyper_hidden, name="route_in")
        self.route_hidden = [
            keras.layers.Dense(self.hyper_hidden[-1], activation="relu", name=f"route_hidden_{l}")
            for l in range(layers - 1)
        ]
        self.route_logits = [keras.layers.Dense(modules * modules, name=f"route_{l}") for l in range(layers - 1)]
        self.final_logits = keras.layers.Dense(modules, name="route_final")
        self.out = keras.layers.Dense(1, use_bias=False, name="output")  # the model owns the global offset

    def build(self, input_shape):
        x_shape, _ = input_shape
        d_in = int(x_shape[-1])
        self.kernels = [
            self.add_weight(
                name=f"module_kernel_{l}",
                shape=(self.m, d_in if l == 0 else self.d, self.d),
                initializer="glorot_uniform",
            )
            for l in range(self.k)
        ]
        self.biases = [
            self.add_weight(name=f"module_bias_{l}", shape=(self.m, self.d), initializer="zeros") for l in range(self.k)
        ]
        super().build(input_shape)

    def call(self, inputs, context_repeats=None):
        x, ctx = inputs
        # routes depend on the context only: compute them first (once per task when the context
        # is per task), then run the modules row by row
        r = self.route_in(ctx)
        routes = []
        for l in range(1, self.k):
            logits = tf.reshape(self.route_logits[l - 1](r), [-1, self.m, self.m])  # [N, i (from), j (to)]
            p = tf.nn.softmax(logits, axis=1)  # weights into each module j sum to 1
            routes.append(p)
            r = self.route_hidden[l - 1](tf.concat([r, tf.reshape(p, [-1, self.m * self.m])], axis=-1))
        final = expand_context(tf.nn.softmax(self.final_logits(r), axis=-1), context_repeats)  # [N, m]
        routes = [expand_context(p, context_repeats) for p in routes]
        h = tf.nn.relu(tf.einsum("ni,mio->nmo", x, self.kernels[0]) + self.biases[0])  # [N, m, d]
        for l, p in enumerate(routes, start=1):
            mixed = tf.einsum("nij,nid->njd", p, h)
            h = tf.nn.relu(tf.einsum("nmi,mio->nmo", mixed, self.kernels[l]) + self.biases[l])
        pooled = tf.einsum("nm,nmd->nd", final, h)
        stacked = tf.stack(routes, axis=1) if routes else tf.zeros([tf.shape(x)[0], 0, self.m, self.m], x.dtype)
        return {"score": tf.squeeze(self.out(pooled), -1), "routes": stacked, "final_route": final}

    def get_config(self):
        return {
            **super().get_config(),
            "layers": self.k,
            "modules": self.m,
            "width": self.d,
            "hyper_hidden": self.hyper_hidden,
        }
