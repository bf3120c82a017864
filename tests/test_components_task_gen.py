"""TaskGen on real data: protocol counts against independent pandas computations, users-v1 exactly,
stable splits across runs and runners, scenario bounds, multi-domain tasks, conservation."""

from __future__ import annotations

import filecmp
import glob
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from components_fixtures import reader_columns

from cmml.components import common
from cmml.components.task_gen.accounting import STATS_FILE, ConservationError, finalize
from cmml.components.task_gen.beam_graph import QUARANTINE_DIR, run_task_gen
from cmml.components.task_gen.columns import write_column_batches
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.extract import BAD_LABEL, MISSING_USER, ExtractContext
from cmml.components.task_gen.keys import to_binary
from cmml.components.task_gen.records import INDEX_FILE, TaskBlock
from cmml.components.task_gen.rows import ShardRows
from cmml.components.task_gen.scenario_tasks import sample_negatives
from cmml.components.task_gen.splits import META_TEST, META_TRAIN, assign_splits, make_plan
from cmml.components.task_gen.tables import offsets_from_lengths
from cmml.components.task_gen.user_tasks import task_seeds
from cmml.data import records as R
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]

# the reference protocol ml1m-partial/users-v1 (the published ML-1M cold-start split)
USER_3333_QUERY_MOVIES = [1779, 2605, 2541, 2329, 2722, 2719, 2712, 2714, 3409, 2322]
USER_3333_QUERY_RATINGS = [4, 3, 4, 5, 2, 2, 4, 2, 4, 2]


def run(cols, files, out, config, **kw):
    kw.setdefault("beam_args", IN_MEMORY)
    return run_task_gen(files, cols.entities, str(out), config, cols.features, cols.vocab, **kw)


def read_index(out) -> pd.DataFrame:
    return pd.read_csv(Path(out) / INDEX_FILE, sep="\t", dtype={"task_key": str}, keep_default_na=False)


def read_records(out, split: str, limit: int | None = None) -> dict:
    """task key -> parsed record (plain lists / numpy), for every record of a split (or the first ``limit``)."""
    import tensorflow as tf

    files = sorted(glob.glob(T.split_pattern(str(out), split)))
    records = {}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        ds = ds.take(limit)
    for batch in ds.batch(512):
        parsed = T.parse_task_records(batch)
        plain = {k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy()) for k, v in parsed.items()}
        for b, key in enumerate(plain[T.TASK_KEY]):
            records[key.decode()] = {k: v[b] for k, v in plain.items()}
    return records


def hash_py(text: str) -> int:
    """Independent pure-Python stable_hash64: FNV-1a 64, then MurmurHash3's fmix64."""
    m = 1 << 64
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) % m
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) % m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) % m
    return h ^ (h >> 33)


@pytest.fixture(scope="module")
def ml1m(ml1m_partial_dir, tmp_path_factory):
    cols = reader_columns(ml1m_partial_dir)
    return cols, cols.write(tmp_path_factory.mktemp("ml1m_columns"))


@pytest.fixture(scope="module")
def ml100k(ml100k_dir, tmp_path_factory):
    cols = reader_columns(ml100k_dir)
    return cols, cols.write(tmp_path_factory.mktemp("ml100k_columns"))


@pytest.fixture(scope="module")
def ml1m_ratings(ml1m_partial_dir) -> pd.DataFrame:
    return pd.read_csv(ml1m_partial_dir / "ratings.csv")


@pytest.fixture(scope="module")
def users_v1(ml1m, tmp_path_factory):
    cols, files = ml1m
    out = tmp_path_factory.mktemp("users_v1")
    stats = run(cols, files, out, TaskGenConfig.users_v1(num_shards=4))
    return out, stats


