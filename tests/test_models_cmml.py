"""The CMML model: every configuration trains, gradients reach every variable, TFRS integration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401
from cmml.models.cmml import CMMLModel, permute_support
from cmml.models.config import ENCODERS, HYBRIDS, CMMLConfig
from cmml.models.testing import DEFAULT_SPECS, random_episodes
from cmml.models.training import build_model

TINY = {
    "embedding_dim": 8,
    "hidden": (16, 16),
    "hyper_hidden": (16,),
    "gru_units": 16,
    "encoder_mlp": (16,),
    "encoder_hidden": (16,),
    "label_hidden": (8,),
    "hybrid_mlp": (16,),
    "soft_width": 8,
    "learning_rate": 1e-2,
}
COMBOS = list(itertools.product(ENCODERS, HYBRIDS, ("weight", "sigmoid", "film", "soft"), ("rating", "ctr")))


def _tensors(episodes):
    return {k: tf.constant(v) for k, v in episodes.items()}


def test_there_are_72_combinations():
    assert len(COMBOS) == 72


@pytest.mark.slow
@pytest.mark.parametrize("encoder, hybrid, modulation, head", COMBOS)
def test_every_configuration_trains(encoder, hybrid, modulation, head):
    """Builds, gets a gradient on every trainable variable, and lowers its loss in 20 steps.

    Gradients are checked over the run, not only at step 0: FiLM's heads start at zero (the
    identity modulation), which blocks the gradient to everything upstream for the first step.
    Eager steps: tracing 72 graphs would cost minutes and test the same arithmetic.
    """
    tf.keras.utils.set_random_seed(0)
    model = CMMLModel(
        DEFAULT_SPECS, CMMLConfig(head=head, encoder=encoder, hybrid=hybrid, modulation=modulation, **TINY)
    )
    optimizer = tf.keras.optimizers.Adam(1e-2)
    batch = _tensors(random_episodes(head=head, tasks=8, seed=1))
    losses, reached = [], set()
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        reached |= {
            v.name
            for v, g in zip(model.trainable_variables, grads)
            if g is not None and np.any(tf.convert_to_tensor(g).numpy())
        }
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    dead = [v.name for v in model.trainable_variables if v.name not in reached]
    assert not dead, f"no gradient for {dead}"
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_scores_shape_and_padding_does_not_leak():
    """Padded query rows and padded support rows do not change the real rows' scores."""
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(encoder="gru", **TINY))
    ep = random_episodes(tasks=3, support=6, query=5, ragged=False, seed=3)
    scores = model(_tensors(ep)).numpy()
    assert scores.shape == (3, 5)
    padded = {}
    for k, v in ep.items():
        pad = [(0, 0), (0, 4)] + [(0, 0)] * (v.ndim - 2)
        padded[k] = np.pad(v, pad, constant_values=0)
    padded["support_item_id"][:, 6:] = 7  # garbage in padded support rows, masked out
    np.testing.assert_allclose(model(_tensors(padded)).numpy()[:, :5], scores, atol=1e-5)


def test_permute_support_keeps_padding_last_and_rows_together():
    ep = _tensors(random_episodes(tasks=5, support=9, seed=4))
    out = permute_support(ep, seed=tf.constant([1, 2]))
    mask = ep["support_mask"].numpy()
    np.testing.assert_array_equal(out["support_mask"].numpy(), mask)  # valid rows stay first
    for t in range(5):
        n = int(mask[t].sum())
        before = sorted(zip(ep["support_item_id"].numpy()[t, :n], ep["support_label"].numpy()[t, :n]))
        after = sorted(zip(out["support_item_id"].numpy()[t, :n], out["support_label"].numpy()[t, :n]))
        assert before == after  # a permutation of each task's rows, features and labels together
    assert not np.array_equal(out["support_item_id"].numpy(), ep["support_item_id"].numpy())
    np.testing.assert_array_equal(out["query_item_id"].numpy(), ep["query_item_id"].numpy())


