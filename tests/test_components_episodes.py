"""tf.data episode builders: exactly the layout of schemas/episodes.md, from TaskGen's records."""

from __future__ import annotations

import numpy as np
import pytest

from cmml.components import common
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.keys import to_binary
from cmml.components.task_gen.records import write_catalog
from cmml.components.task_gen.rows import ShardRows
from cmml.components.task_gen.scenario_tasks import build_scenario_tasks
from cmml.components.task_gen.splits import make_plan
from cmml.components.task_gen.tables import FeatureTable, offsets_from_lengths, with_features
from cmml.components.task_gen.user_tasks import build_user_tasks
from cmml.models import episodes as ED
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T

N_ITEMS = 30
SPECS = [
    E.FeatureSpec("user_id", "user", "categorical", 10),
    E.FeatureSpec("item_id", "item", "categorical", N_ITEMS + 2),
    E.FeatureSpec("genres", "item", "multi", 8, 3),
]


def _genres(i: int) -> list[int]:
    """Item i's genre indices: a deterministic list of 0..3 values."""
    return [1 + (i + k) % 7 for k in range(i % 4)]


def _tables(n_users: int):
    users = FeatureTable(
        np.arange(1, n_users + 1, dtype=np.uint64) * np.uint64(1000),
        to_binary([str(u) for u in range(1, n_users + 1)]),
        {"user_id": np.arange(1, n_users + 1, dtype=np.int64)},
        {},
        np.zeros(n_users, np.int64),
    )
    lists = [_genres(i) for i in range(1, N_ITEMS + 1)]
    items = FeatureTable(
        np.arange(1, N_ITEMS + 1, dtype=np.uint64),
        to_binary([str(i) for i in range(1, N_ITEMS + 1)]),
        {"item_id": np.arange(1, N_ITEMS + 1, dtype=np.int64)},
        {
            "genres": (
                np.array([g for l in lists for g in l], np.int64),
                offsets_from_lengths(np.array([len(l) for l in lists])),
            )
        },
        np.zeros(N_ITEMS, np.int64),
    )
    return users, items


def _write(blocks, setting, users, items, folder) -> None:
    """Records by TaskGen's writer, the tables written as their catalog (every user and item)."""
    from tfx_bsl.coders import example_coder

    write_catalog(str(folder), users, items)
    users, items = with_features(users, users), with_features(items, items)
    for split, block in blocks.items():
        batch = block.record_batch(setting, users, items)
        common.write_tfrecords(
            T.split_dir(str(folder), split) + "/tasks-00000-of-00001.tfrecord.gz",
            example_coder.RecordBatchToExamples(batch),
        )


@pytest.fixture(scope="module")
def user_records(tmp_path_factory):
    """Users 1..6 with 12..24 ratings (label = item_id / 10); users 5, 6 meta-test."""
    users, items = _tables(6)
    rows = []
    for u in range(1, 7):
        for i in range(1, 11 + 2 * u + 1):
            rows.append((u, i))
    task = np.array([users.hashes[u - 1] for u, _ in rows])
    shard = ShardRows(
        task,
        task.copy(),
        np.array([items.hashes[i - 1] for _, i in rows]),
        np.array([i / 10 for _, i in rows], np.float32),
    )
    counts = np.array([11 + 2 * u for u in range(1, 7)])
    config = TaskGenConfig(split_mode="list", test_keys=("5", "6"), min_ratings=12, max_ratings=100)
    plan = make_plan(users.hashes, users.keys, counts, counts, config)
    blocks, counters, _ = build_user_tasks(shard, plan, users, items, config)
    folder = tmp_path_factory.mktemp("user_records")
    _write(blocks, "user", users, items, folder)
    return folder, counts


def _check_rows_consistent(batch, part):
    """Every real row's features are those of one item (labels encode the item); padding is all zero."""
    mask = batch[f"{part}_mask"]
    item = batch[f"{part}_item_id"]
    label = batch[f"{part}_label"]
    genres = batch[f"{part}_genres"]
    for b in range(mask.shape[0]):
        n = int(mask[b].sum())
        assert np.array_equal(mask[b], np.r_[np.ones(n), np.zeros(mask.shape[1] - n)])  # padding at the end
        assert (item[b, n:] == 0).all() and (label[b, n:] == 0).all() and (genres[b, n:] == 0).all()
        for r in range(n):
            i = int(item[b, r])
            g = _genres(i)
            assert genres[b, r].tolist() == g + [0] * (3 - len(g))
    return mask


