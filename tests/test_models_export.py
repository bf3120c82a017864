"""SavedModel export: four signatures, same scores in a process without this package, stock ops only."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig
from cmml.models.export import export_saved_model, graph_ops, non_stock_ops
from cmml.models.testing import DEFAULT_SPECS, random_episodes

CONFIGS = {
    "default": CMMLConfig(embedding_dim=8),  # GRU + dot + FiLM
    "soft-mean": CMMLConfig(embedding_dim=8, encoder="mean", hybrid="mlp", modulation="soft"),
    "biases": CMMLConfig(embedding_dim=8, encoder="gru", item_bias=True, support_bias=True, residual_labels=True),
}

# Runs in a fresh interpreter where `cmml` cannot be imported and Keras 2 is not selected:
# only TensorFlow's SavedModel loader and stock ops are available.
LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["cmml"] = None  # any import of the package now fails
    try:
        import cmml  # noqa: F401
        raise SystemExit("cmml is importable")
    except ImportError:
        pass
    import numpy as np, tensorflow as tf
    model_dir, inputs_path, out_path = sys.argv[1:4]
    data = dict(np.load(inputs_path))
    fns = tf.saved_model.load(model_dir).signatures
    def pick(prefix):
        return {k: tf.constant(v) for k, v in data.items() if k.startswith(prefix) and k != "query_label"}
    out = {}
    out["serving_default"] = fns["serving_default"](**pick("support_"), **pick("query_"))["scores"].numpy()
    enc = fns["encode_context"](**pick("support_"))
    out["context"], out["state"] = enc["context"].numpy(), enc["state"].numpy()
    out["score"] = fns["score"](context=enc["context"], **pick("query_"))["scores"].numpy()
    state = tf.zeros_like(enc["state"])
    width = data["support_mask"].shape[1]
    for k in range(width):  # one interaction at a time
        support = {n[len("support_") :]: v for n, v in data.items() if n.startswith("support_")}
        new = {"new_" + n: tf.constant(v[:, k : k + 1]) for n, v in support.items()}
        upd = fns["update_context"](state=state, **new)
        state = upd["state"]
    out["update_context"] = upd["context"].numpy()
    np.savez(out_path, **out)
    """
)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    tf.keras.utils.set_random_seed(1)
    model = CMMLModel(DEFAULT_SPECS, CONFIGS[request.param])
    episodes = random_episodes(tasks=4, support=9, query=7, seed=11)
    model({k: tf.constant(v) for k, v in episodes.items()})  # build
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    path = export_saved_model(model, tmp_path_factory.mktemp(request.param) / "model")
    # TensorFlow's saver lowers absl's verbosity; the export must restore it (pipeline progress relies on it)
    assert absl_logger.level == logging.INFO
    return model, episodes, path


def test_signatures_match_in_memory_model_in_a_process_without_the_package(exported, tmp_path):
    model, episodes, path = exported
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **episodes)
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}  # no TF_USE_LEGACY_KERAS, no PYTHONPATH
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(inputs), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")

    features = {k: tf.constant(v) for k, v in episodes.items()}
    scores = model(features).numpy()
    context = model.encode_context(features).numpy()
    np.testing.assert_allclose(out["serving_default"], scores, atol=1e-5)
    np.testing.assert_allclose(out["score"], scores, atol=1e-5)
    np.testing.assert_allclose(out["context"], context, atol=1e-5)
    # online updates, one interaction at a time, agree with encoding the whole support set
    np.testing.assert_allclose(out["update_context"], context, atol=1e-5)
    assert out["state"].shape == (4, model.state_size)


def test_exported_graph_has_only_stock_ops(exported):
    _, _, path = exported
    ops = graph_ops(path)
    assert {"MatMul", "ReadVariableOp"} <= ops
    assert non_stock_ops(path) == set(), non_stock_ops(path)