def test_compiled_fit_with_tfrs_ranking_task():
    """The default configuration trains through keras fit (tf.function) as a TFRS model."""
    tf.keras.utils.set_random_seed(0)
    model = build_model("cmml", DEFAULT_SPECS, "user", {**TINY, "learning_rate": 3e-3})
    assert isinstance(model, tfrs.models.Model) and isinstance(model.task, tfrs.tasks.Ranking)
    data = tf.data.Dataset.from_tensors(_tensors(random_episodes(tasks=16, seed=5))).repeat(30)
    history = model.fit(data, epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "mae", "rmse"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.train_function is not None  # compiled step


def test_non_negative_context_ignores_negatives():
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(head="ctr", encoder="mean", positives_only_context=True, **TINY))
    ep = random_episodes(head="ctr", tasks=2, seed=6)
    base = model.encode_context(_tensors(ep)).numpy()
    changed = dict(ep)
    negatives = (ep["support_label"] == 0) & (ep["support_mask"] > 0)
    changed["support_item_id"] = np.where(negatives, 3, ep["support_item_id"])
    np.testing.assert_allclose(model.encode_context(_tensors(changed)).numpy(), base, atol=1e-6)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="encoder = 'lstm': choose one of mean, max, gru"):
        CMMLConfig(encoder="lstm")
    with pytest.raises(ValueError, match="unknown CMML config key"):
        CMMLConfig.from_dict({"encodr": "gru"})
    cfg = CMMLConfig.from_dict({"encoder": "mean", "hidden": [32, 32]})
    assert cfg.hidden == (32, 32) and CMMLConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown feature"):
        CMMLModel(DEFAULT_SPECS, CMMLConfig(features=("item_id", "colour")))