def test_users_v1_split_and_sizes_match_pandas(users_v1, ml1m_ratings):
    out, stats = users_v1
    counts = ml1m_ratings.groupby("user_id").size()
    kept = np.sort(counts[(counts >= 13) & (counts <= 100)].index.to_numpy())
    perm = np.random.default_rng(20211101).permutation(kept)
    assert len(kept) == 3420 and counts[kept].sum() == 141_701
    index = read_index(out)
    by_split = {s: set(index.loc[index.split == s, "task_key"].astype(int)) for s in ("meta_train", "meta_test")}
    assert by_split["meta_train"] == set(perm[:2736].tolist())
    assert by_split["meta_test"] == set(perm[2736:].tolist())
    assert len(by_split["meta_test"]) == 684 and not by_split["meta_train"] & by_split["meta_test"]
    sizes = index.set_index(index.task_key.astype(int))["rows"]
    assert (sizes.sort_index() == counts[kept].sort_index()).all()
    test = index[index.split == "meta_test"]
    assert (test["query"] == 10).all() and (test["support"] == test["rows"] - 10).all()
    # row accounting, reason by reason
    assert stats["rows_in"] == len(ml1m_ratings) == 486_988
    assert stats["rows_written"] == 141_701
    assert stats["rows_filtered_by_reason"]["user_too_few_ratings"] == counts[counts < 13].sum()
    assert stats["rows_filtered_by_reason"]["user_too_many_ratings"] == counts[counts > 100].sum()
    assert stats["conservation_ok"] and stats["tasks_by_split"] == {"meta_train": 2736, "meta_test": 684}


def test_users_v1_query_sets_are_exact(users_v1, ml1m_ratings):
    out, _ = users_v1
    records = read_records(out, "meta_test")
    assert len(records) == 684
    user = records["3333"]
    role = np.asarray(user[T.ROW_ROLE])
    assert len(role) == 80
    query = role == T.ROLE_QUERY
    items = [int(x) for x in np.asarray(user[T.ITEM_RAW_ID])[np.asarray(user[T.ROW_ITEM])[query]]]
    assert items == USER_3333_QUERY_MOVIES
    assert np.asarray(user[T.ROW_LABEL])[query].tolist() == USER_3333_QUERY_RATINGS
    # every meta-test user: exactly 10 query ratings, the protocol's last 10, support first
    grouped = {u: g.sort_values("movie_id") for u, g in ml1m_ratings.groupby("user_id")}
    for key, rec in records.items():
        g = grouped[int(key)]
        order = g.iloc[np.random.default_rng(int(key)).permutation(len(g))]
        role = np.asarray(rec[T.ROW_ROLE])
        assert (role[:-10] == T.ROLE_SUPPORT).all() and (role[-10:] == T.ROLE_QUERY).all(), key
        got = np.asarray(rec[T.ITEM_RAW_ID])[np.asarray(rec[T.ROW_ITEM])].astype(int)
        assert np.array_equal(got, order.movie_id.to_numpy()), key
        assert np.array_equal(np.asarray(rec[T.ROW_LABEL]), order.rating.to_numpy(np.float32)), key


def test_meta_train_records_hold_full_lists(users_v1, ml1m_ratings):
    out, stats = users_v1
    records = read_records(out, "meta_train", limit=100)
    assert stats["tasks_by_split"]["meta_train"] == 2736 and len(records) == 100
    counts = ml1m_ratings.groupby("user_id").size()
    item_keys, item_features = T.read_catalog(T.catalog_path(str(out), "item"))
    user_keys, _ = T.read_catalog(T.catalog_path(str(out), "user"))
    for key in records:
        rec = records[key]
        assert len(rec[T.ROW_ROLE]) == counts[int(key)]
        assert set(np.asarray(rec[T.ROW_ROLE]).tolist()) == {T.ROLE_POOL}
        # ids only: the catalog rows name the record's user and movies, whose genres are non-empty lists
        assert user_keys[np.asarray(rec[T.USER_INDEX]) - 1].tolist() == [key.encode()]
        rows = np.asarray(rec[T.ITEM_INDEX]) - 1
        assert len(rows) == counts[int(key)] and (rows >= 0).all()
        assert item_keys[rows].tolist() == list(rec[T.ITEM_RAW_ID])
        assert (item_features["genres"][rows] > 0).any(axis=1).all()
    specs = {s.name: s for s in E.load_feature_specs(out)}
    assert specs["genres"].kind == "multi" and specs["genres"].max_len == 6
    assert specs["user_id"].vocab_size == 5991 + 2