def test_op_check_catches_python_callbacks(tmp_path):
    """The stock-op check is not vacuous: a py_function in the graph is reported."""

    class WithPyFunc(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def f(self, x):
            return tf.py_function(lambda t: t * 2, [x], tf.float32)

    module = WithPyFunc()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.f.get_concrete_function()})
    assert "EagerPyFunc" in non_stock_ops(tmp_path / "m")


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_update_is_chunk_free(pooling):
    """Pooling state updates: any chunking of the support set gives the same context."""
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(embedding_dim=8, encoder=pooling))
    episodes = random_episodes(tasks=4, support=9, query=7, seed=12)
    f = {k: tf.constant(v) for k, v in episodes.items()}
    full = model.encode_context(f).numpy()
    state = model.initial_state(4)
    for a, b in ((0, 2), (2, 7), (7, 9)):
        piece = {k: v[:, a:b] for k, v in f.items() if k.startswith("support_")}
        state = model.update_state(state, piece)
    np.testing.assert_allclose(model.context_from_state(state).numpy(), full, atol=1e-5)


def _catalog_export(tmp_path, **config):
    """A small CMML model exported with an item catalog (5 items, raw genres) and a user catalog (2 users):
    (the model, its signatures, the items' genres)."""
    from cmml.models.export import CatalogTable
    from cmml.schemas.episodes import FeatureSpec

    specs = (
        FeatureSpec("gender", "user", "categorical", 4),
        FeatureSpec("item_id", "item", "categorical", 12),
        FeatureSpec("genres", "item", "multi", 8, max_len=3),
    )

    def number(s):  # "i7" / "7" -> 7, "" -> 0
        digits = tf.strings.regex_replace(s, "[^0-9]", "")
        return tf.strings.to_number(tf.where(digits == "", "0", digits), tf.int64)

    class Preprocess(tf.Module):  # raw -> transformed ids, as the tf.Transform layer does
        def __init__(self):
            super().__init__()
            self.genders = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(["M", "F"]), tf.constant([1, 2], tf.int64)), 0
            )

        def __call__(self, raw):
            out = {"gender": self.genders.lookup(raw["gender"])} if "gender" in raw else {}
            out.update({k: number(raw[k]) for k in ("item_id", "genres") if k in raw})
            return out

    preprocess = Preprocess()

    raw_specs = {
        "gender": tf.TensorSpec([], tf.string),
        "item_id": tf.TensorSpec([], tf.string),
        "genres": tf.TensorSpec([None], tf.string),
    }
    item_genres = {"i1": ["1", "2"], "i2": ["3"], "i3": ["4", "5", "6"], "i4": ["7"], "i5": ["2", "7"]}
    items = CatalogTable(
        "item",
        [k.encode() for k in item_genres],
        {"genres": np.array([[int(g) for g in v] + [0] * (3 - len(v)) for v in item_genres.values()], np.int64)},
    )
    users = CatalogTable("user", [b"u1", b"u2"], {"gender": np.array([1, 2], np.int64)})
    tf.keras.utils.set_random_seed(3)
    model = CMMLModel(specs, CMMLConfig(embedding_dim=8, encoder="mean", hybrid="mlp", **config))
    model({k: tf.constant(v) for k, v in random_episodes(specs, tasks=2, support=3, query=2, seed=5).items()})
    path = export_saved_model(
        model, tmp_path / "model", preprocess=preprocess, raw_specs=raw_specs, catalog=items, user_catalog=users
    )
    return model, tf.saved_model.load(str(path)).signatures, item_genres


