"""Unit tests of the CMML layers, one property each."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models.layers.core import MLP
from cmml.models.layers.embeddings import FeatureEmbedding, LabelEmbedding
from cmml.models.layers.encoders import PoolingContextEncoder, SequentialContextEncoder
from cmml.models.layers.hybrid import HybridContext
from cmml.models.layers.modulation import (
    FiLM,
    FiLMModulatedMLP,
    PlainMLP,
    SigmoidModulatedMLP,
    WeightModulatedMLP,
)
from cmml.models.layers.relevance import CatalogRelevance
from cmml.models.layers.routing import SoftModularNetwork
from cmml.schemas.episodes import FeatureSpec

B, S, D = 3, 7, 10


def _rows(seed=0, b=B, s=S, d=D):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(b, s, d)), tf.float32)


def _encoders():
    return {
        "mean": PoolingContextEncoder([16], 12, pooling="mean"),
        "max": PoolingContextEncoder([16], 12, pooling="max"),
        "gru": SequentialContextEncoder(16, [16], 12),
    }


@pytest.mark.parametrize(
    "layer, inputs, expected",
    [
        (MLP([8, 4]), [tf.zeros([2, 5, 3])], {"": (2, 5, 4)}),
        (LabelEmbedding([8, 6]), [tf.zeros([2, 5])], {"": (2, 5, 6)}),
        (HybridContext("dot"), [[tf.zeros([2, 6]), tf.zeros([2, 5, 6])]], {"": (2, 5, 6)}),
        (HybridContext("none"), [[tf.zeros([2, 4]), tf.zeros([2, 5, 6])]], {"": (2, 5, 4)}),
        (HybridContext("mlp", [8]), [[tf.zeros([2, 4]), tf.zeros([2, 5, 6])]], {"": (2, 5, 6)}),
        (PlainMLP([8, 8]), [[tf.zeros([9, 6]), tf.zeros([9, 6])]], {"score": (9,)}),
        (WeightModulatedMLP([8, 8], [8]), [[tf.zeros([9, 6]), tf.zeros([9, 4])]], {"score": (9,)}),
        (SigmoidModulatedMLP([8, 8], [8]), [[tf.zeros([9, 6]), tf.zeros([9, 4])]], {"score": (9,)}),
        (FiLMModulatedMLP([8, 8], [8]), [[tf.zeros([9, 6]), tf.zeros([9, 4])]], {"score": (9,)}),
        (
            SoftModularNetwork(3, 4, 5, [8]),
            [[tf.zeros([9, 6]), tf.zeros([9, 4])]],
            {"score": (9,), "routes": (9, 2, 4, 4), "final_route": (9, 4)},
        ),
    ],
)
def test_output_shapes(layer, inputs, expected):
    out = layer(*inputs)
    out = out if isinstance(out, dict) else {"": out}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected


def test_feature_embedding_shapes_and_multi_hot_mean():
    specs = [FeatureSpec("item_id", "item", "categorical", 10), FeatureSpec("genres", "item", "multi", 6, max_len=3)]
    emb = FeatureEmbedding(specs, 4)
    ids = {"item_id": tf.constant([[1, 2]]), "genres": tf.constant([[[1, 2, 0], [0, 0, 0]]])}
    out = emb(ids)
    assert out.shape == (1, 2, 8) and emb.output_dim == 8
    table = emb.tables["genres"].embeddings.numpy()
    np.testing.assert_allclose(out[0, 0, 4:], (table[1] + table[2]) / 2, rtol=1e-6)  # padding ignored
    np.testing.assert_allclose(out[0, 1, 4:], np.zeros(4))  # empty list -> zero vector


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_encoder_is_permutation_invariant(pooling):
    enc = PoolingContextEncoder([16], 12, pooling=pooling)
    rows, mask = _rows(), tf.ones([B, S])
    perm = np.random.default_rng(1).permutation(S)
    a = enc(rows, mask)
    b = enc(tf.gather(rows, perm, axis=1), tf.gather(mask, perm, axis=1))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_mean_pooling_equals_the_mean_of_per_row_codes():
    """The last layer runs after pooling (it is linear): same C as pooling every row's full MLP output."""
    enc = PoolingContextEncoder([16, 8], 12, pooling="mean")
    rows = _rows(seed=4)
    mask = tf.constant([[1, 1, 1, 0, 1, 0, 0], [1] * 7, [0] * 7], tf.float32)  # the last task has no support rows
    got = enc(rows, mask).numpy()
    codes = enc.mlp(rows).numpy()  # [B, S, 12], every layer per row
    m = mask.numpy()[..., None]
    expected = (codes * m).sum(1) / np.maximum(m.sum(1), 1.0)
    np.testing.assert_allclose(got[:2], expected[:2], atol=1e-5)
    np.testing.assert_array_equal(got[2], np.zeros(12))
    assert enc.state_size == 8 + 1  # the last hidden layer and the count


