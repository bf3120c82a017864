"""Full-catalog ranking (``cmml full-catalog``): Recall/NDCG against hand computations, support items left out,
EASE against a direct solve, ALS fold-in against its normal equations, CMML exhaustive against the exported
``recommend`` signature, and choices made on meta_valid only (a tiny suite end to end on synthetic data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

import cmml  # noqa: F401
from cmml.experiments import full_catalog as FC
from cmml.experiments.suites import ModelSpec, Suite
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig
from cmml.models.testing import random_episodes
from cmml.schemas.episodes import LABEL, MASK, SUPPORT, FeatureSpec, key


def _held(rows, labels) -> FC.HeldOut:
    return FC.HeldOut(np.asarray(rows, np.int64), np.asarray(labels, np.float32))


# --- metrics -------------------------------------------------------------------------------------------------------
def test_recall_and_ndcg_match_hand_computations():
    # task 0: support item 0 (scored highest, left out); ranking of the rest 1, 2, 3, 4, 5;
    #         held out: item 2 (5 stars, liked), item 4 (3 stars, not liked), item 5 (4 stars, liked)
    # task 1: held-out ratings all below 4: no liked item, left out of the averages
    # task 2: support items 1 and 3; ranking of the rest 5, 4, 2, 0; liked: item 5 (rank 1), item 0 (rank 4)
    scores = np.array(
        [[10.0, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6], [0.0, 9, 1, 8, 2, 3]],
    )
    support = np.array([[0, -1], [1, -1], [1, 3]])
    held = _held([[2, 4, 5], [0, 2, -1], [5, 0, -1]], [[5, 3, 4], [3, 2, 0], [4, 5, 0]])
    per = FC.ranking_metrics(scores, support, held, ks=(2, 3))
    assert per["recall@2"][0] == pytest.approx(0.5)  # item 2 at rank 2; item 5 at rank 5
    assert per["recall@3"][0] == pytest.approx(0.5)
    assert per["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert math.isnan(per["recall@2"][1]) and math.isnan(per["ndcg@2"][1])
    assert per["recall@2"][2] == pytest.approx(0.5)
    assert per["recall@3"][2] == pytest.approx(0.5)  # item 0 is 4th
    assert per["ndcg@3"][2] == pytest.approx(1.0 / (1 + 1 / math.log2(3)))
    full = FC.ranking_metrics(scores, support, held, ks=(4,))
    assert full["recall@4"][2] == pytest.approx(1.0)
    assert full["ndcg@4"][2] == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_support_items_are_left_out_whatever_their_scores():
    rng = np.random.default_rng(0)
    n = 30
    support = np.array([[3, 7, 11, -1], [0, 1, 2, 4]])
    held = _held([[5, 9], [6, 8]], [[5, 4], [4, 2]])
    base = rng.normal(size=(2, n))
    high, low = base.copy(), base.copy()
    for b, rows in enumerate(support):
        high[b, rows[rows >= 0]] = 1e9  # a ranker that proposes the support items first
        low[b, rows[rows >= 0]] = -1e9
    a, c = FC.ranking_metrics(high, support, held, ks=(1, 3)), FC.ranking_metrics(low, support, held, ks=(1, 3))
    for name in a:
        np.testing.assert_allclose(a[name], c[name])
    # the top of task 0 is its best non-support item: a liked one there gives Recall@1 = 1/2
    top = base.copy()
    top[0, 5] = 1e6
    top[0, [3, 7, 11]] = 1e7
    assert FC.ranking_metrics(top, support, held, ks=(1,))["recall@1"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="support set"):
        FC.ranking_metrics(base, support, _held([[3, 9], [6, 8]], [[5, 4], [4, 2]]))


def test_ties_never_help_a_liked_item():
    scores = np.zeros((1, 5))  # every item ties: liked items rank after the others
    per = FC.ranking_metrics(scores, np.array([[-1]]), _held([[0]], [[5]]), ks=(4, 5))
    assert per["recall@4"][0] == 0.0 and per["recall@5"][0] == 1.0


def test_catalog_rows_of_item_ids():
    # catalog item_id values: rows 2 and 4 share an OOV bucket (9), which no rated item can name
    catalog = FC.Catalog(np.array([b"a", b"b", b"c", b"d", b"e"]), {}, FC.Catalog.index(np.array([3, 1, 9, 2, 9])))
    np.testing.assert_array_equal(catalog.rows(np.array([[1, 2, 3, 0]]), np.array([[1, 1, 1, 0]])), [[1, 3, 0, -1]])
    with pytest.raises(FC.ExperimentError, match="no row"):
        catalog.rows(np.array([[9]]), np.array([[1]]))


def test_two_stage_ranker_orders_only_the_retrieved_candidates():
    rng = np.random.default_rng(6)
    retrieval, rerank = rng.normal(size=(2, 12)), rng.normal(size=(2, 12))
    support = np.array([[0, 1], [2, -1]])
    task = FC.TaskBatch({}, support, np.full((2, 2), 5.0, np.float32))
    retrieval[0, [0, 1]] = 100.0  # support items at the top of the retrieval: never proposed
    two = FC.TwoStageRanker(lambda t: retrieval, lambda t: rerank, candidates=4)(task)
    for b in range(2):
        left = [i for i in range(12) if i not in support[b]]
        proposed = sorted(left, key=lambda i: -retrieval[b, i])[:4]
        assert set(np.flatnonzero(np.isfinite(two[b]))) == set(proposed)
        np.testing.assert_allclose(two[b, proposed], rerank[b, proposed])
    # every item proposed: the re-ranker's own ranking, hence its metrics
    held = _held([[5, 7], [3, 9]], [[5, 4], [4, 5]])
    everything = FC.TwoStageRanker(lambda t: retrieval, lambda t: rerank, candidates=12)(task)
    a, b = FC.ranking_metrics(everything, support, held, ks=(3,)), FC.ranking_metrics(rerank, support, held, ks=(3,))
    for name in a:
        np.testing.assert_allclose(a[name], b[name])


# --- EASE and ALS ----------------------------------------------------------------------------------------------------
def test_ease_weights_equal_a_direct_solve_of_the_constrained_ridge_regression():
    rng = np.random.default_rng(1)
    x = (rng.random((40, 9)) < 0.3).astype(np.float64)
    lam = 2.5
    want = np.zeros((9, 9))
    for j in range(9):  # min ||X_j - X_{-j} b||² + λ||b||², the diagonal weight fixed at 0
        others = [i for i in range(9) if i != j]
        a = x[:, others]
        want[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(8), a.T @ x[:, j])
    got = FC.ease_weights(sp.csr_matrix(x), lam)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(np.diag(got) == 0)


def _tiny_catalog(n: int) -> FC.Catalog:
    ids = np.arange(1, n + 1)
    return FC.Catalog(np.array([f"i{i}".encode() for i in ids]), {"item_id": ids}, FC.Catalog.index(ids))


def _fit_batch(x: np.ndarray) -> dict[str, np.ndarray]:
    """Users × items 0/1 (ratings 5 / 2 where 1 / 2) as one episode batch: support rows = the rated items."""
    users, n = x.shape
    rated = x > 0
    width = int(rated.sum(1).max())
    ids = np.zeros((users, width), np.int64)
    labels = np.zeros((users, width), np.float32)
    for u in range(users):
        cols = np.flatnonzero(rated[u])
        ids[u, : len(cols)] = cols + 1
        labels[u, : len(cols)] = np.where(x[u, cols] == 1, 5.0, 2.0)
    mask = (ids > 0).astype(np.float32)
    return {
        key(SUPPORT, "item_id"): ids,
        key(SUPPORT, LABEL): labels,
        key(SUPPORT, MASK): mask,
        "query_item_id": np.zeros((users, 1), np.int64),
        "query_label": np.zeros((users, 1), np.float32),
        "query_mask": np.zeros((users, 1), np.float32),
    }


def _task(catalog: FC.Catalog, batch: dict[str, np.ndarray]) -> FC.TaskBatch:
    task, _ = FC.split_batch(batch, catalog)
    return task


def test_ease_scores_a_task_from_its_support_row_and_can_drop_low_ratings():
    rng = np.random.default_rng(2)
    x = rng.choice([0, 1, 2], size=(30, 7), p=[0.6, 0.3, 0.1])
    catalog = _tiny_catalog(7)
    model = FC.EASE(catalog, l2=1.0, min_rating=4.0).fit([_fit_batch(x)])
    np.testing.assert_allclose(model.weights, FC.ease_weights(sp.csr_matrix((x == 1).astype(float)), 1.0), atol=1e-5)
    task = _task(catalog, _fit_batch(x[:3]))
    np.testing.assert_allclose(model(task), (x[:3] == 1).astype(np.float32) @ model.weights, rtol=1e-5, atol=1e-6)


def test_als_folds_a_cold_user_in_by_the_least_squares_solve_of_its_support_set():
    implicit = pytest.importorskip("implicit", reason="the ALS baseline needs the optional `implicit` library")
    del implicit
    rng = np.random.default_rng(3)
    x = (rng.random((60, 15)) < 0.3).astype(int)
    catalog = _tiny_catalog(15)
    als = FC.ALS(catalog, factors=4, regularization=0.5, alpha=5.0, iterations=10, seed=0).fit([_fit_batch(x)])
    items = np.asarray(als.model.item_factors, np.float64)
    cold = (rng.random((3, 15)) < 0.3).astype(int)
    scores = als(_task(catalog, _fit_batch(cold)))
    for u in range(3):  # confidence α for a support item, 1 otherwise: (YᵀCY + λI) f = YᵀC p
        c = np.where(cold[u] > 0, 5.0, 1.0)
        f = np.linalg.solve(items.T @ (c[:, None] * items) + 0.5 * np.eye(4), items.T @ (c * cold[u]))
        np.testing.assert_allclose(scores[u], items @ f, rtol=1e-3, atol=1e-4)
    assert np.all(np.isfinite(scores))


def test_als_without_the_library_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_implicit(name, *args, **kwargs):
        if name.startswith("implicit"):
            raise ImportError("No module named 'implicit'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_implicit)
    with pytest.raises(FC.ExperimentError, match=r"\.\[eval\]"):
        FC.ALS(_tiny_catalog(3), factors=2, regularization=0.1, alpha=1.0, iterations=1, seed=0)


# --- CMML exhaustive = the exported recommend ------------------------------------------------------------------------
def test_cmml_exhaustive_equals_the_exported_recommend_signature(tmp_path):
    from cmml.models.export import CatalogTable, export_saved_model

    specs = (
        FeatureSpec("gender", "user", "categorical", 4),
        FeatureSpec("item_id", "item", "categorical", 40),
        FeatureSpec("genres", "item", "multi", 8, max_len=3),
    )

    class Preprocess(tf.Module):  # raw -> transformed ids: "i7" -> 7, genders M/F -> 1/2
        def __call__(self, raw):
            out = {}
            if "gender" in raw:
                out["gender"] = tf.where(raw["gender"] == "M", 1, tf.where(raw["gender"] == "F", 2, 0))
                out["gender"] = tf.cast(out["gender"], tf.int64)
            for name in ("item_id", "genres"):
                if name in raw:
                    digits = tf.strings.regex_replace(raw[name], "[^0-9]", "")
                    out[name] = tf.strings.to_number(tf.where(digits == "", "0", digits), tf.int64)
            return out

    rng = np.random.default_rng(4)
    n = 30
    keys = [f"i{i}".encode() for i in range(1, n + 1)]
    genres = rng.integers(0, 8, size=(n, 3))
    items = CatalogTable("item", keys, {"genres": genres})
    users = CatalogTable("user", [b"u1", b"u2", b"u3"], {"gender": np.array([1, 2, 1], np.int64)})
    raw_specs = {
        "gender": tf.TensorSpec([], tf.string),
        "item_id": tf.TensorSpec([], tf.string),
        "genres": tf.TensorSpec([None], tf.string),
    }
    tf.keras.utils.set_random_seed(5)
    config = CMMLConfig(embedding_dim=8, encoder="mean", hybrid="mlp", item_bias=True, support_bias=True)
    model = CMMLModel(specs, config)
    model({k: tf.constant(v) for k, v in random_episodes(specs, tasks=2, support=3, query=2, seed=5).items()})
    path = export_saved_model(
        model, tmp_path / "model", preprocess=Preprocess(), raw_specs=raw_specs, catalog=items, user_catalog=users
    )
    recommend = tf.saved_model.load(str(path)).signatures["recommend"]

    catalog = FC.Catalog(
        np.array(keys), {"item_id": np.arange(1, n + 1), "genres": genres}, FC.Catalog.index(np.arange(1, n + 1))
    )
    support_rows = np.array([[0, 4, 9, 17], [3, 5, -1, -1], [20, -1, -1, -1]])
    labels = np.array([[5, 1, 3, 4], [4, 2, 0, 0], [1, 0, 0, 0]], np.float32)
    gender = np.array([1, 2, 1])
    real = support_rows >= 0
    features = {
        key(SUPPORT, "item_id"): np.where(real, support_rows + 1, 0),
        key(SUPPORT, "genres"): np.where(real[..., None], genres[np.maximum(support_rows, 0)], 0),
        key(SUPPORT, "gender"): np.where(real, gender[:, None], 0),
        key(SUPPORT, LABEL): labels,
        key(SUPPORT, MASK): real.astype(np.float32),
    }
    ranker = FC.CMMLCatalogRanker(model, catalog)
    scores = ranker(FC.TaskBatch(features, support_rows, labels))
    assert scores.shape == (3, n)
    k = 8
    served = recommend(
        support_item_id=tf.constant(np.where(real, np.array(keys)[np.maximum(support_rows, 0)], b"")),
        support_label=tf.constant(labels),
        user_id=tf.constant(["u1", "u2", "u3"]),
        user_gender=tf.constant(["", "", ""]),
        k=tf.constant([k] * 3),
    )
    for b in range(3):
        left = [r for r in range(n) if r not in set(support_rows[b])]
        ours = sorted(left, key=lambda r: -scores[b, r])[:k]
        assert [x.decode() for x in served["item_id"][b].numpy()] == [keys[r].decode() for r in ours]
        np.testing.assert_allclose(served["scores"][b].numpy(), scores[b, ours], atol=1e-5)


# --- choices on meta_valid only --------------------------------------------------------------------------------------
def test_choose_on_valid_picks_the_best_meta_valid_option():
    # 25 items, item 1 the task's only liked one; the others score 1 .. 2; an option puts item 1 at `lift`
    held = _held([[1]], [[5]])
    valid = [(FC.TaskBatch({}, np.array([[-1]]), np.zeros((1, 1), np.float32)), held)]

    def build(option):
        scores = np.linspace(1.0, 2.0, 25)
        scores[1] = option["lift"]
        return lambda task: scores[None]

    options = [{"lift": 0.0}, {"lift": 3.0}, {"lift": 1.5}]
    chosen, record = FC.choose_on_valid(options, build, valid, log=lambda _: None)
    assert chosen == {"lift": 3.0} and record["chosen"] == 1 and record["split"] == "meta_valid"
    assert [o["valid"]["recall@20"] for o in record["options"]] == [0.0, 1.0, 1.0]  # first best kept on a tie
    assert [o["valid"]["recall@10"] for o in record["options"]] == [0.0, 1.0, 0.0]
    chosen, _ = FC.choose_on_valid([options[0], options[2]], build, valid, metric="ndcg@20", log=lambda _: None)
    assert chosen == {"lift": 1.5}


TINY = {"epochs": 1, "patience": 1, "ema_decay": 0.0}


@pytest.fixture(scope="module")
def tiny_full_catalog(tmp_path_factory, synthetic_400):
    """The whole table on a tiny synthetic suite (1 epoch, small grids), with the choices' fit data recorded."""
    base = tmp_path_factory.mktemp("full_catalog")
    features = ["gender", "age", "item_id", "genres"]
    cmml_config = {
        "encoder": "mean",
        "hybrid": "mlp",
        "embedding_dim": 8,
        "hidden": [16],
        "hyper_hidden": [16],
        "learning_rate": 3e-3,
        "item_bias": True,
        "support_bias": True,
        "residual_labels": True,
        "features": features,
    }
    rows = FC.TrainedRows(
        bias=ModelSpec("bias model", "bias", {"item_shrinkage": 2.0, "user_shrinkage": 5.0}),
        dcn=ModelSpec("DCN", "dcn", {"embedding_dim": 8, "deep": [16], "cross_layers": 1, "features": features}, TINY),
        cmml=ModelSpec("CMML FiLM", "cmml", cmml_config, TINY),
        listwise=ModelSpec("CMML FiLM + listwise", "cmml", {**cmml_config, "listwise_weight": 1.0}, TINY),
    )
    suite = Suite(
        "tiny",
        "Tiny synthetic suite",
        "user",
        None,
        {
            "name": "full-catalog-test",
            "data": [str(synthetic_400)],
            "setting": "user",
            "transform": {"features": {"writers": None}},
            "taskgen": {"split_mode": "hash", "test_fraction": 0.25, "valid_fraction": 0.15, "num_shards": 2},
            "beam": {"direct_running_mode": "in_memory", "direct_num_workers": 1},
        },
        [],
        episodes={"batch_tasks": 32, "query_size": 10},
    )
    seen: dict[str, list] = {"fits": [], "selection_tasks": []}
    real_matrix, real_choose = FC.interaction_matrix, FC.choose_on_valid

    def matrix(batches, catalog, min_rating=1.0):
        out = real_matrix(batches, catalog, min_rating)
        seen["fits"].append(out.shape[0])
        return out

    def choose(options, build, valid, **kwargs):
        seen["selection_tasks"].append(sum(t.size for t, _ in valid))
        return real_choose(options, build, valid, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(FC, "interaction_matrix", matrix)
    mp.setattr(FC, "choose_on_valid", choose)
    grids = {
        "bias model": {"item_shrinkage": (0.0, 25.0)},
        "EASE": {"l2": (10.0, 100.0), "min_rating": (1.0,)},
        "ALS (fold-in)": {
            "factors": (4,),
            "regularization": (0.1,),
            "alpha": (1.0, 10.0),
            "iterations": (3,),
            "min_rating": (1.0,),
        },
    }
    try:
        import implicit  # noqa: F401
    except ImportError:
        grids.pop("ALS (fold-in)")
    opts = FC.Options(
        seeds=[0, 1],
        cache_dir=str(base / "cache"),
        json_dir=str(base / "json"),
        out=str(base / "RESULTS.md"),
        models=[] if "ALS (fold-in)" in grids else ["ItemPop", "bias", "EASE", "DCN", "CMML"],
        grids=grids,
        log=lambda _: None,
    )
    record: dict = {}
    try:
        FC.run_suite(suite, rows, opts, record, lambda: None)
    finally:
        mp.undo()
    return record, seen, opts


def test_tiny_table_has_every_row_with_finite_figures(tiny_full_catalog):
    record, _, opts = tiny_full_catalog
    models = {r["model"] for r in record["runs"]}
    assert {"ItemPop", "bias model", "EASE", "DCN", "CMML exhaustive"} <= models
    assert FC.LISTWISE in models  # its first seed always runs (the meta_valid comparison)
    for r in record["runs"]:
        for m in FC.METRICS:
            assert 0.0 <= r["metrics"][m] <= 1.0
        assert r["metrics"]["tasks"] > 0
    cmml_seeds = sorted(r["seed"] for r in record["runs"] if r["model"] == "CMML exhaustive")
    assert cmml_seeds == [0, 1]
    section = FC.render({"suites": {"tiny": record}, "seeds": [0, 1], "machine": {"cpu": "x", "cores": 2}})
    assert "| CMML exhaustive |" in section and "| EASE |" in section


def test_choices_use_meta_valid_and_fits_without_meta_valid_users(tiny_full_catalog):
    record, seen, _ = tiny_full_catalog
    tasks = record["tasks"]
    # every selection scored the meta_valid tasks, never meta_test
    assert seen["selection_tasks"] and set(seen["selection_tasks"]) == {tasks["meta_valid"]}
    for name in ("bias model", "EASE"):
        assert record["selection"][name]["split"] == "meta_valid"
    # the options were fitted on the meta-train pool; the chosen model refitted with the meta_valid users too
    pool, everything = tasks["meta_train pool"], tasks["meta_train pool"] + tasks["meta_valid"]
    assert set(seen["fits"]) == {pool, everything}
    ease_options = len(record["selection"]["EASE"]["options"])
    assert seen["fits"][:ease_options] == [pool] * ease_options and seen["fits"][ease_options] == everything
    listwise = record["selection"][FC.LISTWISE]
    assert listwise["split"] == "meta_valid"
    later = [r for r in record["runs"] if r["model"] == FC.LISTWISE and r["seed"] != 0]
    assert bool(later) == listwise["wins"]


def test_cmml_exhaustive_matched_the_trainer_export_on_real_records(tiny_full_catalog):
    record, _, _ = tiny_full_catalog
    check = record["recommend_check"]
    assert check["top_k_overlap"] == 1.0 and check["max_abs_score_difference"] < 1e-4
