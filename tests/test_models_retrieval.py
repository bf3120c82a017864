"""The retrieval stage of recommend: the brute-force index, the towers, distillation training, the export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models import retrieval as R
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig
from cmml.schemas import episodes as E


# --- the index ------------------------------------------------------------------------------------------------
def _numpy_top(scores: np.ndarray, exclude: np.ndarray, n: int) -> np.ndarray:
    scores = scores.copy()
    for b, rows in enumerate(exclude):
        valid = rows[(rows >= 0) & (rows < scores.shape[1])]
        scores[b, valid] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :n]


def test_index_returns_the_true_top_n_of_the_dot_product_support_rows_excluded():
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(500, 8)).astype(np.float32)
    query = rng.normal(size=(3, 8)).astype(np.float32)
    index = R.BruteForceIndex(candidates)
    scores = query @ candidates.T
    best = np.argsort(-scores, axis=1)
    # each task excludes its own best rows; -1 (padding) and 500 (outside the catalog) exclude nothing
    exclude = np.array([[best[0, 0], best[0, 3], -1], [best[1, 1], 500, -1], [-1, -1, -1]], np.int64)
    rows = index.propose(tf.constant(query), 20, tf.constant(exclude)).numpy()
    assert rows.shape == (3, 20) and rows.dtype == np.int64
    np.testing.assert_array_equal(rows, _numpy_top(scores, exclude, 20))  # the same rows, in the same order
    for b in range(3):
        assert not set(rows[b]) & set(exclude[b])
    assert best[2, 0] == rows[2, 0]  # nothing excluded for the third task
    # without exclusions; N above the index size is cut to it; a tensor N works as an int
    np.testing.assert_array_equal(index.propose(tf.constant(query), 7).numpy(), best[:, :7])
    assert index.propose(tf.constant(query), tf.constant(10_000)).shape == (3, 500)


def test_excluded_rows_come_last_when_n_exceeds_the_rows_left():
    candidates = np.eye(4, dtype=np.float32)
    query = np.array([[4.0, 3.0, 2.0, 1.0]], np.float32)
    rows = R.BruteForceIndex(candidates).propose(tf.constant(query), 4, tf.constant([[0, 2]])).numpy()
    assert list(rows[0][:2]) == [1, 3] and set(rows[0][2:]) == {0, 2}


def test_agreement_counts_the_exhaustive_top_k_found_in_the_first_n():
    top = np.array([[5, 6, 7], [1, 2, 3]])
    proposed = np.array([[7, 9, 5, 8, 6], [4, 0, 9, 8, 1]])
    got = R.agreement(top, proposed, [1, 3, 5])
    assert got == {1: pytest.approx(1 / 6), 3: pytest.approx(2 / 6), 5: pytest.approx(4 / 6)}


# --- the towers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [R.QueryTower, R.CandidateTower])
def test_tower_config_round_trip_and_shapes(cls):
    tower = cls(6, [16, 8], name="tower")
    x = tf.random.stateless_normal([5, 11], seed=[1, 2])
    tower.adapt(x)
    out = tower(x)
    assert out.shape == (5, 6)
    config = tower.get_config()
    assert config["dim"] == 6 and config["hidden"] == [16, 8]
    copy = cls.from_config(config)
    assert copy.get_config() == config
    copy(x)  # build, then the same weights give the same output
    copy.set_weights(tower.get_weights())
    np.testing.assert_allclose(copy(x).numpy(), out.numpy(), atol=1e-6)


def test_config_validation_gives_clear_errors():
    assert R.RetrievalConfig.from_dict({"candidates": 300}).candidates == 300
    for bad, match in (
        ({"candidates": 0}, "candidates"),
        ({"candidate_grid": [500, 100]}, "increasing"),
        ({"candidate_grid": [5], "k": 10}, "at least k"),
        ({"target_agreement": 1.5}, "target_agreement"),
        ({"hidden": []}, "hidden"),
        ({"min_catalog_size": "big"}, "min_catalog_size"),
        ({"negatives": 2.5}, "negatives"),
        ({"epoch": 3}, "unknown retrieval config key"),
    ):
        with pytest.raises(ValueError, match=match):
            R.RetrievalConfig.from_dict(bad)


def test_pipeline_config_checks_the_retrieval_section():
    from cmml.pipeline.config import ConfigError, load_config

    config = load_config(overrides={"retrieval": {"min_catalog_size": 1000}})
    assert config.retrieval["min_catalog_size"] == 1000 and config.retrieval["candidates"] is None
    assert R.RetrievalConfig.from_dict(config.retrieval) == R.RetrievalConfig(min_catalog_size=1000)
    with pytest.raises(ConfigError, match="retrieval: RetrievalConfig.target_agreement"):
        load_config(overrides={"retrieval": {"target_agreement": 0}})
    with pytest.raises(ConfigError, match="retrieval: unknown retrieval config key"):
        load_config(overrides={"retrieval": {"candidate": 5}})


# --- distillation on TaskGen records -------------------------------------------------------------------------
N_ITEMS, N_USERS = 400, 60
SPECS = [
    E.FeatureSpec("gender", "user", "categorical", 3),
    E.FeatureSpec("item_id", "item", "categorical", N_ITEMS + 2),
    E.FeatureSpec("genres", "item", "multi", 9, 3),
]


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    """TaskGen records of 60 users (14..40 ratings of 400 items, by theme) and the catalog, written by
    TaskGen's own writers; 10 users meta-test, about a fifth of the others meta_valid."""
    from tfx_bsl.coders import example_coder

    from cmml.components import common
    from cmml.components.task_gen.config import TaskGenConfig
    from cmml.components.task_gen.keys import to_binary
    from cmml.components.task_gen.records import write_catalog
    from cmml.components.task_gen.rows import ShardRows
    from cmml.components.task_gen.splits import make_plan
    from cmml.components.task_gen.tables import FeatureTable, offsets_from_lengths, with_features
    from cmml.components.task_gen.user_tasks import build_user_tasks
    from cmml.schemas import tasks as T

    rng = np.random.default_rng(7)
    users = FeatureTable(
        np.arange(1, N_USERS + 1, dtype=np.uint64) * np.uint64(1000),
        to_binary([f"u{u}" for u in range(1, N_USERS + 1)]),
        {"gender": 1 + np.arange(N_USERS, dtype=np.int64) % 2},
        {},
        np.zeros(N_USERS, np.int64),
    )
    genre_lists = [[1 + i % 8] + ([1 + (i // 8) % 8] if i % 3 else []) for i in range(N_ITEMS)]
    items = FeatureTable(
        np.arange(1, N_ITEMS + 1, dtype=np.uint64),
        to_binary([f"i{i}" for i in range(1, N_ITEMS + 1)]),
        {"item_id": np.arange(1, N_ITEMS + 1, dtype=np.int64)},
        {
            "genres": (
                np.array([g for gl in genre_lists for g in gl], np.int64),
                offsets_from_lengths(np.array([len(gl) for gl in genre_lists])),
            )
        },
        np.zeros(N_ITEMS, np.int64),
    )
    rows, counts = [], []
    for u in range(N_USERS):
        count = int(rng.integers(14, 41))
        liked = rng.choice(N_ITEMS, size=count, replace=False)
        counts.append(count)
        rows += [(u, i, float(1 + (i + u) % 5)) for i in liked]
    task = np.array([users.hashes[u] for u, _, _ in rows])
    shard = ShardRows(
        task, task.copy(), np.array([items.hashes[i] for _, i, _ in rows]), np.array([y for *_, y in rows], np.float32)
    )
    counts = np.array(counts)
    config = TaskGenConfig(
        split_mode="list",
        test_keys=tuple(f"u{u}" for u in range(1, 11)),
        min_ratings=12,
        max_ratings=100,
        valid_fraction=0.2,
    )
    plan = make_plan(users.hashes, users.keys, counts, counts, config)
    blocks, _, _ = build_user_tasks(shard, plan, users, items, config)
    folder = tmp_path_factory.mktemp("retrieval_tasks")
    write_catalog(str(folder), users, items)
    users, items = with_features(users, users), with_features(items, items)
    for split, block in blocks.items():
        common.write_tfrecords(
            T.split_dir(str(folder), split) + "/tasks-00000-of-00001.tfrecord.gz",
            example_coder.RecordBatchToExamples(block.record_batch("user", users, items)),
        )
    E.save_feature_specs(SPECS, folder / E.FEATURE_SPECS_FILE)
    assert set(blocks) >= {"meta_train", "meta_valid"}
    return folder


def _cmml(data, seed: int = 3) -> CMMLModel:
    from cmml.models.training import TrainingConfig, build_variables

    tf.keras.utils.set_random_seed(seed)
    model = CMMLModel(data.specs, CMMLConfig(embedding_dim=8, encoder="mean", hybrid="mlp", item_bias=True))
    build_variables(model, data.training(TrainingConfig(batch_tasks=8), 0)(0))
    # a spread of item biases: CMML's ranking then has a clear top, as a trained model's has
    model.item_bias.set_weights([np.random.default_rng(seed).normal(0, 0.5, (N_ITEMS + 2, 1)).astype(np.float32)])
    return model


def test_teacher_is_cmml_exhaustive_ranking_with_support_items_left_out(task_root):
    from cmml.models.training import TaskData

    data = TaskData(str(task_root), "user")
    model = _cmml(data)
    _, items = R.catalog_items(str(task_root), model)
    teacher = R.Teacher(model, items, R.row_of_item_id(items))
    batch = next(iter(data.valid))
    query, top, support = (t.numpy() for t in teacher(batch, 15))
    # CMML's own forward pass with the whole catalog as the query set
    b = len(query)
    full = {k: v for k, v in batch.items() if k.startswith("support_")}
    for s in model.feature_specs:
        if s.side == "user":
            full[E.key(E.QUERY, s.name)] = np.repeat(batch[E.key(E.SUPPORT, s.name)][:, :1].numpy(), N_ITEMS, 1)
        else:
            full[E.key(E.QUERY, s.name)] = np.broadcast_to(items[s.name][None], (b,) + items[s.name].shape)
    full[E.key(E.QUERY, E.MASK)] = np.ones((b, N_ITEMS), np.float32)
    scores = model({k: tf.constant(v) for k, v in full.items()}).numpy()
    ids = batch[E.key(E.SUPPORT, "item_id")].numpy()
    mask = batch[E.key(E.SUPPORT, E.MASK)].numpy() > 0
    row_of = {int(i): r for r, i in enumerate(items["item_id"])}  # catalog rows are in raw-id order
    np.testing.assert_array_equal(support, np.where(mask, np.vectorize(lambda i: row_of.get(int(i), -1))(ids), -1))
    want = _numpy_top(scores, support, 15)
    assert (top == want).mean() > 0.99  # float round-off may swap near ties
    assert query.shape == (b, model.x_dim + 8)  # [C; e_u]


def test_training_distills_cmml_ranking_far_above_random_candidates(task_root):
    from cmml.models.training import TaskData, TrainingConfig

    data = TaskData(str(task_root), "user")
    model = _cmml(data)
    config = R.RetrievalConfig(
        candidate_grid=(20, 40, 80),
        k=10,
        dim=16,
        hidden=(64,),
        positives=20,
        negatives=128,
        episodes_per_task=8,
        epochs=15,
        batch_size=128,
        learning_rate=1e-2,
        target_agreement=0.8,
    )
    lines = []
    stage = R.train_retrieval(model, data, TrainingConfig(batch_tasks=8), config, lines.append)
    s = stage.summary
    assert s["catalog_items"] == N_ITEMS and s["meta_valid_tasks"] > 0
    assert any("retrieval epoch" in line for line in lines)
    for n in ("20", "40", "80"):
        # random candidates find about N / 400 of the top 10; the distilled towers far more
        assert s["agreement_random"][n] < int(n) / N_ITEMS + 0.1
        assert s["agreement"][n] > s["agreement_random"][n] + 0.3
        assert s["agreement"][n] > s["agreement_untrained"][n] + 0.1
    reached = [g for g in (20, 40, 80) if s["agreement"][str(g)] >= 0.8]
    assert stage.candidates == (reached[0] if reached else 80)


# --- inside the SavedModel -----------------------------------------------------------------------------------
def test_recommend_with_the_index_reranks_its_candidates_with_stock_ops_only(tmp_path):
    """recommend through the retrieval stage: CMML's top k among the N rows the index proposes, scored as
    serving_default scores them (items by id), support items left out; N = the catalog gives the exhaustive
    answer."""
    from cmml.models.export import CatalogTable, CMMLServingModule, export_saved_model, non_stock_ops
    from cmml.models.testing import random_episodes

    specs = (
        E.FeatureSpec("gender", "user", "categorical", 4),
        E.FeatureSpec("item_id", "item", "categorical", 40),
        E.FeatureSpec("genres", "item", "multi", 8, max_len=2),
    )

    def number(s):  # "i7" / "7" -> 7, "" -> 0
        digits = tf.strings.regex_replace(s, "[^0-9]", "")
        return tf.strings.to_number(tf.where(digits == "", "0", digits), tf.int64)

    class Preprocess(tf.Module):  # raw -> transformed ids, as the tf.Transform layer does
        def __call__(self, raw):
            out = {}
            if "gender" in raw:
                out["gender"] = tf.where(raw["gender"] == "F", 2, 0) + tf.where(raw["gender"] == "M", 1, 0)
                out["gender"] = tf.cast(out["gender"], tf.int64)
            out.update({k: number(raw[k]) for k in ("item_id", "genres") if k in raw})
            return out

    raw_specs = {
        "gender": tf.TensorSpec([], tf.string),
        "item_id": tf.TensorSpec([], tf.string),
        "genres": tf.TensorSpec([None], tf.string),
    }
    names = [f"i{i}" for i in range(1, 31)]
    genres = np.array([[1 + i % 7, 1 + (i * 3) % 7] for i in range(30)], np.int64)
    tf.keras.utils.set_random_seed(5)
    model = CMMLModel(specs, CMMLConfig(embedding_dim=8, encoder="mean", hybrid="mlp", item_bias=True))
    model({k: tf.constant(v) for k, v in random_episodes(specs, tasks=2, support=3, query=2, seed=5).items()})
    model.item_bias.set_weights([np.random.default_rng(1).normal(0, 1, (40, 1)).astype(np.float32)])

    def stage(n):
        query, candidate = R.QueryTower(8, [16], name="query_tower"), R.CandidateTower(8, [16], name="candidate_tower")
        query(tf.zeros([1, model.x_dim + 8])), candidate(tf.zeros([1, 17]))
        return R.RetrievalStage(query, candidate, n)

    support = [["i3", "i7", "i11"], ["i5", "", ""]]
    labels = np.array([[5, 1, 3], [4, 0, 0]], np.float32)
    request = {
        "support_item_id": tf.constant(support),
        "support_label": tf.constant(labels),
        "user_gender": tf.constant(["M", "F"]),
    }
    results = {}
    for n in (30, 6):
        catalog = CatalogTable("item", [k.encode() for k in names], {"genres": genres})
        retrieval = stage(n)
        path = export_saved_model(
            model,
            tmp_path / f"n{n}",
            preprocess=Preprocess(),
            raw_specs=raw_specs,
            catalog=catalog,
            retrieval=retrieval,
        )
        assert not non_stock_ops(path)
        fns = tf.saved_model.load(str(path)).signatures
        top = fns["recommend"](**request, k=tf.constant([4, 4]))
        everything = fns["serving_default"](**request, query_item_id=tf.constant([names, names]))["scores"].numpy()
        results[n] = top
        # the rows the index proposes, from the same stage in memory
        module = CMMLServingModule(model, Preprocess(), raw_specs, catalog=catalog, retrieval=retrieval)
        users = module._task_users(request)
        features = {E.key(E.SUPPORT, E.LABEL): request["support_label"]}
        features.update(module._items_by_id(request["support_item_id"], users, E.SUPPORT))
        query = retrieval.query(model, model.encode_context(features), R.user_embedding(model, users))
        proposed = module.retrieval_index.propose(query, n, catalog.rows.lookup(request["support_item_id"])).numpy()
        for b in range(2):
            got = [x.decode() for x in top["item_id"][b].numpy()]
            allowed = [names[r] for r in proposed[b] if names[r] not in support[b]]
            want = sorted(allowed, key=lambda i: -everything[b][names.index(i)])[:4]
            assert got == want
            np.testing.assert_allclose(
                top["scores"][b].numpy(), [everything[b][names.index(i)] for i in want], atol=1e-5
            )
        assert top["item_id"].shape == (2, 4)
    # N = the whole catalog: the exhaustive top; N = 6 leaves some of it out with untrained towers
    for b in range(2):
        ranked = sorted((i for i in names if i not in support[b]), key=lambda i: -everything[b][names.index(i)])
        assert [x.decode() for x in results[30]["item_id"][b].numpy()] == ranked[:4]
    # k above N is cut to N
    assert fns["recommend"](**request, k=tf.constant([50, 50]))["item_id"].shape == (2, 6)
    # the stage rebuilt from the SavedModel's description and checkpoint (what a catalog refresh needs)
    import json

    rebuilt = R.rebuild_stage(json.loads(tf.saved_model.load(str(path)).retrieval_description.numpy()), model)
    assert rebuilt.candidates == 6
    tf.train.Checkpoint(retrieval=rebuilt).read(str(path / "variables" / "variables")).expect_partial()
    x = tf.random.stateless_normal([3, 17], seed=[4, 2])
    np.testing.assert_allclose(rebuilt.candidate_tower(x).numpy(), retrieval.candidate_tower(x).numpy(), atol=1e-6)
