"""What the episode models (CMML, DCN, MAML) share: a TFRS model traced without autograph.

Every one of them scores a batch of episodes (``call``) and computes a query loss
(``compute_loss``) with static Python control flow only. Autograph's conversion of that code, of
every Keras layer below it and of the optimizer's update took most of the first training step's
tracing (about 15 of 20 s for DCN); the steps traced without it build the same graph.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

_unconverted = tf.autograph.experimental.do_not_convert


class EpisodeModel(tfrs.models.Model):
    """A ``tfrs.models.Model`` over episode batches: ``feature_specs`` and a ``config`` with ``to_dict``."""

    train_step = _unconverted(tfrs.models.Model.train_step)
    test_step = _unconverted(tfrs.models.Model.test_step)
    predict_step = _unconverted(tfrs.models.Model.predict_step)

    def get_config(self):
        return {"feature_specs": [s.__dict__ for s in self.feature_specs], "config": self.config.to_dict()}
