"""LogExampleGen: dead letters and counts on a corrupted log, the user and item tables, unknown ids, and
TFX splits on real data."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest

from cmml.components.example_gen.component import INPUT_SPLIT_NAME, default_output_config
from cmml.components.example_gen.dead_letters import STATS_FILE, read_dead_letters
from cmml.components.example_gen.executor import Executor
from cmml.components.example_gen.interactions import Partitioner
from cmml.components.example_gen.sources import Source, make_query

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def run_example_gen(sources, out, output_config=None, beam_args=IN_MEMORY, unknown_entities=None):
    """Runs the executor directly (no orchestrator); returns the examples and entities artifacts."""
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as specs
    from tfx.utils import proto_utils

    examples, entities = standard_artifacts.Examples(), standard_artifacts.Examples()
    examples.uri, entities.uri = str(out), str(out) + "-entities"
    query = make_query(sources)
    props = {
        specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(
            example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=INPUT_SPLIT_NAME, pattern=query)])
        ),
        specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config or default_output_config()),
        specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        "unknown_entities": unknown_entities,
    }
    # a pipeline factory rather than beam args: TFX would otherwise build an sdist of itself per executor
    context = BaseBeamExecutor.Context(make_beam_pipeline_fn=lambda: beam.Pipeline(argv=beam_args))
    Executor(context).Do({}, {"examples": [examples], "entities": [entities]}, props)
    return examples, entities


def read_entities(entities, split: str) -> dict[str, dict]:
    """An entity split as {id: {feature: values}} (the id is users' user_id or items' item_id)."""
    key = "user_id" if split == "users" else "item_id"
    out = {}
    for e in read_examples(entities.uri, split):
        row = {name: value(e, name) for name in e.features.feature if value(e, name) is not None}  # None: missing
        out[row.pop(key)[0]] = row
    return out


def read_examples(uri, split: str) -> list:
    import tensorflow as tf

    files = sorted(glob.glob(f"{uri}/Split-{split}/*"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def value(example, name):
    f = example.features.feature[name]
    kind = f.WhichOneof("kind")
    if kind is None:
        return None
    values = list(getattr(f, kind).value)
    return [v.decode() if isinstance(v, bytes) else v for v in values]


GOOD = [
    "1::10::5::978300760",
    "1::20::3::978302109",
    "2::10::4::978301968",
    "3::30::2::978300001",
    "2::20::1::978300002",
]
BAD = {
    6: ("2::30::4", "wrong field count"),
    7: ("3::10::x::978301968", "non-numeric label"),
    8: ("3::20::9::978301968", "label out of range"),
    9: ("::20::4::978301968", "empty user id"),
}


@pytest.fixture()
def corrupted(tmp_path):
    d = tmp_path / "corrupted"
    d.mkdir()
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    (d / "movies.dat").write_text(
        "10::Toy Story (1995)::Animation|Comedy\n20::Heat (1995)::Action|Crime\n30::Casino (1995)::Drama\n"
    )
    lines = GOOD + [BAD[k][0] for k in sorted(BAD)] + ["1::30::4::97"]  # 10 lines
    text = "\n".join(lines)
    text = text[: len(text) - 3]  # truncated last line (no newline): '1::30::' -> 3 fields, the last empty
    (d / "ratings.dat").write_text(text)
    return d


def test_corrupted_log_goes_to_dead_letter(corrupted, tmp_path):
    examples, entities = run_example_gen([Source(str(corrupted))], tmp_path / "out")
    letters = read_dead_letters(examples.uri)
    assert [d["line"] for d in letters] == [6, 7, 8, 9, 10]
    for d in letters[:4]:
        raw, kind = BAD[d["line"]]
        assert d["kind"] == kind and d["text"] == raw and d["file"].endswith("ratings.dat")
    assert letters[4]["text"].startswith("1::30::") and letters[4]["kind"] in ("wrong field count", "non-numeric label")
    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert stats["rows_in"] == 10 and stats["rows_ok"] == 5 and stats["rows_rejected"] == 5
    assert sum(stats["rejected_by_kind"].values()) == 5 and stats["rejected_by_kind"]["label out of range"] == 1
    props = examples.mlmd_artifact.custom_properties
    assert props["rows_in"].int_value == 10 and props["rows_rejected"].int_value == 5
    assert props["rejected_empty_user_id"].int_value == 1 and props["rejected_non_numeric_label"].int_value >= 1
    rows = read_examples(examples.uri, "train") + read_examples(examples.uri, "eval")
    assert len(rows) == 5 == props["examples_train"].int_value + props["examples_eval"].int_value
    first = [r for r in rows if value(r, "user_id") == ["1"] and value(r, "item_id") == ["10"]][0]
    assert value(first, "label") == [5.0] and value(first, "timestamp") == [978300760]
    assert sorted(first.features.feature) == ["item_id", "label", "timestamp", "user_id"]  # side features: entities
    users, items = read_entities(entities, "users"), read_entities(entities, "items")
    assert users["1"] == {"gender": ["F"], "age": [1], "occupation": ["10"], "zip": ["48067"], "interactions": [2]}
    assert items["10"] == {"genres": ["Animation", "Comedy"], "year": [1995], "interactions": [2]}
    assert {k: v["interactions"] for k, v in items.items()} == {"10": [2], "20": [2], "30": [1]}


def read_columns(uri, split: str) -> tuple[dict, list]:
    """user_id, item_id (numpy) and the serialised examples of a split, parsed in TensorFlow."""
    import tensorflow as tf

    files = sorted(glob.glob(f"{uri}/Split-{split}/*"))
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("user_id", "item_id")}
    parsed = tf.io.parse_example(tf.constant(serialized), spec)
    return {k: v.numpy().astype(str) for k, v in parsed.items()}, serialized


def test_ml100k_joined_examples_and_user_splits(ml100k_dir, tmp_path):
    """All 100,000 ratings, side features joined, split by user with TFX's own partition function."""
    import tensorflow as tf
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn

    examples, entities = run_example_gen([Source(str(ml100k_dir))], tmp_path / "out")
    (train, train_raw), (evals, eval_raw) = read_columns(examples.uri, "train"), read_columns(examples.uri, "eval")
    assert len(train_raw) + len(eval_raw) == 100_000 and read_dead_letters(examples.uri) == []
    train_users, eval_users = set(train["user_id"]), set(evals["user_id"])
    assert not train_users & eval_users and len(train_users | eval_users) == 943
    assert 0.55 < len(train_raw) / 100_000 < 0.78
    config = default_output_config().split_config
    for raw in train_raw[:100] + eval_raw[:100]:
        e = tf.train.Example.FromString(raw)
        expected = "train" if _PartitionFn(e, 2, [2, 3], config) == 0 else "eval"
        assert (expected == "train") == (value(e, "user_id")[0] in train_users)
    # independently with pandas: one rating, and the user and item tables with their interaction counts
    u = pd.read_csv(ml100k_dir / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"], dtype=str)
    ratings = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"], dtype=str)
    row = ratings.iloc[12345]
    cols, raws = (train, train_raw) if row.user_id in train_users else (evals, eval_raw)
    hit = np.flatnonzero((cols["user_id"] == row.user_id) & (cols["item_id"] == row.item_id))
    assert len(hit) == 1
    match = tf.train.Example.FromString(raws[hit[0]])
    assert value(match, "label") == [float(row.rating)] and value(match, "timestamp") == [int(row.ts)]
    users, items = read_entities(entities, "users"), read_entities(entities, "items")
    # this copy's u.user has a user 0 without ratings: a user with side features only
    assert len(users) == len(u) and len(items) == 1682
    assert sorted(k for k, v in users.items() if v["interactions"] == [0]) == sorted(
        set(u.user_id) - set(ratings.user_id)
    )
    user = u[u.user_id == row.user_id].iloc[0]
    assert users[row.user_id] == {
        "gender": [user.gender],
        "age": [int(user.age)],
        "occupation": [user.occupation],
        "zip": [user.zip],
        "interactions": [int((ratings.user_id == row.user_id).sum())],
    }
    per_item = ratings.groupby("item_id").size()
    assert {k: v["interactions"][0] for k, v in items.items()} == per_item.to_dict()
    assert not any("rated" in v or "directors" in v for v in items.values())  # not in ML-100K
    props = entities.mlmd_artifact.custom_properties
    assert props["users_rows"].int_value == len(u) and props["items_without_interactions"].int_value == 0


def test_multi_domain_and_csv_mapping(tmp_path):
    """Two named sources: ids and scenarios prefixed, a domain feature; a CSV log through a column mapping."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "ratings.dat").write_text("1::10::5::1\n2::10::3::2\n")
    log = tmp_path / "clicks.csv"
    log.write_text("uid,sku,clicked,theme\nu1,i9,1,toys\nu2,i9,1,\nu1,i8,,toys\n")
    src_b = Source(str(log), name="shop", columns="user=uid,item=sku,label=clicked,scenario=theme")
    examples, entities = run_example_gen(
        [Source(str(a), name="ml"), src_b], tmp_path / "out", output_config=_single_split()
    )
    rows = read_examples(examples.uri, "train")
    users = sorted(value(r, "user_id")[0] for r in rows)
    assert users == ["ml:1", "ml:2", "shop:u1", "shop:u2"]
    assert {value(r, "domain")[0] for r in rows} == {"ml", "shop"}
    toys = [r for r in rows if value(r, "scenario") == ["shop:toys"]]
    assert len(toys) == 1 and value(toys[0], "item_id") == ["shop:i9"]
    letters = read_dead_letters(examples.uri)
    assert len(letters) == 1 and letters[0]["source"] == "shop" and letters[0]["line"] == 4
    with pytest.raises(ValueError, match="distinct names"):
        make_query([Source(str(a)), Source(str(a))])


def _single_split():
    from tfx.proto import example_gen_pb2

    return example_gen_pb2.Output()


def test_partitioner_matches_tfx_and_is_vectorised():
    import pyarrow as pa
    import tensorflow as tf
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
    from tfx.proto import example_gen_pb2

    users = [f"u{i}" for i in range(300)]
    batch = pa.RecordBatch.from_arrays([pa.array([[u.encode()] for u in users], pa.list_(pa.binary()))], ["user_id"])
    part = Partitioner(["a", "b", "c"], [3, 5, 2], "user_id")
    got = part.assign(batch, [])
    config = example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=b) for n, b in (("a", 3), ("b", 5), ("c", 2))],
        partition_feature_name="user_id",
    )
    for u, g in zip(users, got):
        e = tf.train.Example()
        e.features.feature["user_id"].bytes_list.value.append(u.encode())
        assert _PartitionFn(e, 3, [3, 8, 10], config) == g
    assert set(np.unique(got)) == {0, 1, 2}


@pytest.fixture()
def partly_known(tmp_path):
    """Users 1, 2 and items 10, 20, 40 have side rows (item 40 no rating, one malformed user row);
    user 9 and item 99 are rated but have no side row."""
    d = tmp_path / "partly_known"
    d.mkdir()
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::x::15::55117\n")
    (d / "movies.dat").write_text("10::A (1995)::Drama\n20::B (1996)::Comedy\n40::C (1997)::Drama|War\n")
    (d / "ratings.dat").write_text("1::10::5::1\n2::20::3::2\n9::10::4::3\n1::99::2::4\n2::10::1::5\n")
    return d


@pytest.mark.parametrize("rule", ["keep", "quarantine"])
def test_unknown_users_and_items_follow_the_rule_and_every_row_is_counted(partly_known, tmp_path, rule):
    examples, entities = run_example_gen([Source(str(partly_known))], tmp_path / "out", unknown_entities=rule)
    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    rows = read_examples(examples.uri, "train") + read_examples(examples.uri, "eval")
    users, items = read_entities(entities, "users"), read_entities(entities, "items")
    letters = read_dead_letters(examples.uri)
    side_letters = [d for d in letters if d["file"].endswith("users.dat")]
    assert len(side_letters) == 1 and side_letters[0]["line"] == 3  # the malformed user row, not an interaction
    assert items["40"]["interactions"] == [0] and items["40"]["genres"] == ["Drama", "War"]  # a cold item
    props = entities.mlmd_artifact.custom_properties
    if rule == "keep":
        assert len(rows) == 5 and stats["rows_in"] == 5 and stats["rows_rejected"] == 0
        assert users["9"] == {"interactions": [1]} and items["99"] == {"interactions": [1]}  # ids without features
        assert props["users_unknown_kept"].int_value == 1 and props["items_unknown_kept"].int_value == 1
    else:
        assert len(rows) == 3 and "9" not in users and "99" not in items
        assert stats["rows_in"] == 5 and stats["rows_ok"] == 3 and stats["rows_rejected"] == 2
        assert stats["rejected_by_kind"] == {"unknown user": 1, "unknown item": 1}
        by_line = {d["line"]: d for d in letters if d["file"].endswith("ratings.dat")}
        assert sorted(by_line) == [3, 4]
        assert by_line[3]["reason"] == "unknown user: '9' has no row in the users side table"
        assert by_line[4]["kind"] == "unknown item"
        assert props["users_unknown_kept"].int_value == 0
    assert users["1"]["interactions"] == ([2] if rule == "keep" else [1])
    assert sum(v["interactions"][0] for v in items.values()) == len(rows)  # counts add up to the examples
    assert props["items_rows"].int_value == len(items) and props["items_without_interactions"].int_value == 1


def test_a_log_without_side_files_gets_id_only_tables(tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    (d / "ratings.dat").write_text("1::10::5::1\n2::10::3::2\n")
    _, entities = run_example_gen([Source(str(d))], tmp_path / "out", unknown_entities="quarantine")
    assert read_entities(entities, "users") == {"1": {"interactions": [1]}, "2": {"interactions": [1]}}
    assert read_entities(entities, "items") == {"10": {"interactions": [2]}}
