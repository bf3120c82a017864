"""The tf.Transform module on the pipeline's real Transform output (the user and item tables): index
convention, vocabularies weighted by interactions, ids without interactions out of vocabulary,
fixed buckets, vocab sizes, and a per-row mapping usable at serving time."""

from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pytest
from components_fixtures import COLD_ITEM

from cmml.models import preprocessing as TM


def _transform(data_pipeline):
    import tensorflow_transform as tft

    [graph] = data_pipeline.artifacts("TransformGraph")
    return tft.TFTransformOutput(graph.uri)


def _files(data_pipeline, kind: str, split: str) -> list[str]:
    [examples] = [a for a in data_pipeline.artifacts("Examples") if f"/{kind}/" in a.uri]
    return sorted(glob.glob(f"{examples.uri}/Split-{split}/*"))


def _frame(data_pipeline, split: str, spec: dict) -> pd.DataFrame:
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(_files(data_pipeline, "transformed_examples", split), compression_type="GZIP")
    parts = []
    for batch in ds.batch(100_000):
        p = tf.io.parse_example(batch, spec)
        parts.append(
            pd.DataFrame({k: (v.to_list() if isinstance(v, tf.RaggedTensor) else v.numpy()) for k, v in p.items()})
        )
    df = pd.concat(parts, ignore_index=True)
    for c in (TM.RAW_USER_ID, TM.RAW_ITEM_ID):
        if c in df:
            df[c] = df[c].str.decode("utf-8")
    return df


def _users(data_pipeline) -> pd.DataFrame:
    import tensorflow as tf

    spec = {n: tf.io.FixedLenFeature([], tf.int64) for n in ("user_id", "gender", "age")}
    return _frame(data_pipeline, "users", {**spec, TM.RAW_USER_ID: tf.io.FixedLenFeature([], tf.string)})


def _items(data_pipeline) -> pd.DataFrame:
    import tensorflow as tf

    spec = {n: tf.io.FixedLenFeature([], tf.int64) for n in ("item_id", "year")}
    spec.update({TM.RAW_ITEM_ID: tf.io.FixedLenFeature([], tf.string), "genres": tf.io.RaggedFeature(tf.int64)})
    return _frame(data_pipeline, "items", spec)


def _read(data: str, name: str, columns: list[str]) -> pd.DataFrame:
    return pd.read_csv(data / name, sep="::", engine="python", names=columns, dtype=str, encoding="latin-1")


def test_transformed_tables_follow_the_index_convention_and_interaction_weights(data_pipeline):
    out = _transform(data_pipeline)
    users, items = _users(data_pipeline), _items(data_pipeline)
    data = data_pipeline.data
    ratings = _read(data, "ratings.dat", ["user", "item", "rating", "ts"])
    people = _read(data, "users.dat", ["user", "gender", "age", "occ", "zip"])
    movies = _read(data, "movies.dat", ["item", "title", "genres"])
    assert sorted(users[TM.RAW_USER_ID]) == sorted(people.user)  # one row per user of the side table
    assert set(items[TM.RAW_ITEM_ID]) == set(movies.item) | set(ratings.item)
    # ids: the vocabulary holds the rated ids, most-rated first (weights = interactions); the others are OOV
    per_user = ratings.groupby("user").size()
    vocab = [u.decode() for u in out.vocabulary_by_name("user_id")]
    assert set(vocab) == set(per_user.index) and (np.diff(per_user[vocab].to_numpy()) <= 0).all()
    index = users.set_index(TM.RAW_USER_ID).user_id
    assert (index[vocab] == np.arange(1, len(vocab) + 1)).all()  # 1..V, 0 unused
    per_item = ratings.groupby("item").size()
    items_vocab = [i.decode() for i in out.vocabulary_by_name("item_id")]
    assert set(items_vocab) == set(per_item.index)
    cold = items[~items[TM.RAW_ITEM_ID].isin(per_item.index)]
    assert COLD_ITEM in set(cold[TM.RAW_ITEM_ID])
    assert (cold.item_id > len(items_vocab)).all()  # an item without ratings: an OOV bucket ...
    # ... but its real attributes (the cold items, as every other item)
    genre_vocab = [g.decode() for g in out.vocabulary_by_name("genres")]
    movie_genres = dict(zip(movies.item, movies.genres.str.split("|")))
    for item, g in zip(items[TM.RAW_ITEM_ID], items.genres):
        assert sorted(genre_vocab[x - 1] for x in g) == sorted(movie_genres[item]), item
    # a genre's frequency is the number of ratings of its items: the vocabulary is in that order
    rated = ratings.merge(movies, on="item")
    genre_ratings = rated.genres.str.split("|").explode().value_counts()
    assert (np.diff(genre_ratings[genre_vocab].to_numpy()) <= 0).all()
    # fixed buckets: ML-1M age groups, decades
    ages = users[TM.RAW_USER_ID].map(dict(zip(people.user, people.age.astype(int))))
    expected_age = np.searchsorted(np.array(TM.AGE_BOUNDARIES), ages.to_numpy(), side="right") + 1
    assert np.array_equal(users.age.to_numpy(), np.where(ages > 0, expected_age, 0))
    year = items[TM.RAW_ITEM_ID].map(dict(zip(movies.item, movies.title.str.extract(r"\((\d{4})\)$")[0].astype(int))))
    names = TM.bucket_names(TM.YEAR_BOUNDARIES, "year")
    assert all(names[y - 1] == f"{v // 10 * 10}s" for y, v in zip(items.year, year))