def test_items_by_id_signatures_read_items_and_known_users_from_the_catalog_tables(tmp_path):
    """With the catalog, every signature names items by id: items get the item table's attributes; a
    user of the user table named by id gets the table's attributes whatever the request says; any
    other user its raw attributes. The scores equal serve_raw's on the same raw attributes."""
    model, fns, item_genres = _catalog_export(tmp_path)
    user = {"user_id", "user_gender"}
    assert set(fns) == {"serving_default", "serve_raw", "recommend", "encode_context", "score", "update_context"}
    assert user | {"support_item_id", "support_label", "query_item_id"} == set(
        fns["serving_default"].structured_input_signature[1]
    )
    assert user | {"support_item_id", "support_label"} == set(fns["encode_context"].structured_input_signature[1])
    assert user | {"context", "query_item_id"} == set(fns["score"].structured_input_signature[1])
    assert user | {"state", "new_item_id", "new_label"} == set(fns["update_context"].structured_input_signature[1])
    assert {"user_id", "user_gender", "support_item_id", "support_label", "k"} == set(
        fns["recommend"].structured_input_signature[1]
    )
    support, query = [["i1", "i2", "i3"], ["i4", ""]], [["i5", "i2"], ["i1", "i3"]]
    support = [r + [""] * (3 - len(r)) for r in support]
    labels = np.array([[5, 1, 3], [4, 0, 0]], np.float32)

    def by_id(user_id, gender):
        return fns["serving_default"](
            support_item_id=tf.constant(support),
            support_label=tf.constant(labels),
            query_item_id=tf.constant(query),
            user_id=tf.constant(user_id),
            user_gender=tf.constant(gender),
        )["scores"].numpy()

    def raw(gender):
        def part(rows):
            return {
                "item_id": tf.constant(rows),
                "genres": tf.constant(
                    [[item_genres.get(i, []) + [""] * (3 - len(item_genres.get(i, []))) for i in r] for r in rows]
                ),
                "gender": tf.constant([[g] * len(r) for g, r in zip(gender, rows)]),
                "mask": tf.constant([[float(i != "") for i in r] for r in rows]),
            }

        s, q = part(support), part(query)
        inputs = {f"support_{k}": v for k, v in s.items()} | {f"query_{k}": v for k, v in q.items()}
        inputs["support_label"] = tf.constant(labels)
        return fns["serve_raw"](**inputs)["scores"].numpy()

    want = raw(["M", "F"])
    np.testing.assert_allclose(by_id(["", ""], ["M", "F"]), want, atol=1e-5)  # new users: raw attributes
    np.testing.assert_allclose(by_id(["u1", "u2"], ["", ""]), want, atol=1e-5)  # known users: the table's
    np.testing.assert_allclose(by_id(["u1", "u2"], ["F", "M"]), want, atol=1e-5)  # the table wins
    assert not np.allclose(by_id(["", ""], ["F", "M"]), want, atol=1e-5)  # gender matters to the model
    assert not np.allclose(by_id(["u2", "u1"], ["M", "F"]), want, atol=1e-5)

    # the two-stage path by id: encode_context + score = serving_default; update_context from an
    # empty state, one support row at a time, = encode_context
    user_inputs = {"user_id": tf.constant(["u1", ""]), "user_gender": tf.constant(["", "F"])}
    encoded = fns["encode_context"](
        support_item_id=tf.constant(support), support_label=tf.constant(labels), **user_inputs
    )
    two_stage = fns["score"](context=encoded["context"], query_item_id=tf.constant(query), **user_inputs)["scores"]
    np.testing.assert_allclose(two_stage.numpy(), by_id(["u1", ""], ["", "F"]), atol=1e-5)
    state = tf.zeros_like(encoded["state"])
    for j in range(3):
        updated = fns["update_context"](
            state=state,
            new_item_id=tf.constant(support)[:, j : j + 1],
            new_label=tf.constant(labels)[:, j : j + 1],
            **user_inputs,
        )
        state = updated["state"]
    np.testing.assert_allclose(updated["context"].numpy(), encoded["context"].numpy(), atol=1e-5)

    # recommend: the top of the whole catalog, support items left out, scored as serving_default scores them
    everything = [list(item_genres)] * 2
    all_scores = fns["serving_default"](
        support_item_id=tf.constant(support),
        support_label=tf.constant(labels),
        query_item_id=tf.constant(everything),
        user_id=tf.constant(["u1", ""]),
        user_gender=tf.constant(["", "F"]),
    )["scores"].numpy()
    top = fns["recommend"](
        support_item_id=tf.constant(support),
        support_label=tf.constant(labels),
        user_id=tf.constant(["u1", ""]),
        user_gender=tf.constant(["", "F"]),
        k=tf.constant([2, 2]),
    )
    for b in range(2):
        seen = set(support[b])
        ranked = sorted(
            (i for i in item_genres if i not in seen), key=lambda i: -all_scores[b][list(item_genres).index(i)]
        )
        assert [x.decode() for x in top["item_id"][b].numpy()] == ranked[:2]
        want_top = [all_scores[b][list(item_genres).index(i)] for i in ranked[:2]]
        np.testing.assert_allclose(top["scores"][b].numpy(), want_top, atol=1e-5)
    assert fns["recommend"].structured_input_signature[1]["k"].shape == [None]  # per task: TF Serving batches it
    # k per task: the output has max(k) columns, a task's past its own k hold "" and -inf
    mixed = fns["recommend"](
        support_item_id=tf.constant(support),
        support_label=tf.constant(labels),
        user_id=tf.constant(["u1", ""]),
        user_gender=tf.constant(["", "F"]),
        k=tf.constant([1, 3]),
    )
    assert mixed["item_id"].numpy().tolist()[0][1:] == [b"", b""] and mixed["item_id"].shape == (2, 3)
    assert np.isneginf(mixed["scores"].numpy()[0, 1:]).all() and np.isfinite(mixed["scores"].numpy()[1]).all()
    np.testing.assert_array_equal(mixed["item_id"].numpy()[1, :2], top["item_id"].numpy()[1])


