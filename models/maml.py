"""Gradient meta-learning baselines: MeLU and MetaCS-DNN (MAML over batched episodes).

Both start from meta-learned weights, take ``inner_steps`` SGD steps on each task's support set
(masked mean loss) and score the query set with the adapted weights; the outer loss is the query
loss, minimised with Adam through the inner loop (second order) or around it (first order).

* **MeLU** (``adapt="fc"``): the inner loop adapts the fully connected layers only; the
  embeddings are meta-learned in the outer loop and fixed inside the inner loop.
* **MetaCS-DNN** (``adapt="all"``): the inner loop adapts the whole network, embeddings included.

Tasks are vectorised: fast weights carry a leading task axis (``[B, Din, Dout]``) and a batch of
tasks adapts in one batched-matmul computation, with no Python loop over tasks. Adapting an
embedding table per task would cost ``B × vocabulary × d``; instead each task keeps one delta
per distinct id of its support set (an SGD step on a table only moves the rows its support set
looked up), which is exactly MAML on the table at ``O(B × support tokens × d)``.

Default hyper-parameters: inner SGD learning rate 0.01 on the per-task mean squared error (MeLU's
5e-6 was tuned for its own feature set and barely moves the weights here), 5 inner steps, outer
Adam 1e-4 (CMML's rate). The experiment runner should tune ``inner_lr`` on meta-train users.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import tensorflow as tf

import cmml  # noqa: F401
from cmml.models import baselines as B
from cmml.models.base import EpisodeModel
from cmml.models.cmml import select_features
from cmml.models.config import ConfigMixin
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, FeatureSpec, key

Features = Mapping[str, tf.Tensor]
ADAPT = ("fc", "all")


@dataclasses.dataclass(frozen=True)
class MAMLConfig(ConfigMixin):
    """MAML baseline settings (MeLU: ``adapt='fc'``; MetaCS-DNN: ``adapt='all'``)."""

    WHAT = "MAML"

    head: str = "rating"  # 'rating' (MSE) or 'ctr' (pairwise hinge on interleaved pairs)
    adapt: str = "fc"  # inner loop on the fully connected layers ('fc') or the whole network ('all')
    inner_steps: int = 5  # k SGD steps per task during meta-training
    eval_inner_steps: int | None = None  # steps at inference; None = inner_steps
    inner_lr: float = 0.01
    first_order: bool = False  # FOMAML: the outer gradient ignores the inner gradients' dependence on the weights
    features: tuple[str, ...] | None = None  # None = all features of the specs
    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64, 64)  # ReLU layers before the linear output (may be empty)
    learning_rate: float = 1e-4  # outer Adam

    def __post_init__(self):
        B.check_head(self.head)
        if self.adapt not in ADAPT:
            raise ValueError(f"MAMLConfig.adapt = {self.adapt!r}: choose one of {', '.join(ADAPT)}")
        steps = [self.inner_steps] + ([self.eval_inner_steps] if self.eval_inner_steps is not None else [])
        if min(steps) < 0 or self.inner_lr < 0 or self.embedding_dim < 1:
            raise ValueError(
                "MAMLConfig: steps, inner_lr and embedding_dim must be non-negative (embedding_dim positive)"
            )

    @classmethod
    def melu(cls, steps: int = 5, first_order: bool = False, **changes: Any) -> MAMLConfig:
        return cls(adapt="fc", inner_steps=steps, first_order=first_order, **changes)

    @classmethod
    def metacs_dnn(cls, steps: int = 5, first_order: bool = False, **changes: Any) -> MAMLConfig:
        return cls(adapt="all", inner_steps=steps, first_order=first_order, **changes)


def match_slots(ids: tf.Tensor, support_ids: tf.Tensor) -> tf.Tensor:
    """For each token ``ids [B, M]``, the first slot of ``support_ids [B, N]`` holding the same id.

    Returns ``[B, M]`` int32; ``N`` (one past the end) where there is none or the id is padding (0).
    Applied to the support ids themselves it maps every slot to its id's first occurrence.
    """
    real = tf.not_equal(support_ids, 0)[:, None, :]
    same = tf.logical_and(tf.equal(ids[:, :, None], support_ids[:, None, :]), real)  # [B, M, N]
    first = tf.argmax(tf.cast(same, tf.int32), axis=-1, output_type=tf.int32)
    found = tf.logical_and(tf.reduce_any(same, axis=-1), tf.not_equal(ids, 0))
    return tf.where(found, first, tf.shape(support_ids, out_type=tf.int32)[1])


def _flat_tokens(ids: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``[B, R, L]``, ``[B, R, L, d]`` → ``[B, R·L]``, ``[B, R·L, d]``."""
    b = tf.shape(ids)[0]
    return tf.reshape(ids, [b, -1]), tf.reshape(vectors, [b, -1, vectors.shape[-1]])


