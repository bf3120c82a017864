"""Embeddings of the inputs: a side's features (user or item) and the label of an interaction."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cmml.models.layers.core import MLP
from cmml.schemas.episodes import FeatureSpec

keras = tf.keras


class FeatureEmbedding(keras.layers.Layer):
    """Embeds a group of transformed features (one side: user or item) and concatenates them.

    For features f_1 … f_F (in the order of ``specs``) with tables E_f, the output is
    e = [E_1(x_1); …; E_F(x_F)]. A categorical feature is one index, E_f(x) = E_f[x]; a
    multi-valued one is a 0-padded list whose embedding is the mean over its non-zero entries,
    E_f(x) = Σ_{t: x_t ≠ 0} E_f[x_t] / max(1, |{t: x_t ≠ 0}|), so an empty list gives zeros.
    Index 0 means padding/missing; ids beyond the vocabulary live in the OOV buckets the transform
    reserved, so unseen users and items still get (shared) embeddings. The tables are named
    ``emb_<feature name>``.

    Args:
      specs: the features of this side (``FeatureSpec`` or its dict form), in output order.
      dim: the embedding width of every feature.
      l2: L2 regularisation of the tables (0 for none).
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      features: dict ``name → int64``, ``[...]`` for a categorical feature, ``[..., L]`` for a
        multi-valued one (L = its ``max_len``).

    Returns:
      ``[..., len(specs) · dim]`` (``output_dim``).

    References:
      Lee et al., "MeLU: Meta-Learned User Preference Estimator for Cold-Start Recommendation",
      KDD 2019 (one table per feature, concatenated; a multi-valued feature is the mean of its
      values' embeddings).
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> specs = [
    ...     FeatureSpec("item_id", "item", "categorical", 100),
    ...     FeatureSpec("genres", "item", "multi", 20, max_len=3),
    ... ]
    >>> emb = FeatureEmbedding(specs, dim=8)
    >>> ids = {"item_id": tf.constant([[3, 7]]), "genres": tf.constant([[[1, 4, 0], [0, 0, 0]]])}
    >>> emb(ids).shape, emb.output_dim
    (TensorShape([1, 2, 16]), 16)
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
    """g(y): embeds the scalar label of a support interaction.

    Computes g(y) = MLP([y]) with ReLU on every layer (an ``MLP`` named ``mlp``). The context
    encoders read each support interaction as r_k = [x_k; g(y_k)].

    Args:
      units: the MLP's layer widths.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      y: ``[...]`` labels (cast to the layer's dtype).

    Returns:
      ``[..., units[-1]]``.

    References:
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021.

    Example:

    >>> g = LabelEmbedding([16, 8])
    >>> g(tf.constant([[4.0, 1.0, 5.0]])).shape
    TensorShape([1, 3, 8])
    """

    def __init__(self, units: Sequence[int] = (64, 64), **kwargs):
        super().__init__(**kwargs)
        self.units = list(units)
        self.mlp = MLP(self.units, name="mlp")

    def call(self, y):
        return self.mlp(tf.expand_dims(tf.cast(y, self.compute_dtype), -1))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