def test_listwise_loss_matches_hand_computation_and_ignores_padding():
    from cmml.models.losses import listwise_softmax_loss

    scores = tf.constant([[2.0, 0.0, 1.0, 9.0], [1.0, 5.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    labels = tf.constant([[5.0, 1.0, 3.0, 4.0], [2.0, 4.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    mask = tf.constant(
        [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    )  # the last task has one row: skipped

    def ce(s, y, tau):
        p = np.exp(np.array(y) / tau) / np.exp(np.array(y) / tau).sum()
        log_q = np.array(s) - np.log(np.exp(s).sum())
        return -(p * log_q).sum()

    expected = (ce([2.0, 0.0, 1.0], [5.0, 1.0, 3.0], 2.0) + ce([1.0, 5.0], [2.0, 4.0], 2.0)) / 2
    got = float(listwise_softmax_loss(scores, labels, mask, temperature=2.0))
    assert got == pytest.approx(expected, rel=1e-5)
    # padded rows carry no weight, whatever their score or label
    noisy = tf.constant([[2.0, 0.0, 1.0, -50.0], [1.0, 5.0, 7.0, 7.0], [3.0, 1.0, 1.0, 1.0]])
    assert float(listwise_softmax_loss(noisy, labels, mask, temperature=2.0)) == pytest.approx(expected, rel=1e-5)
    # the loss falls when the scores follow the labels' order
    assert float(listwise_softmax_loss(labels, labels, mask)) < float(listwise_softmax_loss(-labels, labels, mask))


def test_listwise_weight_adds_the_ranking_term_to_the_rating_loss():
    from cmml.models.losses import listwise_softmax_loss

    ep = _tensors(random_episodes(tasks=4, seed=11))
    losses = {}
    for w in (0.0, 0.5):
        tf.keras.utils.set_random_seed(3)
        model = CMMLModel(DEFAULT_SPECS, CMMLConfig(**TINY, listwise_weight=w, permute_support=False))
        losses[w] = float(model.compute_loss(ep))
    scores = model(ep)
    term = float(listwise_softmax_loss(scores, ep["query_label"], ep["query_mask"]))
    assert term > 0
    assert losses[0.5] == pytest.approx(losses[0.0] + 0.5 * term, rel=1e-5)
    with pytest.raises(ValueError, match="rating head only"):
        CMMLConfig(head="ctr", listwise_weight=1.0)
    with pytest.raises(ValueError, match="listwise_temperature > 0"):
        CMMLConfig(listwise_temperature=0.0)


def test_sampled_catalog_softmax_matches_hand_computation():
    from cmml.models.losses import sampled_catalog_softmax

    positive = tf.constant([[2.0, 0.5, 9.0], [1.0, 0.0, 0.0]])
    positive_mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # 3 positives; 9.0 is not one
    negative = tf.constant([[1.0, 3.0, -1.0], [0.0, 4.0, 2.0]])
    negative_mask = tf.constant([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])  # task 2's 4.0 is its own item

    def ce(p, others):
        return -(p - np.log(np.exp(p) + np.exp(others).sum()))

    expected = (ce(2.0, [1.0, 3.0, -1.0]) + ce(0.5, [1.0, 3.0, -1.0]) + ce(1.0, [0.0, 2.0])) / 3
    got = float(sampled_catalog_softmax(positive, positive_mask, negative, negative_mask))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(sampled_catalog_softmax(positive, tf.zeros_like(positive_mask), negative, negative_mask)) == 0.0


def test_catalog_head_adds_its_term_and_learns_which_items_users_pick():
    """catalog_weight adds w · the sampled softmax to the rating loss; trained on tasks whose liked
    query items are always items 1-3, the head ranks those above every other item for a new task."""
    ep = _tensors(random_episodes(tasks=4, seed=11))
    tf.keras.utils.set_random_seed(3)
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(**TINY, permute_support=False, catalog_weight=0.5, catalog_liked=4.0))
    tf.random.set_seed(5)
    with_head = float(model.compute_loss(ep, training=True))
    assert float(model.compute_loss(ep)) < with_head  # validation: the rating loss alone
    tf.random.set_seed(5)
    term = float(model.catalog_loss(model.encode_context(ep), ep))
    mask = ep["query_mask"].numpy()
    squared = (model(ep).numpy() - ep["query_label"].numpy()) ** 2
    assert term > 0
    assert with_head == pytest.approx((squared * mask).sum() / mask.sum() + 0.5 * term, rel=1e-5)

    episodes = random_episodes(tasks=64, support=4, query=6, seed=2)
    vocab = [s.vocab_size for s in DEFAULT_SPECS if s.name == "item_id"][0]
    rng = np.random.default_rng(0)
    episodes["query_item_id"][:, :3] = rng.integers(1, 4, size=(64, 3))  # liked: items 1-3
    episodes["query_label"][:, :3] = 5.0
    episodes["query_label"][:, 3:] = 1.0
    tf.keras.utils.set_random_seed(1)
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(**TINY, catalog_weight=1.0, catalog_negatives=32))
    model.compile(tf.keras.optimizers.Adam(3e-2))
    model.fit(tf.data.Dataset.from_tensors(_tensors(episodes)).repeat(60), verbose=0)
    new = _tensors(random_episodes(tasks=2, support=4, query=6, seed=99))
    from cmml.models.retrieval import catalog_embeddings, catalog_relevance, score_items

    items = {"item_id": tf.range(1, vocab, dtype=tf.int64)}
    items["genres"] = tf.zeros([vocab - 1, 3], tf.int64)
    x, base = catalog_embeddings(model, items)
    v, b = catalog_relevance(model, items["item_id"])
    context, e_u = model.encode_context(new), model.task_user(new)
    scores = score_items(model, context, e_u, x[None], base[None], (v[None], b[None]), new)
    top3 = np.sort(np.argsort(-scores.numpy(), axis=1)[:, :3] + 1, axis=1)
    np.testing.assert_array_equal(top3, [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="relevance head"):
        score_items(model, context, e_u, x[None], base[None])


def test_catalog_head_config_is_validated():
    with pytest.raises(ValueError, match="ctr labels are 0/1"):
        CMMLConfig(head="ctr", catalog_weight=1.0, catalog_liked=4.0)
    from cmml.models.config import liked_threshold

    assert liked_threshold(CMMLConfig(head="ctr", catalog_weight=1.0)) == 0.5
    assert liked_threshold(CMMLConfig(catalog_weight=1.0)) == 4.0
    with pytest.raises(ValueError, match="catalog_weight and catalog_rating_weight must be >= 0"):
        CMMLConfig(catalog_weight=-1.0)
    with pytest.raises(ValueError, match="set catalog_weight"):
        CMMLConfig(catalog_rating_weight=1.0)
    scenario = CMMLModel(DEFAULT_SPECS, CMMLConfig(**TINY, head="ctr", catalog_weight=1.0))
    assert not scenario.relevance_uses_user  # a scenario task's rows come from many users
    specs = [s for s in DEFAULT_SPECS if s.name != "item_id"]
    with pytest.raises(ValueError, match="needs an 'item_id' feature"):
        CMMLModel(specs, CMMLConfig(catalog_weight=1.0))


def test_the_catalog_head_leaves_the_rating_model_unchanged():
    """Same seed, with and without the head: the same rating scores after training (the head's input is
    held fixed and its variables are created after the rating model's)."""
    episodes = tf.data.Dataset.from_tensors(_tensors(random_episodes(tasks=8, seed=4))).repeat(5)
    scores = []
    for weight in (0.0, 1.0):
        tf.keras.utils.set_random_seed(7)
        model = CMMLModel(DEFAULT_SPECS, CMMLConfig(**TINY, catalog_weight=weight))  # support shuffled per step
        model(next(iter(episodes)))
        model.compile(tf.keras.optimizers.Adam(1e-2))
        model.fit(episodes, verbose=0)
        scores.append(model(next(iter(episodes))).numpy())
    assert len(model.relevance.trainable_variables) == 7  # query MLP (2 layers), u, v, b
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-6)