def test_recommend_ranks_by_the_relevance_head_and_rank_items_scores_named_items(tmp_path):
    """With the catalog relevance head, rank_items = <q, v_i> + b_i + w · serving_default's score (q from the
    layer's query on the task's transformed support set), and recommend returns the top of rank_items over
    the whole catalog, support items left out."""
    model, fns, item_genres = _catalog_export(tmp_path, catalog_weight=1.0, catalog_rating_weight=0.5)
    assert "rank_items" in fns and set(fns["rank_items"].structured_input_signature[1]) == set(
        fns["serving_default"].structured_input_signature[1]
    )
    support = [["i1", "i2", "i3"], ["i4", "", ""]]
    labels = np.array([[5, 1, 4], [4, 0, 0]], np.float32)
    users = {"user_id": tf.constant(["u1", ""]), "user_gender": tf.constant(["", "F"])}
    everything = tf.constant([list(item_genres)] * 2)
    inputs = {"support_item_id": tf.constant(support), "support_label": tf.constant(labels), **users}
    ranked = fns["rank_items"](query_item_id=everything, **inputs)["scores"].numpy()
    rating = fns["serving_default"](query_item_id=everything, **inputs)["scores"].numpy()

    context = fns["encode_context"](**inputs)["context"]
    e_u = model.user_embedding({"gender": tf.constant([[1], [2]], tf.int64)})[:, 0]  # u1 is M in the table; F
    ids = tf.constant([[1, 2, 3], [4, 0, 0]], tf.int64)
    mask = tf.constant((labels > 0).astype(np.float32))
    q = model.relevance.query(tf.concat([context, e_u], -1), ids, mask, tf.constant((labels >= 4).astype(np.float32)))
    v, b = model.relevance.items(tf.constant([1, 2, 3, 4, 5], tf.int64))
    logits = q.numpy() @ v.numpy().T + b.numpy()
    np.testing.assert_allclose(ranked, logits + 0.5 * rating, atol=1e-5)

    top = fns["recommend"](k=tf.constant([2, 3]), **inputs)
    for t in range(2):
        order = [i for i in np.argsort(-ranked[t], kind="stable") if list(item_genres)[i] not in support[t]]
        want = [list(item_genres)[i] for i in order[: 2 + t]]
        assert [x.decode() for x in top["item_id"][t].numpy()[: 2 + t]] == want
        np.testing.assert_allclose(top["scores"][t].numpy()[: 2 + t], ranked[t][order[: 2 + t]], atol=1e-5)
