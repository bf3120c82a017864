"""Keras layers of CMML: embeddings, context encoders, hybrid context, and modulated scorers.

Shapes use B = tasks in a batch, S = support rows, Q = query rows, N = any number of rows,
D* = widths. Masks are float tensors with 1 for a real row and 0 for padding. Every layer is
small, serialisable (``get_config``) and built only from stock TensorFlow ops, so an exported
model runs in TF Serving without this package.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.schemas.episodes import FeatureSpec

keras = tf.keras


def expand_context(values: tf.Tensor, repeats) -> tf.Tensor:
    """Per-task values ``[B, ...]`` → per-row ``[B·repeats, ...]`` (identity when repeats is None).

    Scorers accept a per-task context with ``context_repeats=Q`` so that a hyper-network whose
    input does not depend on the query row runs once per task instead of once per row.
    """
    return values if repeats is None else tf.repeat(values, repeats, axis=0)


class MLP(keras.layers.Layer):
    """A stack of Dense layers.

    Input ``[..., D_in]`` → output ``[..., units[-1]]``. Hidden layers use ``activation``; the last
    layer uses it too unless ``activate_last`` is False (then it is linear).
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


class FeatureEmbedding(keras.layers.Layer):
    """Embeds a group of transformed features (one side: user or item) and concatenates them.

    Input: dict ``name → int64`` with shape ``[...]`` for a categorical feature (one index) or
    ``[..., L]`` for a multi-valued one (0-padded; mean-pooled over the non-zero entries).
    Index 0 means padding/missing; ids beyond the vocabulary live in the OOV buckets the
    transform reserved, so unseen users and items still get (shared) embeddings.
    Output: ``[..., len(specs) * dim]`` in the order of ``specs``.
    """

    def __init__(self, specs: Sequence[FeatureSpec | dict], dim: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.specs = [s if isinstance(s, FeatureSpec) else FeatureSpec(**s) for s in specs]
        self.dim, self.l2 = dim, l2
        self.tables = {
            s.name: keras.layers.Embedding(
                s.vocab_size,
                dim,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.05),
                embeddings_regularizer=keras.regularizers.l2(l2) if l2 else None,
                name=f"emb_{s.name}",
            )
            for s in self.specs
        }

    @property
    def output_dim(self) -> int:
        return len(self.specs) * self.dim

    def call(self, features):
        parts = []
        for s in self.specs:
            ids = features[s.name]
            vectors = self.tables[s.name](ids)
            if s.kind == "multi":
                present = tf.cast(tf.not_equal(ids, 0), vectors.dtype)[..., None]
                vectors = tf.reduce_sum(vectors * present, axis=-2) / tf.maximum(tf.reduce_sum(present, axis=-2), 1.0)
            parts.append(vectors)
        return tf.concat(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "specs": [s.__dict__ for s in self.specs], "dim": self.dim, "l2": self.l2}


class LabelEmbedding(keras.layers.Layer):
    """g(y): embeds a scalar label. Input ``[...]`` float → output ``[..., units[-1]]``."""

    def __init__(self, units: Sequence[int] = (64, 64), **kwargs):
        super().__init__(**kwargs)
        self.units = list(units)
        self.mlp = MLP(self.units, name="mlp")

    def call(self, y):
        return self.mlp(tf.expand_dims(tf.cast(y, self.compute_dtype), -1))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class PoolingContextEncoder(keras.layers.Layer):
    """PE: C = pool_k MLP(r_k) over the valid support rows, pool = mean or max.

    ``call(rows [B, S, D], mask [B, S]) → C [B, output_dim]``; padded rows do not change C and the
    result does not depend on the order of the rows.

    For online updates the encoder is split into ``accumulate`` / ``finalize`` over a state
    ``[B, state_size]`` (running sum or max, and the count): feeding the support set in any
    number of pieces gives the same C as one call. With max pooling the MLP ends in a ReLU, so
    per-row codes are non-negative and the empty maximum is 0. With mean pooling the MLP's last
    layer is linear, so it commutes with the mean: the state sums the last hidden layer and the
    last layer runs once per task on the mean, not once per support row (exactly the same C, at
    about half the encoder's multiply-adds with the default sizes). An empty support set gives C = 0.
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
    """SE: a GRU reads the support rows in order; its last state goes through a ReLU MLP.

    ``call(rows [B, S, D], mask [B, S]) → C [B, output_dim]``. Masked (padded) steps leave the GRU
    state unchanged, so padding never changes C. The state ``[B, units]`` is the GRU state:
    ``accumulate`` continues the recurrence from it, so a context can be updated online one
    interaction at a time and equals the full-sequence result for the same order.
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


class HybridContext(keras.layers.Layer):
    """Combines the task context with each query pair's features.

    ``call(context [B, Dc], x [B, Q, Dx]) → C_h [B, Q, D_h]``:
    * ``none``: C_h = C (task level only), D_h = Dc;
    * ``dot``: C_h = C ⊙ x (needs Dc = Dx), D_h = Dx, no parameters;
    * ``mlp``: C_h = MLP([C; x]), D_h = Dx.
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


class FiLM(keras.layers.Layer):
    """Feature-wise linear modulation: ``call([z, gamma, beta]) → gamma ⊙ z + beta`` (same shapes)."""

    def call(self, inputs):
        z, gamma, beta = inputs
        return gamma * z + beta


class PlainMLP(keras.layers.Layer):
    """The backbone without modulation (the no-adaptation ablation): score = MLP(x), context ignored.

    ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N]}``.
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
    """Final-layer weight modulation: h = MLP(x); (w, b) = f(C_h); score = wᵀh + b.

    ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N]}``.
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
    """Shared body of S-LM and F-LM: a backbone MLP whose every hidden layer is modulated by
    heads on one hyper-network trunk over C_h. ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N]}``."""

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
    """S-LM: o_j = ReLU(W_j h + b_j) ⊙ σ(f_j(C_h)). ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N]}``."""

    def modulate(self, j, z, heads_out):
        # tf.maximum rather than tf.nn.relu: oneDNN's CPU remapper mis-fuses Relu in this pattern
        return tf.maximum(z, 0.0) * tf.sigmoid(heads_out[0])


class FiLMModulatedMLP(_LayerModulatedMLP):
    """F-LM: (γ_j, β_j) = f_j(C_h); o_j = ReLU(γ_j ⊙ (W_j h + b_j) + β_j).

    γ is produced as 1 + Δγ and both heads start at zero, so training starts from the plain MLP.
    ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N]}``.
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


class SoftModularNetwork(keras.layers.Layer):
    """Soft modularization: k layers × m modules of width d, mixed by context-dependent routes.

    Layer 1 modules all read x; the input of module j at layer l+1 is Σ_i p^l_ij · out_i^l, where
    p^l = softmax over i of the route logits, so the weights flowing into each module sum to 1.
    The k-th layer is aggregated by an m-way softmax vector into the output head. A route network
    of the same depth maps C_h to the routes (each route layer also sees the previous routes).

    ``call([x [N, Dx], ctx [N, Dh]]) → {"score": [N], "routes": [N, k-1, m, m], "final_route": [N, m]}``.
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