def test_user_training_episodes_layout(user_records):
    folder, counts = user_records
    ds = ED.training_episodes(folder, SPECS, batch_size=4, query_size=10, seed=3, shuffle_buffer=0)
    batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
    assert sorted(batch) == sorted(
        f"{p}_{n}" for p in ("support", "query") for n in ("user_id", "item_id", "genres", "label", "mask")
    )
    assert batch["support_item_id"].dtype == np.int64 and batch["support_label"].dtype == np.float32
    assert batch["support_mask"].dtype == np.float32 and batch["query_genres"].shape[2] == 3
    n = counts[:4]  # meta-train users 1..4, in file order
    assert batch["query_mask"].shape == (4, 10) and (batch["query_mask"].sum(1) == 10).all()
    assert batch["support_mask"].shape == (4, int(n.max()) - 10)
    assert np.array_equal(batch["support_mask"].sum(1), n - 10)
    for part in ("support", "query"):
        mask = _check_rows_consistent(batch, part)
        real = mask > 0
        assert np.allclose(batch[f"{part}_label"][real], batch[f"{part}_item_id"][real] / 10)
        for b in range(4):
            assert set(batch[f"{part}_user_id"][b][real[b]]) == {b + 1}
    for b in range(4):  # support and query partition the user's ratings
        got = sorted(
            batch["support_item_id"][b][batch["support_mask"][b] > 0].tolist() + batch["query_item_id"][b].tolist()
        )
        assert got == list(range(1, n[b] + 1))


def test_user_training_draws_fresh_seeded_episodes(user_records):
    folder, _ = user_records

    def queries(seed, batches):
        ds = ED.training_episodes(folder, SPECS, batch_size=4, seed=seed, shuffle_buffer=0)
        return [sorted(b["query_item_id"].numpy()[0].tolist()) for b, _ in zip(ds, range(batches))]

    first = queries(1, 3)
    assert len({tuple(q) for q in first}) == 3  # a new query set every epoch
    assert first == queries(1, 3)  # reproducible from the seed
    assert first != queries(2, 3)


def test_repeat_n_makes_n_passes_with_fresh_draws(user_records):
    folder, _ = user_records

    def rows(repeat):
        ds = ED.training_episodes(folder, SPECS, batch_size=2, seed=4, shuffle_buffer=0, repeat=repeat)
        return [sorted(q.tolist()) for b in ds for q in b["query_item_id"].numpy()]

    one, three = rows(False), rows(3)
    assert len(three) == 3 * len(one) == 3 * len(rows(1))
    assert three[: len(one)] != three[len(one) : 2 * len(one)]  # the second pass draws new query sets


def test_user_evaluation_episodes_are_fixed(user_records):
    folder, counts = user_records
    ds = ED.evaluation_episodes(folder, SPECS, batch_size=8, include_task_key=True)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    again = [{k: v.numpy() for k, v in b.items()} for b in ds]
    assert len(batches) == 1 and all(np.array_equal(batches[0][k], again[0][k]) for k in batches[0] if k != "task_key")
    b = batches[0]
    assert b["task_key"].tolist() == [b"5", b"6"]
    assert np.array_equal(b["support_mask"].sum(1), counts[4:] - 10) and (b["query_mask"].sum(1) == 10).all()
    for k, user in enumerate((5, 6)):
        n = counts[user - 1]
        # protocol order: items sorted by id, permuted by default_rng(user id); the last 10 are the query
        order = np.arange(1, n + 1)[np.random.default_rng(user).permutation(n)]
        assert b["query_item_id"][k].tolist() == order[-10:].tolist()
        assert b["support_item_id"][k][: n - 10].tolist() == order[:-10].tolist()
    _check_rows_consistent(b, "support")
    # meta-train records as fixed episodes (validation on meta-train users): the last 10 stored rows
    pool = next(iter(ED.evaluation_episodes(folder, SPECS, split="meta_train", batch_size=8, pool_query_size=10)))
    assert np.array_equal(pool["support_mask"].numpy().sum(1), counts[:4] - 10)