def _raw_inputs(out, values: dict) -> dict:
    """Raw inputs of the transform layer: ``values`` given as lists, every other feature absent."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    spec = schema_utils.schema_as_feature_spec(out.raw_metadata.schema).feature_spec
    inputs = {}
    for name, s in spec.items():
        given = values.get(name, [])
        if isinstance(s, tf.io.FixedLenFeature):
            inputs[name] = tf.constant([given or [0]], s.dtype)
        else:
            inputs[name] = tf.sparse.SparseTensor(
                [[0, k] for k in range(len(given))] or tf.zeros([0, 2], tf.int64),
                tf.constant(given, s.dtype) if given else tf.zeros([0], s.dtype),
                [1, max(1, len(given))],
            )
    return inputs


def test_vocab_sizes_oov_buckets_and_missing_values(data_pipeline):
    out = _transform(data_pipeline)
    sizes = TM.feature_vocab_sizes(out.transformed_metadata.schema)
    for f in TM.resolve_features(data_pipeline.transform_config):
        expected = (
            len(f.boundaries) + 2
            if f.transform == "buckets"
            else len(out.vocabulary_by_name(f.name)) + f.num_oov_buckets + 1
        )
        assert sizes[f.name] == expected, f.name
    layer = out.transform_features_layer()
    t = layer(
        _raw_inputs(
            out,
            {"user_id": [b"never-seen"], "item_id": [b"1"], "genres": [b"War", b"No Such Genre"], "age": [61]},
        )
    )
    v_users = len(out.vocabulary_by_name("user_id"))
    assert v_users + 1 <= int(t["user_id"][0]) <= v_users + 32  # an OOV bucket
    assert int(t["gender"][0]) == 0 and int(t["year"][0]) == 0  # missing -> padding index
    assert int(t["age"][0]) == len(TM.AGE_BOUNDARIES) + 1  # 56+
    genres = out.vocabulary_by_name("genres")
    values = t["genres"].values.numpy().tolist()
    assert values[0] == genres.index(b"War") + 1 and len(genres) < values[1] <= len(genres) + 2
    assert t[TM.RAW_USER_ID].numpy()[0] == b"never-seen"
    assert "tags" not in t and "writers" not in t  # dropped by the default transform config


@pytest.mark.parametrize("split", ["users", "items"])
def test_serving_transform_is_a_per_row_mapping(data_pipeline, split):
    """One raw entity tf.Example through the transform layer alone == its row in Transform's batch output."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    out = _transform(data_pipeline)
    key = TM.RAW_USER_ID if split == "users" else TM.RAW_ITEM_ID
    df = (_users if split == "users" else _items)(data_pipeline).set_index(key)
    spec = schema_utils.schema_as_feature_spec(out.raw_metadata.schema).feature_spec
    layer = out.transform_features_layer()
    raws = [
        r.numpy()
        for r in tf.data.TFRecordDataset(_files(data_pipeline, "entities", split), compression_type="GZIP").take(25)
    ]
    assert raws
    for raw in raws:
        one = layer(tf.io.parse_example(tf.constant([raw]), spec))
        row = df.loc[one[key].numpy()[0].decode()]
        for name in [c for c in df.columns if c != "genres"]:
            assert int(one[name].numpy()[0]) == row[name], (name, row.name)
        if "genres" in df:
            assert one["genres"].values.numpy().tolist() == list(row["genres"])


def test_feature_config_and_bucket_names():
    features = {f.name: f for f in TM.resolve_features({"features": {"zip": {"num_oov_buckets": 16}, "tags": None}})}
    assert features["zip"].num_oov_buckets == 16 and "tags" not in features
    with pytest.raises(ValueError, match="cannot be dropped"):
        TM.resolve_features({"features": {"user_id": None}})
    with pytest.raises(ValueError, match="side must be"):
        TM.FeatureConfig("x", "both")
    assert TM.bucket_names(TM.AGE_BOUNDARIES, "age") == ["<18", "18-25", "25-35", "35-45", "45-50", "50-56", ">=56"]
    assert TM.bucket_names(TM.YEAR_BOUNDARIES, "year")[:3] == ["<1920", "1920s", "1930s"]