class MAMLModel(EpisodeModel):
    """MeLU / MetaCS-DNN over batched episodes.

    ``adapt(features) → adapted`` runs the inner loop on the support sets (``{"network": per-task
    (kernel, bias) pairs, "deltas": per-feature embedding deltas}``); ``score(adapted, features) →
    [B, Q]`` scores the query sets; ``adapt_and_score(features) → [B, Q]`` does both (inference;
    it is also ``call``). ``compute_loss`` is the outer (query) loss, so ``model.fit`` meta-trains.
    """

    def __init__(self, feature_specs: Sequence[FeatureSpec], config: MAMLConfig = MAMLConfig(), **kwargs):
        kwargs.setdefault("name", "melu" if config.adapt == "fc" else "metacs_dnn")
        super().__init__(**kwargs)
        self.config = config
        self.feature_specs = select_features(feature_specs, config.features)
        self.embedding = B.RowEmbedding(self.feature_specs, config.embedding_dim, name="embedding")
        self.network = B.DenseStack(config.hidden, output_bias=3.5 if config.head == "rating" else 0.0, name="network")
        self.network.build(tf.TensorShape([None, None, self.embedding.output_dim]))
        self.task = B.ranking_task(config.head)

    # --- inner loop ---------------------------------------------------------------------------------
    def _support(self, features: Features):
        return features[key(SUPPORT, LABEL)], features[key(SUPPORT, MASK)]

    def adapt(self, features: Features, steps: int | None = None, first_order: bool = True) -> dict[str, Any]:
        """Per-task adapted weights after ``steps`` (default: ``eval_inner_steps``) SGD steps on the support sets."""
        cfg = self.config
        steps = (cfg.inner_steps if cfg.eval_inner_steps is None else cfg.eval_inner_steps) if steps is None else steps
        labels, mask = self._support(features)
        tasks = tf.shape(mask)[0]
        fast = {"network": B.per_task(self.network.params, tasks)}
        if cfg.adapt == "fc":
            x = self.embedding(features, SUPPORT)  # fixed inside the inner loop

            def loss_fn(p):
                return B.task_losses(self.network.apply(x, p["network"]), labels, mask, cfg.head)

        else:
            raw = self.embedding.tokens(features, SUPPORT)
            shapes = [tf.shape(ids) for ids, _ in raw]
            tokens = [_flat_tokens(ids, vec) for ids, vec in raw]
            slots = [match_slots(ids, ids) for ids, _ in tokens]
            # one delta row per support slot (only first occurrences ever move) plus the 'no delta' row
            fast["deltas"] = [
                tf.zeros([tasks, tf.shape(ids)[1] + 1, cfg.embedding_dim], vec.dtype) for ids, vec in tokens
            ]

            def loss_fn(p):
                x = self._rows(tokens, slots, p["deltas"], shapes)
                return B.task_losses(self.network.apply(x, p["network"]), labels, mask, cfg.head)

        return B.sgd_steps(fast, loss_fn, steps, cfg.inner_lr, first_order=first_order)

    def _rows(self, tokens, slots, deltas, shapes) -> tf.Tensor:
        """Rows ``[B, R, Dx]`` from flat token vectors plus each token's id delta (slot N = no delta)."""
        adapted = []
        for (ids, vectors), slot, delta, shape in zip(tokens, slots, deltas, shapes):
            moved = vectors + tf.gather(delta, slot, batch_dims=1)
            adapted.append((tf.reshape(ids, shape), tf.reshape(moved, tf.concat([shape, [vectors.shape[-1]]], 0))))
        return self.embedding.pool(adapted)

    def score(self, adapted: Mapping[str, Any], features: Features) -> tf.Tensor:
        """Query scores ``[B, Q]`` with the adapted weights."""
        if self.config.adapt == "fc":
            x = self.embedding(features, QUERY)
        else:
            support_ids = [
                tf.reshape(features[key(SUPPORT, s.name)], [tf.shape(features[key(SUPPORT, MASK)])[0], -1])
                for s in self.embedding.ordered
            ]
            raw = self.embedding.tokens(features, QUERY)
            tokens = [_flat_tokens(ids, vec) for ids, vec in raw]
            slots = [match_slots(q_ids, s_ids) for (q_ids, _), s_ids in zip(tokens, support_ids)]
            x = self._rows(tokens, slots, adapted["deltas"], [tf.shape(ids) for ids, _ in raw])
        return self.network.apply(x, adapted["network"])

    def adapt_and_score(self, features: Features, steps: int | None = None) -> tf.Tensor:
        """Inference: adapt to each task's support set, then score its query set → ``[B, Q]``."""
        return self.score(self.adapt(features, steps=steps, first_order=True), features)

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        return self.adapt_and_score(features)

    def compute_loss(self, features: Features, training: bool = False) -> tf.Tensor:
        """Outer loss: the query loss after ``inner_steps`` steps on the support set."""
        if isinstance(features, (tuple, list)):
            features = features[0]
        adapted = self.adapt(
            features, steps=self.config.inner_steps, first_order=self.config.first_order or not training
        )
        scores = self.score(adapted, features)
        return B.ranking_loss(
            self.task, scores, features[key(QUERY, LABEL)], features[key(QUERY, MASK)], self.config.head, training
        )
