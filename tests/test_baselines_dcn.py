"""DCN trains on every meta-training interaction; DCN-F fine-tunes per task without leaking across tasks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401
from cmml.models.baselines import task_losses
from cmml.models.dcn import DCNConfig, DCNModel, FineTunedDCN
from cmml.models.testing import DEFAULT_SPECS, random_episodes
from cmml.models.training import build_model

SMALL = {"embedding_dim": 8, "deep": (16, 16), "learning_rate": 1e-2}


def _batch(head="rating", tasks=8, seed=1, **kwargs):
    return {k: tf.constant(v) for k, v in random_episodes(head=head, tasks=tasks, seed=seed, **kwargs).items()}


@pytest.mark.parametrize("head", ["rating", "ctr"])
def test_dcn_uses_tfrs_cross_layers_and_lowers_its_loss(head):
    tf.keras.utils.set_random_seed(0)
    setting = "user" if head == "rating" else "scenario"
    model = build_model("dcn", DEFAULT_SPECS, setting, {"cross_layers": 2, "projection_dim": 4, **SMALL})
    batch = _batch(head, support=10, query=8)
    assert len(model.cross) == 2 and all(isinstance(c, tfrs.layers.dcn.Cross) for c in model.cross)
    before = float(model.compute_loss(batch))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(30), epochs=1, verbose=0)
    after = float(model.compute_loss(batch))
    assert after < 0.5 * before, (before, after)
    assert model(batch).shape == batch["query_mask"].shape


def test_dcn_trains_on_support_rows_too_unless_told_not_to():
    batch = _batch()
    changed = dict(batch, support_label=6.0 - batch["support_label"])
    for on_support in (True, False):
        tf.keras.utils.set_random_seed(0)
        model = DCNModel(DEFAULT_SPECS, DCNConfig(train_on_support=on_support, **SMALL))
        differs = abs(float(model.compute_loss(batch)) - float(model.compute_loss(changed))) > 1e-4
        assert differs == on_support


def test_dcn_f_fine_tunes_each_task_on_its_own_support_set_only():
    tf.keras.utils.set_random_seed(0)
    model = DCNModel(DEFAULT_SPECS, DCNConfig(finetune_steps=3, finetune_lr=0.05, **SMALL))
    batch = _batch(tasks=4, seed=2)
    changed = dict(
        batch, support_label=tf.tensor_scatter_nd_update(batch["support_label"], [[1, 0], [1, 1]], [5.0, 5.0])
    )
    base = model(batch).numpy()
    tuned, tuned_changed = model.adapt_and_score(batch).numpy(), model.adapt_and_score(changed).numpy()
    assert np.abs(tuned - base).max() > 1e-3  # fine-tuning moves the scores
    np.testing.assert_array_equal(np.delete(tuned, 1, 0), np.delete(tuned_changed, 1, 0))  # other tasks: bit-identical
    assert np.abs(tuned[1] - tuned_changed[1]).max() > 1e-4
    np.testing.assert_allclose(model.adapt_and_score(batch, steps=0).numpy(), base, rtol=1e-6)
    # it does what it is for: each task's support loss goes down
    adapted = model.adapt(batch)
    h = model.tower.hidden(model.crossed(batch, "support"), model._split)
    after = task_losses(
        model.tower.apply(h, adapted, start=model._split), batch["support_label"], batch["support_mask"], "rating"
    )
    before = task_losses(model.score_part(batch, "support"), batch["support_label"], batch["support_mask"], "rating")
    assert np.all(after.numpy() < before.numpy())
    # as a predictor, compiled
    wrapped = FineTunedDCN(model)
    np.testing.assert_allclose(tf.function(wrapped)(batch).numpy(), tuned, rtol=1e-5, atol=1e-6)


def test_dcn_config_validation_and_round_trip():
    cfg = DCNConfig(head="ctr", deep=(8,), finetune_layers=2)
    assert DCNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        DCNConfig(deep=(8,), finetune_layers=3)
    with pytest.raises(ValueError):
        DCNConfig(head="regression")