@pytest.mark.parametrize("name", ["mean", "max", "gru"])
def test_padding_with_mask_equals_unpadded(name):
    enc = _encoders()[name]
    rows = _rows()
    unpadded = enc(rows, tf.ones([B, S]))
    garbage = tf.constant(np.random.default_rng(2).normal(size=(B, 5, D)) * 100, tf.float32)
    padded = enc(tf.concat([rows, garbage], axis=1), tf.concat([tf.ones([B, S]), tf.zeros([B, 5])], axis=1))
    np.testing.assert_allclose(unpadded.numpy(), padded.numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["mean", "max", "gru"])
def test_incremental_state_equals_full_encoding(name):
    """accumulate() over pieces (down to one row at a time) gives the full-set context."""
    enc = _encoders()[name]
    rows = _rows(3)
    mask = tf.constant((np.arange(S)[None, :] < np.array([[7], [4], [1]])).astype(np.float32))
    full = enc(rows, mask)
    state = enc.initial_state(B)
    for k in range(S):
        state = enc.accumulate(state, rows[:, k : k + 1], mask[:, k : k + 1])
    np.testing.assert_allclose(enc.finalize(state).numpy(), full.numpy(), atol=1e-5)


def test_gru_context_depends_on_order_pooling_does_not():
    rows, mask = _rows(4), tf.ones([B, S])
    rev = rows[:, ::-1]
    gru = SequentialContextEncoder(16, [16], 12)
    assert np.abs(gru(rows, mask).numpy() - gru(rev, mask).numpy()).max() > 1e-4


def test_soft_routes_are_distributions():
    net = SoftModularNetwork(3, 4, 5, [8])
    rng = np.random.default_rng(5)
    out = net(
        [tf.constant(rng.normal(size=(11, 6)), tf.float32), tf.constant(rng.normal(size=(11, 4)) * 3, tf.float32)]
    )
    routes, final = out["routes"].numpy(), out["final_route"].numpy()
    assert (routes >= 0).all() and (final >= 0).all()
    np.testing.assert_allclose(routes.sum(axis=2), 1.0, atol=1e-5)  # weights into each module j sum to 1
    np.testing.assert_allclose(final.sum(axis=-1), 1.0, atol=1e-5)
    assert routes.std(axis=0).max() > 1e-3  # routes depend on the context


def test_film_identity():
    z = tf.constant(np.random.default_rng(6).normal(size=(4, 5)), tf.float32)
    out = FiLM()([z, tf.ones_like(z), tf.zeros_like(z)])
    np.testing.assert_array_equal(out.numpy(), z.numpy())


