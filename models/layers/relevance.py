"""Catalog relevance: how likely a task's user is to pick each item of the whole catalog.

A rating head predicts the rating of an item *given* that the user rates it; ranking a whole catalog
also needs the chance that the user picks the item at all (an obscure item with a high predicted
rating is rarely what a new user wants first). This module scores that second part from the same
task context, with a dot product so that it runs over millions of items as one matrix product.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.models.layers.core import MLP

keras = tf.keras


class CatalogRelevance(keras.layers.Layer):
    """Relevance logits of items for a task: r(t, i) = ⟨q_t, v_i⟩ + b_i.

    The query q_t = MLP([h_t; p_t; p⁺_t]) comes from the task's context h_t (the encoded support set,
    and the user's attribute embedding when there is one) and two pools of the support items' own
    vectors u_s: p_t the mean over the support set, p⁺_t the mean over its liked rows (the EASE / item2vec
    view of a user: the items they picked). Each item has a learned vector v_i and bias b_i; u, v and b
    are indexed by the transformed ``item_id`` (index 0 = padding; items outside the vocabulary share
    the OOV rows the transform reserved). Trained with a sampled softmax over the item vocabulary
    (:func:`cmml.models.losses.sampled_catalog_softmax`), b_i learns the item's popularity and ⟨q_t, v_i⟩
    the task's departure from it.

    Args:
      vocab_size: size of the ``item_id`` vocabulary (rows of the item tables).
      dim: width d of q_t, u_i and v_i.
      hidden: widths of the query MLP's hidden layers (its last layer is linear, ``dim`` wide).
      l2: L2 regularisation of the item tables' values (0 for none; applied to the stored tables as
        l2 · lr_multiplier², the same penalty).
      lr_multiplier: the tables learn this many times faster than the rest of the model: they are
        stored divided by it and multiplied back in the forward pass (Adam's step is the learning rate
        whatever the gradient's scale, so the stored value moves at the common rate). Sparse rows of a
        large catalog see few updates; at CMML's learning rate (1e-4) they barely move.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      inputs: ``[context, support_item_id, support_mask, support_liked, item_id]``: the task inputs
        ``[B, D_h]``; the support items ``[B, S]`` with their mask and liked flags (float, ``[B, S]``); the
        items to score ``[B, N]`` (or ``[1, N]``, the same items for every task).

    Returns:
      ``[B, N]`` logits (:meth:`query` and :meth:`items` give the two sides for a precomputed catalog:
      logits = q @ vᵀ + b).

    References:
      Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016 (a user as the
      mean of their items' vectors; next-item prediction as a softmax over the catalog with sampled
      negatives, a dot product at serving).
      Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019 (a user's items predict the
      next item).
      Feng et al., "CMML: Contextual Modulation Meta Learning for Cold-Start Recommendation", CIKM 2021
      (the task context the query comes from).

    Example:

    >>> layer = CatalogRelevance(vocab_size=10, dim=4, hidden=[8])
    >>> support, mask = tf.constant([[2, 5, 0], [1, 0, 0]]), tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> layer([tf.zeros([2, 6]), support, mask, mask, tf.constant([[1, 2, 3]])]).shape
    TensorShape([2, 3])
    >>> q = layer.query(tf.zeros([2, 6]), support, mask, mask)
    >>> v, b = layer.items(tf.constant([1, 2, 3]))
    >>> q.shape, v.shape, b.shape
    (TensorShape([2, 4]), TensorShape([3, 4]), TensorShape([3]))
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 32,
        hidden: Sequence[int] = (64,),
        l2: float = 0.0,
        lr_multiplier: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.hidden, self.l2 = int(vocab_size), int(dim), list(hidden), float(l2)
        self.lr_multiplier = float(lr_multiplier)
        if self.lr_multiplier <= 0:
            raise ValueError(f"CatalogRelevance.lr_multiplier = {lr_multiplier} must be positive")
        regularizer = keras.regularizers.l2(self.l2 * self.lr_multiplier**2) if self.l2 else None
        # uniform(±0.05) once multiplied back, as a Keras Embedding starts
        limit = 0.05 / self.lr_multiplier

        def stored():
            return keras.initializers.RandomUniform(-limit, limit)

        self.query_mlp = MLP([*self.hidden, self.dim], activate_last=False, name="query_mlp")
        self.support_vectors = keras.layers.Embedding(
            self.vocab_size, self.dim, stored(), embeddings_regularizer=regularizer, name="support_vectors"
        )
        self.item_vectors = keras.layers.Embedding(
            self.vocab_size, self.dim, stored(), embeddings_regularizer=regularizer, name="item_vectors"
        )
        self.item_logit_bias = keras.layers.Embedding(
            self.vocab_size,
            1,
            embeddings_initializer="zeros",
            embeddings_regularizer=regularizer,
            name="item_logit_bias",
        )

    def query(
        self, context: tf.Tensor, support_item_id: tf.Tensor, support_mask: tf.Tensor, support_liked: tf.Tensor
    ) -> tf.Tensor:
        """q ``[B, d]`` of the task inputs ``[B, D_h]`` and support sets ``[B, S]``."""
        u = self.support_vectors(support_item_id) * self.lr_multiplier  # [B, S, d]
        pools = []
        for weight in (support_mask, support_mask * support_liked):
            weight = tf.cast(weight, u.dtype)[..., None]
            pools.append(tf.reduce_sum(u * weight, axis=1) / tf.maximum(tf.reduce_sum(weight, axis=1), 1.0))
        return self.query_mlp(tf.concat([context, *pools], axis=-1))

    def items(self, item_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """v ``[..., d]`` and b ``[...]`` of transformed item ids ``[...]``."""
        scale = self.lr_multiplier
        return self.item_vectors(item_id) * scale, tf.squeeze(self.item_logit_bias(item_id), -1) * scale

    def call(self, inputs):
        context, support_item_id, support_mask, support_liked, item_id = inputs
        v, b = self.items(item_id)  # [B|1, N, d], [B|1, N]
        q = self.query(context, support_item_id, support_mask, support_liked)
        return tf.reduce_sum(q[:, None, :] * v, axis=-1) + b

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "dim": self.dim,
            "hidden": self.hidden,
            "l2": self.l2,
            "lr_multiplier": self.lr_multiplier,
        }