def test_splits_stable_across_runs_and_runners(ml100k, tmp_path):
    """Same config twice, in-memory and multi-processing DirectRunner: the same tasks, files and records.

    (Record bytes may differ: the C++ encoder writes a tf.Example's feature map in hash order.)
    """
    cols, files = ml100k
    config = TaskGenConfig(
        split_mode="hash", test_fraction=0.25, valid_fraction=0.1, salt="s1", num_shards=3, in_memory_below_bytes=0
    )
    a = run(cols, files, tmp_path / "a", config)
    b = run(
        cols,
        files,
        tmp_path / "b",
        config,
        beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    )
    assert a["tasks_by_split"] == b["tasks_by_split"]
    rel = sorted(os.path.relpath(p, tmp_path / "a") for p in glob.glob(str(tmp_path / "a" / "Split-meta_*" / "*")))
    assert len(rel) == 9 and rel == sorted(
        os.path.relpath(p, tmp_path / "b") for p in glob.glob(str(tmp_path / "b" / "Split-meta_*" / "*"))
    )
    for r in (INDEX_FILE, E.FEATURE_SPECS_FILE):
        assert filecmp.cmp(tmp_path / "a" / r, tmp_path / "b" / r, shallow=False), r
    for split in ("meta_valid", "meta_test"):
        ra, rb = read_records(tmp_path / "a", split), read_records(tmp_path / "b", split)
        assert ra.keys() == rb.keys()
        for key in ra:
            for name in ra[key]:
                assert np.array_equal(
                    np.asarray(ra[key][name], dtype=object), np.asarray(rb[key][name], dtype=object)
                ), (key, name)
    index = read_index(tmp_path / "a")
    splits = {s: set(index.task_key[index.split == s]) for s in T.SPLITS}
    assert not (splits["meta_train"] & splits["meta_test"]) and not (splits["meta_valid"] & splits["meta_test"])
    # independent check of the hash rule on every kept user
    for key, split in zip(index.task_key, index.split):
        u_test = (hash_py("s1" + key) >> 11) / float(1 << 53)
        u_valid = (hash_py("s1/valid" + key) >> 11) / float(1 << 53)
        expected = "meta_test" if u_test < 0.25 else "meta_valid" if u_valid < 0.1 else "meta_train"
        assert split == expected, key
    n = len(index)
    assert 0.15 < len(splits["meta_test"]) / n < 0.35 and len(splits["meta_valid"]) > 0


def test_ml100k_trim_and_counts(ml100k, ml100k_dir, tmp_path):
    cols, files = ml100k
    config = TaskGenConfig(min_ratings=20, max_ratings=300, trim_to=50, test_fraction=0.3, num_shards=2)
    stats = run(cols, files, tmp_path / "out", config)
    df = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    counts = df.groupby("user").size()
    kept = counts[(counts >= 20) & (counts <= 300)]
    index = read_index(tmp_path / "out")
    got = index.set_index(index.task_key.astype(int))["rows"].sort_index()
    assert got.index.tolist() == sorted(kept.index.tolist())
    assert (got == np.minimum(kept.sort_index(), 50)).all()
    assert stats["rows_filtered_by_reason"]["user_trimmed"] == int((kept - 50).clip(lower=0).sum())
    assert stats["rows_written"] == int(np.minimum(kept, 50).sum())
    test = index[index.split == "meta_test"]
    assert (test["query"] == 10).all() and (test["rows"] <= 50).all()
    assert stats["conservation_ok"]


