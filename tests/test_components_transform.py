"""The tf.Transform module on the pipeline's real Transform output: index convention, OOV buckets,
fixed buckets, vocab sizes, and a per-example mapping usable at serving time."""

from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pytest

from cmml.models import preprocessing as TM


def _transform(data_pipeline):
    import tensorflow_transform as tft

    [graph] = data_pipeline.artifacts("TransformGraph")
    return tft.TFTransformOutput(graph.uri)


def _files(data_pipeline, kind: str) -> list[str]:
    [examples] = [a for a in data_pipeline.artifacts("Examples") if f"/{kind}/" in a.uri]
    return sorted(glob.glob(f"{examples.uri}/Split-*/*"))


def _transformed_frame(data_pipeline) -> pd.DataFrame:
    import tensorflow as tf

    spec = {n: tf.io.FixedLenFeature([], tf.int64) for n in ("user_id", "item_id", "gender", "age", "year")}
    spec.update(
        {
            TM.RAW_USER_ID: tf.io.FixedLenFeature([], tf.string),
            TM.RAW_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            TM.LABEL: tf.io.FixedLenFeature([], tf.float32),
            "genres": tf.io.RaggedFeature(tf.int64),
        }
    )
    ds = tf.data.TFRecordDataset(_files(data_pipeline, "transformed_examples"), compression_type="GZIP").batch(100_000)
    parts = []
    for batch in ds:
        p = tf.io.parse_example(batch, spec)
        cols = {k: v.numpy() for k, v in p.items() if k != "genres"}
        cols["genres"] = p["genres"].to_list()
        parts.append(pd.DataFrame(cols))
    df = pd.concat(parts, ignore_index=True)
    for c in (TM.RAW_USER_ID, TM.RAW_ITEM_ID):
        df[c] = df[c].str.decode("utf-8")
    return df


def test_transformed_examples_follow_the_index_convention(data_pipeline):
    out = _transform(data_pipeline)
    df = _transformed_frame(data_pipeline)
    data = data_pipeline.data
    ratings = pd.read_csv(
        data / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "ts"], dtype=str
    )
    assert len(df) == len(ratings)
    users = [u.decode() for u in out.vocabulary_by_name("user_id")]
    items = [i.decode() for i in out.vocabulary_by_name("item_id")]
    assert (df.user_id == df[TM.RAW_USER_ID].map({u: k + 1 for k, u in enumerate(users)})).all()  # 1..V, 0 unused
    assert (df.item_id == df[TM.RAW_ITEM_ID].map({i: k + 1 for k, i in enumerate(items)})).all()
    merged = df.merge(ratings, left_on=[TM.RAW_USER_ID, TM.RAW_ITEM_ID], right_on=["user", "item"])
    assert len(merged) == len(df) and np.allclose(merged.label, merged.rating.astype(float))
    # fixed buckets: ML-1M age groups, decades
    people = pd.read_csv(
        data / "users.dat", sep="::", engine="python", names=["user", "gender", "age", "occ", "zip"], dtype=str
    )
    ages = df[TM.RAW_USER_ID].map(dict(zip(people.user, people.age.astype(int))))
    expected_age = np.searchsorted(np.array(TM.AGE_BOUNDARIES), ages.to_numpy(), side="right") + 1
    assert np.array_equal(df.age.to_numpy(), np.where(ages > 0, expected_age, 0))
    movies = pd.read_csv(data / "movies.dat", sep="::", engine="python", names=["item", "title", "genres"], dtype=str)
    year = df[TM.RAW_ITEM_ID].map(dict(zip(movies.item, movies.title.str.extract(r"\((\d{4})\)$")[0].astype(int))))
    names = TM.bucket_names(TM.YEAR_BOUNDARIES, "year")
    assert all(names[y - 1] == f"{v // 10 * 10}s" for y, v in zip(df.year, year))
    genre_vocab = [g.decode() for g in out.vocabulary_by_name("genres")]
    movie_genres = dict(zip(movies.item, movies.genres.str.split("|")))
    for item, g in zip(df[TM.RAW_ITEM_ID][:2000], df.genres[:2000]):
        assert sorted(genre_vocab[x - 1] for x in g) == sorted(movie_genres[item])


def test_vocab_sizes_oov_buckets_and_missing_values(data_pipeline):
    import tensorflow as tf

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
    raw = {"user_id": [[b"never-seen"]], "item_id": [[b"1"]], "label": [[3.0]]}
    inputs = {k: tf.constant(v) for k, v in raw.items()}
    from tensorflow_transform.tf_metadata import schema_utils

    spec = schema_utils.schema_as_feature_spec(out.raw_metadata.schema).feature_spec
    for name, s in spec.items():
        if name not in inputs:  # optional features: absent (empty sparse)
            dtype = s.dtype
            inputs[name] = tf.sparse.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], dtype), [1, 1])
    inputs["genres"] = tf.sparse.SparseTensor([[0, 0], [0, 1]], tf.constant([b"War", b"No Such Genre"]), [1, 2])
    inputs["age"] = tf.sparse.SparseTensor([[0, 0]], tf.constant([61], tf.int64), [1, 1])
    t = layer(inputs)
    v_users = len(out.vocabulary_by_name("user_id"))
    assert v_users + 1 <= int(t["user_id"][0]) <= v_users + 32  # an OOV bucket
    assert int(t["gender"][0]) == 0 and int(t["year"][0]) == 0  # missing -> padding index
    assert int(t["age"][0]) == len(TM.AGE_BOUNDARIES) + 1  # 56+
    genres = out.vocabulary_by_name("genres")
    values = t["genres"].values.numpy().tolist()
    assert values[0] == genres.index(b"War") + 1 and len(genres) < values[1] <= len(genres) + 2
    assert float(t["label"][0]) == 3.0 and t[TM.RAW_USER_ID].numpy()[0] == b"never-seen"
    assert "tags" not in t and "writers" not in t  # dropped by the default transform config


def test_serving_transform_is_a_per_example_mapping(data_pipeline):
    """One raw tf.Example through the transform layer alone == its row in Transform's batch output."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    out = _transform(data_pipeline)
    df = _transformed_frame(data_pipeline).set_index([TM.RAW_USER_ID, TM.RAW_ITEM_ID])
    spec = schema_utils.schema_as_feature_spec(out.raw_metadata.schema).feature_spec
    layer = out.transform_features_layer()
    raws = [
        r.numpy() for r in tf.data.TFRecordDataset(_files(data_pipeline, "examples"), compression_type="GZIP").take(25)
    ]
    for raw in raws:
        one = layer(tf.io.parse_example(tf.constant([raw]), spec))
        key = (one[TM.RAW_USER_ID].numpy()[0].decode(), one[TM.RAW_ITEM_ID].numpy()[0].decode())
        row = df.loc[key]
        for name in ("user_id", "item_id", "gender", "age", "year"):
            assert int(one[name].numpy()[0]) == row[name], (key, name)
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