def test_film_mlp_starts_as_plain_mlp():
    """Zero-initialised FiLM heads: the context has no effect before training."""
    net = FiLMModulatedMLP([8, 8], [8])
    x = tf.constant(np.random.default_rng(7).normal(size=(5, 6)), tf.float32)
    a = net([x, tf.zeros([5, 4])])["score"]
    b = net([x, tf.constant(np.random.default_rng(8).normal(size=(5, 4)), tf.float32)])["score"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_dot_hybrid_needs_matching_width():
    with pytest.raises(ValueError, match="dot hybrid needs the context width"):
        HybridContext("dot")([tf.zeros([2, 4]), tf.zeros([2, 5, 6])])


@pytest.mark.parametrize(
    "layer",
    [
        MLP([8, 4], activate_last=False, dropout=0.1),
        FeatureEmbedding([FeatureSpec("genres", "item", "multi", 6, max_len=3)], 4),
        LabelEmbedding([8]),
        PoolingContextEncoder([16], 12, pooling="max"),
        SequentialContextEncoder(16, [16], 12),
        HybridContext("mlp", [8]),
        PlainMLP([8]),
        WeightModulatedMLP([8], [4]),
        SigmoidModulatedMLP([8], [4]),
        FiLMModulatedMLP([8], [4]),
        SoftModularNetwork(2, 3, 4, [8]),
        FiLM(),
        CatalogRelevance(10, 4, [8], l2=0.01),
    ],
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize(
    "layer",
    [
        WeightModulatedMLP([8], [4]),
        SigmoidModulatedMLP([8], [4]),
        FiLMModulatedMLP([8], [4]),
        SoftModularNetwork(3, 3, 4, [8]),
    ],
)
def test_per_task_context_equals_per_row_context(layer):
    """context_repeats=Q on a [B, D] context gives the same result as the repeated [B·Q, D] context."""
    rng = np.random.default_rng(9)
    x = tf.constant(rng.normal(size=(6, 5)), tf.float32)  # B=2 tasks x Q=3 rows
    ctx = tf.constant(rng.normal(size=(2, 4)), tf.float32)
    if isinstance(layer, FiLMModulatedMLP):
        layer([x, tf.repeat(ctx, 3, axis=0)])
        for heads in layer.heads:  # leave the zero initialisation so the context matters
            for head in heads:
                head.kernel.assign(rng.normal(size=head.kernel.shape) * 0.5)
    per_row = layer([x, tf.repeat(ctx, 3, axis=0)])
    per_task = layer([x, ctx], context_repeats=3)
    for name in per_row:
        np.testing.assert_allclose(per_task[name].numpy(), per_row[name].numpy(), atol=1e-5)


def test_catalog_relevance_is_a_dot_product_plus_item_bias():
    """r(t, i) = <MLP([h_t; mean u_s; mean of liked u_s]), v_i> + b_i, by hand from the layer's weights;
    the same items for every task ([1, N]) score as the per-task layout; padding rows do not count."""
    tf.keras.utils.set_random_seed(4)
    layer = CatalogRelevance(vocab_size=7, dim=3, hidden=[5])
    context = tf.constant(np.random.default_rng(1).normal(size=(2, 4)), tf.float32)
    support = tf.constant([[2, 4, 0], [3, 0, 0]])
    mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    liked = tf.constant([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    ids = tf.constant([[1, 5, 6]])
    layer([context, support, mask, liked, ids])  # builds the tables
    layer.item_logit_bias.embeddings.assign(tf.constant(np.arange(7, dtype=np.float32)[:, None]))
    logits = layer([context, support, mask, liked, ids]).numpy()
    u = layer.support_vectors.embeddings.numpy()
    pooled = np.stack([(u[2] + u[4]) / 2, u[3]])
    pooled_liked = np.stack([u[4], np.zeros(3)])
    h = np.concatenate([context.numpy(), pooled, pooled_liked], axis=1)
    (w0, b0), (w1, b1) = [(d.kernel.numpy(), d.bias.numpy()) for d in layer.query_mlp.dense]
    q = np.maximum(h @ w0 + b0, 0.0) @ w1 + b1  # [2, 3]
    v = layer.item_vectors.embeddings.numpy()[[1, 5, 6]]
    np.testing.assert_allclose(logits, q @ v.T + np.array([1.0, 5.0, 6.0]), rtol=1e-5, atol=1e-5)
    per_task = layer([context, support, mask, liked, tf.tile(ids, [2, 1])]).numpy()
    np.testing.assert_allclose(per_task, logits, atol=1e-6)