def _theme_frame(data_dir) -> pd.DataFrame:
    """Independent pandas derivation of genre and genre x decade themes of ML-100K."""
    from cmml.data import open_dataset

    ds = open_dataset(data_dir)
    items = ds.read_items()[0].to_pandas()
    ratings = pd.read_csv(Path(data_dir) / "u.data", sep="\t", names=["user", "item", "rating", "ts"]).astype(
        {"item": str}
    )
    items = items[items.item_id.isin(set(ratings.item))]
    genre = items[["item_id", "genres", "year"]].explode("genres").dropna(subset=["genres"])
    a = genre.assign(theme="genre=" + genre.genres)
    dec = genre.dropna(subset=["year"])
    b = dec.assign(theme="genre=" + dec.genres + "|decade=" + (dec.year // 10 * 10).astype(int).astype(str) + "s")
    themes = pd.concat([a[["item_id", "theme"]], b[["item_id", "theme"]]])
    n_rows = ratings.groupby("item").size()
    themes["rows"] = themes.item_id.map(n_rows)
    return themes


def test_scenario_themes_respect_item_bounds(ml100k, ml100k_dir, tmp_path):
    cols, files = ml100k
    config = TaskGenConfig(
        setting="scenario", themes=("genre", "genre_decade"), min_items=20, max_items=400, num_shards=2
    )
    stats = run(cols, files, tmp_path / "out", config, scenario_source="themes")
    themes = _theme_frame(ml100k_dir)
    per = themes.groupby("theme").agg(items=("item_id", "nunique"), rows=("rows", "sum"))
    kept = per[(per["items"] >= 20) & (per["items"] <= 400)]
    index = read_index(tmp_path / "out").set_index("task_key")
    assert set(index.index) == set(kept.index)
    assert (index["items"].sort_index() == kept["items"].sort_index()).all()
    assert (index["rows"].sort_index() == kept["rows"].sort_index()).all()
    assert stats["plan"]["tasks_scenario_too_many_items"] == int((per["items"] > 400).sum())
    assert stats["plan"]["tasks_scenario_too_few_items"] == int((per["items"] < 20).sum())
    for split in ("meta_train", "meta_test"):
        for key, rec in read_records(tmp_path / "out", split).items():
            assert 20 <= len(rec[T.ITEM_RAW_ID]) <= 400, key
    assert stats["conservation"]["memberships"]["ok"] and stats["conservation_ok"]


def test_scenario_column_fixed_evaluation_episodes(synthetic_small, tmp_path):
    cols = reader_columns(synthetic_small)
    files = cols.write(tmp_path / "cols", files=2, rows=20_000)
    config = TaskGenConfig(
        setting="scenario",
        min_items=10,
        max_items=1000,
        test_fraction=0.3,
        eval_support_positives=16,
        eval_users_per_scenario=7,
        num_shards=2,
    )
    stats = run(cols, files, tmp_path / "out", config, scenario_source="column")
    df = cols.table.to_pandas()
    per = df.groupby("scenario").agg(items=("item_id", "nunique"), rows=("item_id", "size"))
    kept = per[(per["items"] >= 10) & (per["items"] <= 1000)]
    index = read_index(tmp_path / "out").set_index("task_key")
    assert set(index.index) == set(kept.index) and (index["rows"].sort_index() == kept["rows"].sort_index()).all()
    tests = read_records(tmp_path / "out", "meta_test")
    assert tests, "no meta-test scenario"
    for key, rec in tests.items():
        role, label = np.asarray(rec[T.ROW_ROLE]), np.asarray(rec[T.ROW_LABEL])
        users, items = np.asarray(rec[T.ROW_USER]), np.asarray(rec[T.ROW_ITEM])
        support = np.flatnonzero(role == T.ROLE_SUPPORT)
        assert len(support) == 32 and np.array_equal(support, np.arange(32))  # stored first, interleaved
        assert np.array_equal(label[support], np.tile([1.0, 0.0], 16))
        assert np.array_equal(users[support][0::2], users[support][1::2])  # a negative has its positive's user
        positives = set(zip(users[label > 0].tolist(), items[label > 0].tolist()))
        assert not any((u, i) in positives for u, i in zip(users[support][1::2], items[support][1::2]))
        held_users = set(users[role == T.ROLE_QUERY].tolist())
        assert 1 <= len(held_users) <= 7
        # held-out rows are all of the evaluation users' interactions, none of them in the support set
        assert not held_users & set(users[support].tolist())
        in_scenario = df[df.scenario == key]
        raw_users = np.asarray(rec[T.USER_RAW_ID])
        for u in held_users:
            expected = set(in_scenario.item_id[in_scenario.user_id == raw_users[u].decode()])
            got = {np.asarray(rec[T.ITEM_RAW_ID])[i].decode() for i in items[(role == T.ROLE_QUERY) & (users == u)]}
            assert got == expected
    assert stats["conservation_ok"] and stats["rows_filtered_by_reason"]["no_scenario"] == 0


def test_multi_domain_themes_keep_domains_apart(ml100k_dir, ml1m_partial_dir, tmp_path):
    cols = reader_columns(ml100k_dir, "ml100k", more=((ml1m_partial_dir, "ml1m"),))
    files = cols.write(tmp_path / "cols", files=2)
    config = TaskGenConfig(setting="scenario", themes=("genre",), min_items=20, max_items=1000, num_shards=2)
    stats = run(cols, files, tmp_path / "out", config, scenario_source="themes", with_domain=True)
    index = read_index(tmp_path / "out")
    domains = index.task_key.str.split("/").str[0]
    assert set(domains) == {"ml100k", "ml1m"}
    assert index.task_key.str.match(r"^(ml100k|ml1m)/genre=").all()
    import tensorflow as tf

    files = glob.glob(str(tmp_path / "out" / "Split-meta_*" / "*.gz"))
    n = 0
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(64):
        parsed = T.parse_task_records(batch)
        domain = tf.strings.split(parsed[T.TASK_KEY], "/").to_tensor()[:, 0]
        for name in (T.USER_RAW_ID, T.ITEM_RAW_ID):
            ids = parsed[name]
            prefix = tf.strings.split(ids.values, ":").to_tensor()[:, 0]
            assert bool(tf.reduce_all(prefix == tf.gather(domain, ids.value_rowids()))), name
        n += int(batch.shape[0])
    assert n == len(index)
    assert stats["rows_in"] == 100_000 + 486_988 and stats["conservation_ok"]


def test_quarantine_and_conservation(synthetic_small, tmp_path):
    cols = reader_columns(synthetic_small)
    batches = cols.batches(rows=10_000)
    first = dict(batches[0])
    users = first[R.USER_ID].to_pylist()
    users[3] = b""
    label = first[R.LABEL].copy()
    label[5] = np.nan
    import pyarrow as pa

    first[R.USER_ID] = pa.array(users, pa.large_binary())
    first[R.LABEL] = label
    path = tmp_path / "cols.gz"
    write_column_batches([first] + batches[1:], str(path))
    stats = run(cols, [str(path)], tmp_path / "out", TaskGenConfig(num_shards=2))
    assert stats["rows_quarantined_by_reason"] == {MISSING_USER: 1, BAD_LABEL: 1}
    lines = []
    for p in glob.glob(str(tmp_path / "out" / QUARANTINE_DIR / "*.jsonl")):
        with open(p, encoding="utf-8") as f:
            lines += [json.loads(x) for x in f]
    assert sorted(x["reason"] for x in lines) == sorted([MISSING_USER, BAD_LABEL])
    assert stats["rows_in"] == cols.table.num_rows
    assert stats["rows_in"] == stats["rows_written"] + stats["rows_filtered"] + stats["rows_quarantined"]


def test_conservation_failure_stops_the_run(tmp_path):
    config = TaskGenConfig()
    ctx = ExtractContext(config, (), None, None)
    plan = make_plan(np.zeros(0, np.uint64), to_binary([]), np.zeros(0, np.int64), np.zeros(0, np.int64), config)
    summary = {"counters": {"rows_written": {"meta_train": 90}, "filtered": {"user_too_few_ratings": 5}}, "index": []}
    with pytest.raises(ConservationError, match="does not add up"):
        finalize(summary, ctx, str(tmp_path), {"rows_in": 100, "quarantined": {}}, plan, None, None)
    assert json.loads((tmp_path / STATS_FILE).read_text())["conservation_ok"] is False


def test_split_rules_unit():
    keys = to_binary(["10", "9", "100", "2"])
    # permutation over numerically sorted keys: [2, 9, 10, 100]
    perm = np.random.default_rng(7).permutation(np.array([2, 9, 10, 100]))
    codes = assign_splits(keys, TaskGenConfig(split_mode="permutation", permutation_seed=7, n_train=3, min_ratings=11))
    test_key = [k for k, c in zip(["10", "9", "100", "2"], codes) if c == META_TEST]
    assert test_key == [str(perm[3])]
    codes = assign_splits(keys, TaskGenConfig(split_mode="list", test_keys=("9", "2")))
    assert codes.tolist() == [META_TRAIN, META_TEST, META_TRAIN, META_TEST]
    with pytest.raises(ValueError, match="needs test_keys"):
        TaskGenConfig(split_mode="list")
    assert [int(h) for h in common.stable_hash64(["", "a", "user 3333"], salt="x")] == [
        hash_py("x"),
        hash_py("xa"),
        hash_py("xuser 3333"),
    ]
    assert task_seeds(to_binary(["3333", "u7"])) == [3333, hash_py("u7")]


def test_packed_rows_and_record_chunks_round_trip():
    rng = np.random.default_rng(0)
    n = 5000
    task = rng.integers(0, 40, n).astype(np.uint64)
    rows = ShardRows(
        task,
        task,
        rng.integers(0, 2**63, n, dtype=np.uint64) % np.uint64(300),
        rng.integers(1, 6, n).astype(np.float32),
    )
    packed = rows.pack()
    assert packed.user_dict is None and packed.user_codes is None  # user == task: not stored twice
    assert packed.item_codes.dtype == np.uint16 and packed.label_codes.dtype == np.uint8
    back = packed.unpack()
    order = np.argsort(rows.task, kind="stable")
    for name in ("task", "user", "item", "label"):
        assert np.array_equal(getattr(back, name), getattr(rows, name)[order]), name
    other = ShardRows(task, rng.integers(0, 2**63, n, dtype=np.uint64), rows.item, rows.label)
    back = other.pack().unpack()
    order = np.lexsort((other.user, other.task))
    assert np.array_equal(back.user, other.user[order]) and np.array_equal(back.item, other.item[order])
    # chunks of a block: whole tasks, every row once, offsets rebased
    lengths = rng.integers(1, 30, 50)
    off = offsets_from_lengths(lengths)
    block = TaskBlock(
        [str(k).encode() for k in range(50)],
        "meta_train",
        off,
        np.zeros(off[-1], np.int64),
        np.arange(off[-1]),
        np.arange(off[-1], dtype=np.float32),
        np.zeros(off[-1], np.int8),
        np.arange(51),
        np.arange(50),
        off,
        np.arange(off[-1]),
    )
    chunks = list(block.chunks(100))
    assert [k for c in chunks for k in c.keys] == block.keys
    assert np.array_equal(np.concatenate([c.label for c in chunks]), block.label)
    assert all(c.row_off[0] == 0 and c.row_off[-1] == len(c.label) for c in chunks)
    assert all(c.row_off[-1] <= 100 or len(c.keys) == 1 for c in chunks) and len(chunks) > 1


def test_episode_builder_rejects_records_of_another_setting(users_v1):
    import tensorflow as tf

    from cmml.models import episodes as ED

    out, _ = users_v1
    ds = ED.training_episodes(out, E.load_feature_specs(out), setting="scenario", batch_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"task records of another setting than .*scenario"):
        next(iter(ds))


def test_negative_sampling_is_uniform_over_the_complement():
    rng = np.random.default_rng(0)
    m = 10
    interacted = {0: [1, 2, 5], 1: list(range(10)), 2: [0, 9]}
    keys = np.unique([u * m + i for u, items in interacted.items() for i in items])
    users = np.repeat([0, 2], 7000)
    neg = sample_negatives(rng, users, m, keys)
    for u in (0, 2):
        values, counts = np.unique(neg[users == u], return_counts=True)
        assert values.tolist() == sorted(set(range(m)) - set(interacted[u]))
        assert counts.min() > 0.8 * counts.mean()


def test_small_inputs_run_the_direct_runner_in_memory():
    mp = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert common.small_direct_input(mp, 10 << 20, 100 << 20)
    assert not common.small_direct_input(mp, 200 << 20, 100 << 20)  # large input keeps its workers
    assert not common.small_direct_input(mp, 10 << 20, 0)  # disabled
    assert not common.small_direct_input(mp + ["--runner=DataflowRunner"], 10 << 20, 100 << 20)
    assert not common.small_direct_input(["--direct_running_mode=in_memory"], 10 << 20, 100 << 20)
    assert common.with_direct_mode(["--a=1", *mp], "in_memory") == ["--a=1", "--direct_running_mode=in_memory"]
    assert common.with_direct_mode(["--direct_running_mode", "multi_processing", "--b"], "in_memory") == [
        "--b",
        "--direct_running_mode=in_memory",
    ]
