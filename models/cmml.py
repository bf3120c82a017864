"""The CMML model: context encoder → hybrid context → modulated scoring network.

A batch is several tasks, each a padded support set and a padded query set (the layout of
``schemas/episodes.md``). Adaptation to a task is a forward pass: the support set is encoded
into a context C, C is combined with each query pair's features, and the combination modulates
the backbone that scores the pair. There is no inner loop and no Python loop over tasks.

The model is a ``tfrs.models.Model`` with a ``tfrs.tasks.Ranking`` task, so it trains with
``model.fit`` and plugs into TFRS-based stacks.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401
from cmml.models import losses
from cmml.models.base import EpisodeModel
from cmml.models.config import CMMLConfig, liked_threshold
from cmml.models.layers.embeddings import FeatureEmbedding, LabelEmbedding
from cmml.models.layers.encoders import PoolingContextEncoder, SequentialContextEncoder
from cmml.models.layers.hybrid import HybridContext
from cmml.models.layers.modulation import FiLMModulatedMLP, PlainMLP, SigmoidModulatedMLP, WeightModulatedMLP
from cmml.models.layers.relevance import CatalogRelevance
from cmml.models.layers.routing import SoftModularNetwork
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, FeatureSpec, key

Features = Mapping[str, tf.Tensor]


def select_features(specs: Sequence[FeatureSpec], names: Sequence[str] | None) -> list[FeatureSpec]:
    """The specs named in ``names`` (all when None), in the order of ``specs``."""
    if names is None:
        return list(specs)
    known = {s.name for s in specs}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"config names unknown feature(s) {missing}; the data has {sorted(known)}")
    return [s for s in specs if s.name in set(names)]


def permute_support(features: Features, seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """Shuffles the valid rows of every task's support set (padding stays at the end).

    One random permutation per task, applied to every ``support_*`` tensor; used at every
    training step so that the sequential encoder learns to ignore order.
    """
    mask = tf.cast(features[key(SUPPORT, MASK)], tf.float32)
    noise = (
        tf.random.uniform(tf.shape(mask), seed=seed)
        if seed is None
        else tf.random.stateless_uniform(tf.shape(mask), seed=seed)
    )
    order = tf.argsort(noise + 2.0 * (1.0 - mask), axis=1)  # valid rows (keys < 1) first
    out = dict(features)
    for name, value in features.items():
        if name.startswith(SUPPORT + "_"):
            out[name] = tf.gather(value, order, axis=1, batch_dims=1)
    return out


class CMMLModel(EpisodeModel):
    """CMML over batched episodes.

    Args:
      feature_specs: the transformed features available (``feature_specs.json``).
      config: architecture; ``config.features`` selects a subset of ``feature_specs``.
      score_offset: initial value of the global offset added to every score (learned for the
        rating head, where starting at the mean rating speeds up training; fixed for CTR).
    """

    def __init__(
        self,
        feature_specs: Sequence[FeatureSpec],
        config: CMMLConfig = CMMLConfig(),
        score_offset: float | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "cmml")
        super().__init__(**kwargs)
        self.config = config
        specs = select_features(feature_specs, config.features)
        self.feature_specs = specs
        self.user_specs = [s for s in specs if s.side == "user"]
        self.item_specs = [s for s in specs if s.side == "item"]
        if not self.item_specs:
            raise ValueError("CMML needs at least one item-side feature")
        dim = config.embedding_dim
        self.user_embedding = (
            FeatureEmbedding(self.user_specs, dim, config.l2, name="user_embedding") if self.user_specs else None
        )
        self.item_embedding = FeatureEmbedding(self.item_specs, dim, config.l2, name="item_embedding")
        self.x_dim = (len(self.user_specs) + len(self.item_specs)) * dim
        self.label_embedding = LabelEmbedding(config.label_hidden, name="label_embedding")

        if config.encoder == "gru":
            self.encoder = SequentialContextEncoder(
                config.gru_units, config.encoder_mlp, self.x_dim, name="context_encoder"
            )
        else:
            self.encoder = PoolingContextEncoder(
                config.encoder_hidden, self.x_dim, pooling=config.encoder, name="context_encoder"
            )
        self.hybrid = HybridContext(config.hybrid, config.hybrid_mlp, name="hybrid_context")
        if config.modulation == "weight":
            self.scorer = WeightModulatedMLP(config.hidden, config.hyper_hidden, config.dropout, name="scorer")
        elif config.modulation == "sigmoid":
            self.scorer = SigmoidModulatedMLP(config.hidden, config.hyper_hidden, config.dropout, name="scorer")
        elif config.modulation == "film":
            self.scorer = FiLMModulatedMLP(config.hidden, config.hyper_hidden, config.dropout, name="scorer")
        elif config.modulation == "none":
            self.scorer = PlainMLP(config.hidden, config.dropout, name="scorer")
        else:
            self.scorer = SoftModularNetwork(
                config.soft_layers, config.soft_modules, config.soft_width, config.hyper_hidden, name="scorer"
            )

        # A pairwise loss is blind to a global offset, so only the rating head learns one.
        offset = (3.5 if config.head == "rating" else 0.0) if score_offset is None else score_offset
        self.score_offset = self.add_weight(
            name="score_offset",
            shape=(),
            initializer=tf.keras.initializers.Constant(offset),
            trainable=config.head == "rating",
        )
        # Support-set user offset: b_u = Σ (y - offset - b_i) / (n + λ), with a learned shrinkage λ.
        self.shrinkage = None
        if config.support_bias:
            self.shrinkage = self.add_weight(
                name="support_shrinkage", shape=(), initializer=tf.keras.initializers.Constant(np.log(np.expm1(5.0)))
            )
        self.item_bias = None
        if config.item_bias:
            item_id = [s for s in self.item_specs if s.name == "item_id"]
            if not item_id:
                raise ValueError("item_bias needs an 'item_id' feature")
            self.item_bias = tf.keras.layers.Embedding(
                item_id[0].vocab_size,
                1,
                embeddings_initializer="zeros",
                embeddings_regularizer=tf.keras.regularizers.l2(config.l2) if config.l2 else None,
                name="item_bias",
            )

        self.relevance = None
        if config.catalog_weight:
            item_id = [s for s in self.item_specs if s.name == "item_id"]
            if not item_id:
                raise ValueError("the catalog relevance head (catalog_weight > 0) needs an 'item_id' feature")
            self.relevance = CatalogRelevance(
                item_id[0].vocab_size,
                config.catalog_dim,
                config.catalog_hidden,
                config.l2,
                config.catalog_lr_multiplier,
                name="relevance",
            )

        if config.head == "rating":
            self.task = tfrs.tasks.Ranking(
                loss=losses.squared_error(),
                metrics=[
                    tf.keras.metrics.MeanAbsoluteError(name="mae"),
                    tf.keras.metrics.RootMeanSquaredError(name="rmse"),
                ],
            )
        else:
            self.task = tfrs.tasks.Ranking(loss=losses.PairwiseHingeLoss(margin=1.0))

    # --- pieces, each usable on its own (the serving signatures call them) ---------------------------
    @property
    def context_dim(self) -> int:
        """Width of the context vector C that ``score`` takes (plus b_u with ``support_bias``)."""
        return self.x_dim + (1 if self.shrinkage is not None else 0)

    @property
    def state_size(self) -> int:
        """Width of the online-update state (encoder state, plus residual sum and count)."""
        return self.encoder.state_size + (2 if self.shrinkage is not None else 0)

    def embed(self, features: Features, part: str) -> tf.Tensor:
        """x = [e_u; e_i] for every row of the ``part`` set: ``[B, R, x_dim]``."""
        parts = []
        if self.user_embedding is not None:
            parts.append(self.user_embedding({s.name: features[key(part, s.name)] for s in self.user_specs}))
        parts.append(self.item_embedding({s.name: features[key(part, s.name)] for s in self.item_specs}))
        return tf.concat(parts, axis=-1)

    def baseline(self, features: Features, part: str) -> tf.Tensor:
        """offset + b_i for every row of the ``part`` set ``[B, R]`` (offset alone without item bias)."""
        mask = features[key(part, MASK)]
        base = tf.zeros_like(tf.cast(mask, tf.float32)) + self.score_offset
        if self.item_bias is not None:
            base = base + tf.squeeze(self.item_bias(features[key(part, "item_id")]), -1)
        return base

    def support_rows(self, features: Features, part: str = SUPPORT) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Encoder input rows [e_u; e_i; g(y)] ``[B, S, D]``, the mask ``[B, S]`` and the residuals
        y - offset - b_i ``[B, S]``."""
        x = self.embed(features, part)
        label = tf.cast(features[key(part, LABEL)], x.dtype)
        mask = tf.cast(features[key(part, MASK)], x.dtype)
        if self.config.positives_only_context:
            mask = mask * tf.cast(label > 0.5, x.dtype)
        residual = (label - tf.stop_gradient(self.baseline(features, part))) * mask
        encoded = residual if self.config.residual_labels else label
        return tf.concat([x, self.label_embedding(encoded)], axis=-1), mask, residual

    def initial_state(self, batch_size) -> tf.Tensor:
        return tf.zeros([batch_size, self.state_size], tf.float32)

    def update_state(self, state: tf.Tensor, features: Features, part: str = SUPPORT) -> tf.Tensor:
        """Folds more interactions (the ``part`` set) into a state ``[B, state_size]``."""
        rows, mask, residual = self.support_rows(features, part)
        n = self.encoder.state_size
        new = self.encoder.accumulate(state[:, :n], rows, mask)
        if self.shrinkage is None:
            return new
        sums = state[:, n:] + tf.stack([tf.reduce_sum(residual, 1), tf.reduce_sum(mask, 1)], axis=-1)
        return tf.concat([new, sums], axis=-1)

    def context_from_state(self, state: tf.Tensor) -> tf.Tensor:
        n = self.encoder.state_size
        context = self.encoder.finalize(state[:, :n])
        if self.shrinkage is None:
            return context
        user_offset = state[:, n] / (state[:, n + 1] + tf.nn.softplus(self.shrinkage))
        return tf.concat([context, user_offset[:, None]], axis=-1)

    def encode_context(self, features: Features) -> tf.Tensor:
        """Support set → task context C ``[B, context_dim]``."""
        if self.shrinkage is not None:
            return self.context_from_state(
                self.update_state(self.initial_state(tf.shape(features[key(SUPPORT, MASK)])[0]), features)
            )
        rows, mask, _ = self.support_rows(features)
        return self.encoder(rows, mask)

    def score(self, context: tf.Tensor, features: Features, training: bool | None = None) -> dict[str, tf.Tensor]:
        """Context + query pairs → ``{"score": [B, Q], ...}`` (Soft-M adds ``routes``, ``final_route``)."""
        return self.score_rows(context, self.embed(features, QUERY), self.baseline(features, QUERY), training)

    def score_rows(
        self, context: tf.Tensor, x: tf.Tensor, baseline: tf.Tensor, training: bool | None = None
    ) -> dict[str, tf.Tensor]:
        """:meth:`score` on query rows already embedded: ``x = [e_u; e_i]`` ``[B, Q, Dx]`` (:meth:`embed`)
        and their ``baseline`` ``[B, Q]`` (:meth:`baseline`); lets a server embed a fixed catalog once."""
        shape = tf.shape(x)[:2]
        x_rows = tf.reshape(x, [-1, x.shape[-1]])
        if self.config.hybrid == "none":
            # task-level context: the modulation is computed once per task, then repeated per row
            flat = self.scorer([x_rows, context[:, : self.x_dim]], training=training, context_repeats=shape[1])
        else:
            ctx = self.hybrid([context[:, : self.x_dim], x])  # [B, Q, Dh]
            flat = self.scorer([x_rows, tf.reshape(ctx, [-1, ctx.shape[-1]])], training=training)
        out = {}
        for name, value in flat.items():
            out[name] = tf.reshape(value, tf.concat([shape, tf.shape(value)[1:]], 0))
        out["score"] = out["score"] + baseline
        if self.shrinkage is not None:
            out["score"] = out["score"] + context[:, self.x_dim][:, None]
        return out

    def task_user(self, features: Features, part: str = SUPPORT) -> tf.Tensor | None:
        """e_u ``[B, D_u]`` of each task's user (its first ``part`` row); None without user features."""
        if self.user_embedding is None:
            return None
        return self.user_embedding({s.name: features[key(part, s.name)][:, :1] for s in self.user_specs})[:, 0]

    @property
    def ranks_by_score(self) -> bool:
        """Whether ``recommend``'s ranking needs the rating network on every item: without the relevance
        head, or with ``catalog_rating_weight`` > 0 blending the score in."""
        return self.relevance is None or bool(self.config.catalog_rating_weight)

    @property
    def relevance_uses_user(self) -> bool:
        """Whether the relevance head's query sees the task's user attributes: in the user setting (rating
        head), where a task is one user; a scenario task's rows come from many users."""
        return self.user_embedding is not None and self.config.head == "rating"

    def relevance_query(self, context: tf.Tensor, e_u: tf.Tensor | None, support: Features) -> tf.Tensor:
        """The relevance head's query ``[B, d]``: from the context and e_u (:attr:`relevance_uses_user`),
        both held fixed so that the head does not change what the rating head learns, and the
        ``support_*`` rows."""
        if not self.relevance_uses_user:
            e_u = None
        inputs = tf.stop_gradient(context if e_u is None else tf.concat([context, e_u], -1))
        mask = tf.cast(support[key(SUPPORT, MASK)], tf.float32)
        liked = tf.cast(tf.cast(support[key(SUPPORT, LABEL)], tf.float32) >= liked_threshold(self.config), tf.float32)
        return self.relevance.query(inputs, tf.cast(support[key(SUPPORT, "item_id")], tf.int64), mask, liked)

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        """Support set + query pairs → scores ``[B, Q]`` (adaptation and scoring in one pass)."""
        scores = self.score(self.encode_context(features), features, training=training)["score"]
        if self.relevance is not None and not self.relevance.built:
            # the head's variables, created by the first forward pass (the optimizer is built from what
            # that pass creates, training.build_variables) and after every rating variable: with the
            # same seed, the rating model is the same with or without the head
            width = self.context_dim + (
                len(self.user_specs) * self.config.embedding_dim if self.relevance_uses_user else 0
            )
            one, ids = tf.ones([1, 1]), tf.ones([1, 1], tf.int64)
            self.relevance([tf.zeros([1, width]), ids, one, one, ids])
        return scores

    def catalog_loss(self, context: tf.Tensor, features: Features) -> tf.Tensor:
        """The relevance head's sampled softmax: each task's liked query items against
        ``catalog_negatives`` item ids drawn uniformly for the batch (an item of the task's own support
        or query set is not its negative)."""
        config = self.config
        query = self.relevance_query(context, self.task_user(features), features)  # [B, d]
        ids = tf.cast(features[key(QUERY, "item_id")], tf.int64)
        liked = tf.cast(features[key(QUERY, MASK)], tf.float32) * tf.cast(
            tf.cast(features[key(QUERY, LABEL)], tf.float32) >= liked_threshold(config), tf.float32
        )
        v, b = self.relevance.items(ids)
        positive = tf.reduce_sum(query[:, None, :] * v, axis=-1) + b  # [B, Q]
        drawn = tf.random.uniform([config.catalog_negatives], 1, self.relevance.vocab_size, tf.int64)
        v_n, b_n = self.relevance.items(drawn)
        negative = tf.matmul(query, v_n, transpose_b=True) + b_n[None]  # [B, M]
        own = tf.concat([ids, tf.cast(features[key(SUPPORT, "item_id")], tf.int64)], axis=1)  # [B, Q + S]
        theirs = tf.reduce_any(own[:, :, None] == drawn[None, None, :], axis=1)
        return losses.sampled_catalog_softmax(positive, liked, negative, tf.cast(~theirs, tf.float32))

    def compute_loss(self, features: Features, training: bool = False) -> tf.Tensor:
        if isinstance(features, (tuple, list)):  # train_on_batch / evaluate(x=...) pack (x,)
            features = features[0]
        if training and self.config.permute_support:
            features = permute_support(features)
        context = self.encode_context(features)
        scores = self.score(context, features, training=training)["score"]
        mask = features[key(QUERY, MASK)]
        if self.config.head == "rating":
            labels = tf.cast(features[key(QUERY, LABEL)], scores.dtype)
            loss = self.task(
                labels=tf.reshape(labels, [-1, 1]),
                predictions=tf.reshape(scores, [-1, 1]),
                sample_weight=tf.reshape(losses.normalised_weights(mask), [-1]),
                training=training,
            )
            if self.config.listwise_weight:
                loss += self.config.listwise_weight * losses.listwise_softmax_loss(
                    scores, labels, mask, self.config.listwise_temperature
                )
        else:
            pairs, pair_mask = losses.query_pairs(scores, mask)
            loss = self.task(
                labels=tf.zeros_like(pairs),
                predictions=pairs,
                sample_weight=losses.normalised_weights(pair_mask),
                training=training,
            )
        if self.relevance is not None and training:  # a sampled term: validation scores the rating model
            loss += self.config.catalog_weight * self.catalog_loss(context, features)
        return loss