@pytest.fixture(scope="module")
def scenario_records(tmp_path_factory):
    """Two scenarios over 6 users and 30 items; scenario 'b' is meta-test."""
    users, items = _tables(6)
    rng = np.random.default_rng(0)
    rows = []
    for key, item_range in (("a", range(1, 21)), ("b", range(11, 31))):
        for u in range(1, 7):
            for i in rng.choice(list(item_range), size=8 + u, replace=False):
                rows.append((key, u, int(i)))
    scen_hash = dict(zip("ab", common.stable_hash64(["a", "b"])))
    shard = ShardRows(
        np.array([scen_hash[k] for k, _, _ in rows]),
        np.array([users.hashes[u - 1] for _, u, _ in rows]),
        np.array([items.hashes[i - 1] for _, _, i in rows]),
        np.ones(len(rows), np.float32),
    )
    config = TaskGenConfig(
        setting="scenario",
        split_mode="list",
        test_keys=("b",),
        min_items=5,
        max_items=100,
        eval_support_positives=6,
        eval_users_per_scenario=3,
    )
    n_rows = np.array([sum(1 for k, _, _ in rows if k == s) for s in "ab"])
    plan = make_plan(np.array(list(scen_hash.values())), to_binary(["a", "b"]), n_rows, np.array([20, 20]), config)
    blocks, _, _ = build_scenario_tasks(shard, plan, users, items, config)
    folder = tmp_path_factory.mktemp("scenario_records")
    _write(blocks, "scenario", users, items, folder)
    positives = {(k, u, i) for k, u, i in rows}
    return folder, positives


@pytest.mark.parametrize("split, key", [("meta_train", "a"), ("meta_test", "b")])
def test_scenario_training_pairs(scenario_records, split, key):
    """Pairs from meta-train records; on meta-test records (stored negatives) only real positives are drawn."""
    folder, positives = scenario_records
    files = ED.task_files(folder, split)
    ds = ED.training_episodes(
        files, SPECS, setting="scenario", batch_size=1, support_positives=4, query_positives=8, seed=5
    )
    items_of = range(1, 21) if key == "a" else range(11, 31)
    for batch in ds.take(2):
        b = {k: v.numpy()[0] for k, v in batch.items()}
        assert b["support_mask"].shape == (8,) and b["query_mask"].shape == (16,)
        for part, k in (("support", 4), ("query", 8)):
            assert np.array_equal(b[f"{part}_label"], np.tile([1.0, 0.0], k))  # row 2k positive, 2k+1 its negative
            users, items = b[f"{part}_user_id"], b[f"{part}_item_id"]
            assert np.array_equal(users[0::2], users[1::2])  # same user in a pair
            for u, i in zip(users[0::2], items[0::2]):
                assert (key, int(u), int(i)) in positives
            for u, i in zip(users[1::2], items[1::2]):
                assert (
                    key,
                    int(u),
                    int(i),
                ) not in positives and i in items_of  # a scenario item the user did not touch


def test_scenario_evaluation_ranking_layout(scenario_records):
    folder, positives = scenario_records
    ds = ED.evaluation_episodes(folder, SPECS, setting="scenario", batch_size=8, include_task_key=True)
    b = {k: v.numpy() for k, v in next(iter(ds)).items()}
    assert b["task_key"].tolist() == [b"b"] * 3 and len(set(b["user_raw_id"].tolist())) == 3  # 3 evaluation users
    assert b["query_mask"].shape == (3, 20) and (b["query_mask"] == 1).all()  # every candidate of the scenario
    assert (b["query_item_id"] == np.arange(11, 31)).all()
    for r in range(3):
        u = int(b["user_raw_id"][r])
        assert (b["query_user_id"][r] == u).all()
        held = {int(i) for i, y in zip(b["query_item_id"][r], b["query_label"][r]) if y == 1}
        assert held == {i for k, uu, i in positives if k == "b" and uu == u}
        assert np.array_equal(b["support_item_id"][r], b["support_item_id"][0])  # one fixed support set
    assert np.array_equal(b["support_label"][0], np.tile([1.0, 0.0], 6)) and (b["support_mask"] == 1).all()
    assert not set(b["support_user_id"][0].tolist()) & {int(u) for u in b["user_raw_id"]}
