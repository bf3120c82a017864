"""MeLU / MetaCS-DNN: the inner loop is plain SGD per task, first vs second order, vectorisation, training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models.maml import MAMLConfig, MAMLModel, match_slots
from cmml.models.testing import random_episodes
from cmml.models.training import build_model
from cmml.schemas.episodes import FeatureSpec

SPECS = (
    FeatureSpec("user_id", "user", "categorical", 5),
    FeatureSpec("item_id", "item", "categorical", 7),
    FeatureSpec("genres", "item", "multi", 5, max_len=2),
)
TINY = {"embedding_dim": 2, "hidden": (3,), "inner_lr": 0.05}


def _batch(tasks=4, support=6, query=5, ragged=True, seed=0, head="rating"):
    return {
        k: tf.constant(v)
        for k, v in random_episodes(
            SPECS, tasks=tasks, support=support, query=query, ragged=ragged, seed=seed, head=head
        ).items()
    }


def _model(config: MAMLConfig, seed: int = 0) -> MAMLModel:
    tf.keras.utils.set_random_seed(seed)
    model = MAMLModel(SPECS, config)
    model(_batch())
    return model


def _manual_sgd_step(x, y, m, weights, lr):
    """One SGD step of a 1-hidden-layer ReLU net on the masked mean squared error, backprop by hand (numpy)."""
    (w0, b0), (w1, b1) = weights
    z = x @ w0 + b0
    h = np.maximum(z, 0.0)
    s = (h @ w1 + b1)[:, 0]
    ds = 2.0 * m * (s - y) / m.sum()  # dL/ds
    dw1, db1 = h.T @ ds[:, None], ds.sum(keepdims=True)
    dz = (ds[:, None] @ w1.T) * (z > 0)
    dw0, db0 = x.T @ dz, dz.sum(0)
    return [(w0 - lr * dw0, b0 - lr * db0), (w1 - lr * dw1, b1 - lr * db1)]


@pytest.mark.parametrize("steps", [1, 2])
def test_inner_loop_equals_manual_sgd_for_every_task(steps):
    model = _model(MAMLConfig.melu(steps, **TINY))
    batch = _batch(ragged=True)
    adapted = model.adapt(batch)["network"]
    x = model.embedding(batch, "support").numpy()
    y, m = batch["support_label"].numpy(), batch["support_mask"].numpy()
    start = [(k.numpy(), b.numpy()) for k, b in model.network.params]
    for t in range(x.shape[0]):
        expected = start
        for _ in range(steps):
            expected = _manual_sgd_step(x[t], y[t], m[t], expected, TINY["inner_lr"])
        for (k_fast, b_fast), (k_exp, b_exp) in zip(adapted, expected):
            np.testing.assert_allclose(k_fast.numpy()[t], k_exp, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b_fast.numpy()[t], b_exp, rtol=1e-5, atol=1e-6)
    # and with no step the model is the meta-learned network itself
    np.testing.assert_allclose(
        model.adapt_and_score(batch, steps=0), model.network(model.embedding(batch, "query")), rtol=1e-6
    )


def test_first_and_second_order_outer_gradients_match_their_closed_forms():
    """Linear scorer θ = (w, c): one inner step θ' = θ − α∇L_S(θ). The outer gradient is ∇L_Q(θ')
    (first order) or (I − α H_S) ∇L_Q(θ') (second order), H_S = 2/n X̃ᵀX̃ the inner loss's Hessian."""
    lr = 0.3
    batch = _batch(tasks=3, support=6, query=5, ragged=False, seed=3)
    grads = {}
    for first_order in (True, False):
        model = _model(MAMLConfig.melu(1, first_order=first_order, embedding_dim=2, hidden=(), inner_lr=lr))
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        ((kernel, bias),) = model.network.params
        g_k, g_b = tape.gradient(loss, [kernel, bias])
        grads[first_order] = np.concatenate([g_k.numpy()[:, 0], g_b.numpy()])
    theta = np.concatenate([kernel.numpy()[:, 0], bias.numpy()])  # same seed: same initial weights
    xs = np.concatenate([model.embedding(batch, "support").numpy(), np.ones((3, 6, 1))], -1)
    xq = np.concatenate([model.embedding(batch, "query").numpy(), np.ones((3, 5, 1))], -1)
    ys, yq = batch["support_label"].numpy(), batch["query_label"].numpy()
    first, second = 0.0, 0.0
    for t in range(3):
        fast = theta - lr * 2.0 / 6 * xs[t].T @ (xs[t] @ theta - ys[t])
        g_query = 2.0 / 5 * xq[t].T @ (xq[t] @ fast - yq[t])
        hessian = 2.0 / 6 * xs[t].T @ xs[t]
        first = first + g_query / 3  # the outer loss averages the 3 equally sized tasks
        second = second + (np.eye(len(theta)) - lr * hessian) @ g_query / 3
    np.testing.assert_allclose(grads[True], first, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[False], second, rtol=1e-4, atol=1e-6)
    assert np.abs(first - second).max() > 1e-3  # the second-order term is not negligible here


def _reference_metacs_scores(model: MAMLModel, batch, task: int, steps: int) -> np.ndarray:
    """MetaCS-DNN the slow way: SGD on one task's *full* embedding tables and network (no slot trick)."""
    ordered = model.embedding.ordered
    tables = [model.embedding._table(s).embeddings for s in ordered]
    params = [t for pair in model.network.params for t in pair]

    def rows(part, tabs):
        tokens = []
        for s, table in zip(ordered, tabs):
            ids = batch[f"{part}_{s.name}"][task : task + 1]
            ids = ids[..., None] if s.kind == "categorical" else ids
            tokens.append((ids, tf.gather(table, ids)))
        return model.embedding.pool(tokens)

    def score(part, tabs, flat):
        return model.network.apply(rows(part, tabs), list(zip(flat[0::2], flat[1::2])))

    y, m = batch["support_label"][task : task + 1], batch["support_mask"][task : task + 1]
    variables = [tf.convert_to_tensor(v) for v in tables + params]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(variables)
            s = score("support", variables[: len(tables)], variables[len(tables) :])
            loss = tf.reduce_sum(tf.square(s - y) * m) / tf.reduce_sum(m)
        variables = [
            v - model.config.inner_lr * tf.convert_to_tensor(g)
            for v, g in zip(variables, tape.gradient(loss, variables))
        ]
    return score("query", variables[: len(tables)], variables[len(tables) :]).numpy()[0]


def test_metacs_dnn_adapts_the_embeddings_exactly_like_maml_on_full_tables():
    model = _model(MAMLConfig.metacs_dnn(3, embedding_dim=2, hidden=(3,), inner_lr=0.5))
    batch = _batch(tasks=3, support=8, query=5, seed=5)
    scores = model.adapt_and_score(batch).numpy()
    melu = _model(MAMLConfig.melu(3, embedding_dim=2, hidden=(3,), inner_lr=0.5))  # same weights, embeddings fixed
    for t in range(3):
        np.testing.assert_allclose(scores[t], _reference_metacs_scores(model, batch, t, 3), rtol=1e-4, atol=1e-5)
    assert np.abs(scores - melu.adapt_and_score(batch).numpy()).max() > 1e-4  # adapting embeddings matters


def test_match_slots_maps_ids_to_their_first_support_occurrence():
    support = tf.constant([[4, 2, 4, 0], [1, 1, 3, 0]], tf.int64)
    query = tf.constant([[2, 4, 7, 0], [3, 1, 4, 1]], tf.int64)
    assert match_slots(support, support).numpy().tolist() == [[0, 1, 0, 4], [0, 0, 2, 4]]
    assert match_slots(query, support).numpy().tolist() == [[1, 0, 4, 4], [2, 0, 4, 0]]


@pytest.mark.parametrize("adapt", ["fc", "all"])
def test_tasks_adapt_independently_and_the_compiled_call_matches(adapt):
    """A batch of tasks gives each task what it gets alone (no leakage between fast weights)."""
    model = _model(MAMLConfig(adapt=adapt, inner_steps=2, **TINY))
    batch = _batch(tasks=4, seed=7)
    together = model.adapt_and_score(batch).numpy()
    for t in range(4):
        alone = model.adapt_and_score({k: v[t : t + 1] for k, v in batch.items()}).numpy()
        np.testing.assert_allclose(together[t], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tf.function(model.adapt_and_score)(batch).numpy(), together, rtol=1e-5, atol=1e-6)
    assert model.predict(batch, verbose=0).shape == together.shape


@pytest.mark.parametrize(
    "config",
    [
        MAMLConfig.melu(3, first_order=False),
        MAMLConfig.melu(3, first_order=True, head="ctr"),
        MAMLConfig.metacs_dnn(2, first_order=False),
    ],
    ids=["melu-2nd-order", "melu-1st-order-ctr", "metacs-dnn"],
)
def test_meta_training_lowers_the_query_loss(config):
    config = config.replace(embedding_dim=8, hidden=(16, 16), learning_rate=1e-2)
    tf.keras.utils.set_random_seed(0)
    model = build_model("maml", SPECS, "user" if config.head == "rating" else "scenario", config.to_dict())
    batch = _batch(tasks=8, support=10, query=6, seed=1, head=config.head)
    before = float(model.compute_loss(batch))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(40), epochs=1, verbose=0)
    after = float(model.compute_loss(batch))
    assert after < 0.6 * before, (before, after)


def test_config_validation_and_round_trip():
    cfg = MAMLConfig.metacs_dnn(7, first_order=True, hidden=(8,))
    assert MAMLConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.adapt == "all" and cfg.inner_steps == 7
    with pytest.raises(ValueError):
        MAMLConfig(adapt="embeddings")
    with pytest.raises(ValueError):
        MAMLConfig.from_dict({"inner_step": 3})


def test_row_embedding_tokens_then_pool_equals_the_feature_embedding():
    model = _model(MAMLConfig.melu(1, **TINY))
    batch = _batch(seed=9)
    for part in ("support", "query"):
        np.testing.assert_allclose(
            model.embedding.pool(model.embedding.tokens(batch, part)), model.embedding(batch, part), rtol=1e-6
        )
