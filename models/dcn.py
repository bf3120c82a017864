"""DCN and DCN-F baselines over batched episodes.

**DCN** (deep & cross network, DCN-v2 stacked form): x₀ = [e_u; e_i] (the CMML embeddings),
``cross_layers`` TFRS cross layers x_{l+1} = x₀ ⊙ (W x_l + b) + x_l, then a ReLU tower and a
linear output. It does not adapt: it is trained on every interaction of the meta-training tasks
(support and query rows alike) and scores a query pair from its features only.

**DCN-F**: the trained DCN fine-tuned on each test task's support set: ``finetune_steps`` SGD steps
on the top ``finetune_layers`` layers of the tower, with per-task copies of those weights, so a
batch of tasks fine-tunes in one vectorised computation and one task's support set never
changes another task's scores.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401
from cmml.models.base import EpisodeModel
from cmml.models.baselines import (
    DenseStack,
    RowEmbedding,
    check_head,
    per_task,
    ranking_loss,
    ranking_task,
    sgd_steps,
    task_losses,
)
from cmml.models.cmml import select_features
from cmml.models.config import ConfigMixin
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, FeatureSpec, key

Features = Mapping[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DCNConfig(ConfigMixin):
    """DCN / DCN-F settings."""

    WHAT = "DCN"

    head: str = "rating"  # 'rating' (MSE) or 'ctr' (pairwise hinge on interleaved (positive, negative) rows)
    features: tuple[str, ...] | None = None  # None = all features of the specs
    embedding_dim: int = 32
    cross_layers: int = 2
    projection_dim: int | None = None  # low-rank cross layers (DCN-v2); None = full rank
    deep: tuple[int, ...] = (64, 64, 64)  # ReLU tower after the cross layers
    train_on_support: bool = True  # train on support rows too (all meta-training interactions)
    learning_rate: float = 1e-3  # Adam
    finetune_layers: int = 2  # DCN-F: top layers adapted per task (the linear output counts as one)
    finetune_steps: int = 5
    finetune_lr: float = 0.1  # plain SGD on the per-task mean support loss (0.01 barely moves a rating model)

    def __post_init__(self):
        check_head(self.head)
        if not 1 <= self.finetune_layers <= len(self.deep) + 1:
            raise ValueError(f"DCNConfig.finetune_layers must be in 1..{len(self.deep) + 1}")
        if self.cross_layers < 0 or self.finetune_steps < 0 or self.finetune_lr < 0:
            raise ValueError("DCNConfig: cross_layers, finetune_steps and finetune_lr must be non-negative")


class DCNModel(EpisodeModel):
    """DCN over batched episodes; ``adapt_and_score`` is DCN-F.

    ``call(features) → [B, Q]`` query scores without adaptation; ``score_part(features, part) →
    [B, R]`` scores any part; ``adapt(features) → per-task top-layer weights``;
    ``adapt_and_score(features) → [B, Q]``.
    """

    def __init__(self, feature_specs: Sequence[FeatureSpec], config: DCNConfig = DCNConfig(), **kwargs):
        kwargs.setdefault("name", "dcn")
        super().__init__(**kwargs)
        self.config = config
        self.feature_specs = select_features(feature_specs, config.features)
        self.embedding = RowEmbedding(self.feature_specs, config.embedding_dim, name="embedding")
        self.cross = [
            tfrs.layers.dcn.Cross(
                projection_dim=config.projection_dim, kernel_initializer="glorot_uniform", name=f"cross_{l}"
            )
            for l in range(config.cross_layers)
        ]
        self.tower = DenseStack(config.deep, output_bias=3.5 if config.head == "rating" else 0.0, name="tower")
        self.tower.build(tf.TensorShape([None, None, self.embedding.output_dim]))
        self.task = ranking_task(config.head)

    @property
    def _split(self) -> int:
        """Index of the first fine-tuned tower layer."""
        return self.tower.depth - self.config.finetune_layers

    def crossed(self, features: Features, part: str) -> tf.Tensor:
        """Embeddings through the cross layers: ``[B, R, Dx]``."""
        x0 = self.embedding(features, part)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return x

    def score_part(self, features: Features, part: str) -> tf.Tensor:
        return self.tower(self.crossed(features, part))

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        return self.score_part(features, QUERY)

    def compute_loss(self, features: Features, training: bool = False) -> tf.Tensor:
        if isinstance(features, (tuple, list)):
            features = features[0]
        parts = (SUPPORT, QUERY) if self.config.train_on_support else (QUERY,)
        # concatenating the parts keeps each part's (positive, negative) interleaving intact for ctr,
        # as both have an even width there (odd widths are padded by `pairs`, per part)
        scores, labels, masks = [], [], []
        for part in parts:
            s = self.score_part(features, part)
            y, m = features[key(part, LABEL)], features[key(part, MASK)]
            if self.config.head == "ctr":
                pad = [[0, 0], [0, tf.shape(s)[1] % 2]]
                s, y, m = tf.pad(s, pad), tf.pad(y, pad), tf.pad(m, pad)
            scores.append(s)
            labels.append(y)
            masks.append(m)
        return ranking_loss(
            self.task, tf.concat(scores, 1), tf.concat(labels, 1), tf.concat(masks, 1), self.config.head, training
        )

    # --- DCN-F ------------------------------------------------------------------------------------------
    def adapt(self, features: Features, steps: int | None = None, learning_rate: float | None = None) -> list:
        """Per-task weights of the top ``finetune_layers`` layers after SGD on each support set."""
        cfg = self.config
        steps = cfg.finetune_steps if steps is None else steps
        learning_rate = cfg.finetune_lr if learning_rate is None else learning_rate
        labels, mask = features[key(SUPPORT, LABEL)], features[key(SUPPORT, MASK)]
        h = tf.stop_gradient(self.tower.hidden(self.crossed(features, SUPPORT), self._split))  # frozen below the split
        top = per_task(self.tower.params[self._split :], tf.shape(mask)[0])

        def loss_fn(params):
            return task_losses(self.tower.apply(h, params, start=self._split), labels, mask, cfg.head)

        return sgd_steps(top, loss_fn, steps, learning_rate, first_order=True)

    def score_adapted(self, adapted: list, features: Features) -> tf.Tensor:
        h = self.tower.hidden(self.crossed(features, QUERY), self._split)
        return self.tower.apply(h, adapted, start=self._split)

    def adapt_and_score(
        self, features: Features, steps: int | None = None, learning_rate: float | None = None
    ) -> tf.Tensor:
        """DCN-F inference: fine-tune on each task's support set, score its query set → ``[B, Q]``."""
        return self.score_adapted(self.adapt(features, steps, learning_rate), features)


class FineTunedDCN(tf.keras.Model):
    """DCN-F as a predictor: ``call(features) → [B, Q]`` = ``dcn.adapt_and_score(features)``.

    Holds no weights of its own; ``dcn`` is a trained :class:`DCNModel`.
    """

    def __init__(self, dcn: DCNModel, steps: int | None = None, learning_rate: float | None = None, **kwargs):
        kwargs.setdefault("name", "dcn_f")
        super().__init__(**kwargs)
        self.dcn, self.steps, self.learning_rate = dcn, steps, learning_rate

    def call(self, features: Features, training: bool | None = None) -> tf.Tensor:
        return self.dcn.adapt_and_score(features, self.steps, self.learning_rate)
