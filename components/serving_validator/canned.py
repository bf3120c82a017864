"""Canned serving requests from real raw interactions: LogExampleGen's interactions joined with the raw
attributes of their users and items (its ``entities``), grouped by user, the support set and the
last ``query`` rows as candidates, laid out by :func:`cmml.serving.requests.episode_inputs`."""

from __future__ import annotations

import glob
import os
from typing import Mapping

import numpy as np
from tensorflow.core.framework import types_pb2

from cmml.data import records as R
from cmml.serving.requests import MASK, QUERY, SUPPORT, episode_inputs
from cmml.serving.signatures import TensorSpecInfo

EXAMPLES = "examples"  # the rows' serialized tf.Examples, for the serve_tf_examples signature
ENTITY_COUNT = "interactions"  # a column of the entity tables, not an attribute


def _files(uri: str, split: str = "*") -> list[str]:
    files = sorted(glob.glob(os.path.join(uri, f"Split-{split}", "*")))
    if not files:
        raise FileNotFoundError(f"no examples under {uri} (split {split})")
    return files


def _entity_examples(entities_uri: str, split: str, key: str, wanted: set[bytes]):
    """The serialized entity examples of the ``wanted`` ids, by id."""
    import tensorflow as tf

    found = {}
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value=b"")}
    for serialized in tf.data.TFRecordDataset(_files(entities_uri, split), compression_type="GZIP").batch(8192):
        ids = tf.io.parse_example(serialized, spec)[key].numpy()
        for i in np.flatnonzero(np.isin(ids, list(wanted))):
            found[ids[i]] = serialized[i].numpy()
    return found


def _joined(interactions: list[bytes], users: list[bytes], items: list[bytes], entities_uri: str) -> list[bytes]:
    """Interaction examples with their user's and item's raw attributes added (a raw serving row)."""
    from tensorflow.core.example import example_pb2

    tables = {
        R.USER_ID: _entity_examples(entities_uri, "users", R.USER_ID, set(users)),
        R.ITEM_ID: _entity_examples(entities_uri, "items", R.ITEM_ID, set(items)),
    }
    out = []
    for serialized, user, item in zip(interactions, users, items):
        row = example_pb2.Example.FromString(serialized)
        for key, entity_id in ((R.USER_ID, user), (R.ITEM_ID, item)):
            if entity_id in tables[key]:
                entity = example_pb2.Example.FromString(tables[key][entity_id])
                for name, feature in entity.features.feature.items():
                    if name not in (key, ENTITY_COUNT):
                        row.features.feature[name].CopyFrom(feature)
        out.append(row.SerializeToString())
    return out


def _read_rows(
    examples_uri: str, entities_uri: str, specs: Mapping[str, TensorSpecInfo], max_rows: int
) -> dict[bytes, list[dict]]:
    """Raw rows per user of the first ``max_rows`` interactions: feature -> value (list for rank 3 inputs)."""
    import tensorflow as tf

    features = sorted({k[len(SUPPORT) + 1 :] for k in specs if k.startswith(SUPPORT + "_")} - {R.LABEL, MASK})
    ids = {k: tf.io.FixedLenFeature([], tf.string) for k in (R.USER_ID, R.ITEM_ID)}
    interactions, users, items = [], [], []
    for serialized in tf.data.TFRecordDataset(_files(examples_uri), compression_type="GZIP").take(max_rows).batch(4096):
        parsed = tf.io.parse_example(serialized, ids)
        interactions += list(serialized.numpy())
        users += list(parsed[R.USER_ID].numpy())
        items += list(parsed[R.ITEM_ID].numpy())
    joined = _joined(interactions, users, items, entities_uri)
    parse = {name: tf.io.VarLenFeature(tf.as_dtype(specs[f"{SUPPORT}_{name}"].dtype)) for name in features}
    parse.update({R.USER_ID: tf.io.VarLenFeature(tf.string), R.LABEL: tf.io.VarLenFeature(tf.float32)})
    scalar = {name for name in features if len(specs[f"{SUPPORT}_{name}"].shape or ()) == 2}  # one value per row
    rows: dict[bytes, list[dict]] = {}
    for start in range(0, len(joined), 2048):
        chunk = joined[start : start + 2048]
        parsed = tf.io.parse_example(tf.constant(chunk), parse)
        dense = {
            k: tf.sparse.to_dense(v, default_value=b"" if v.dtype == tf.string else 0).numpy()
            for k, v in parsed.items()
        }
        for i, ex in enumerate(chunk):
            row = {R.LABEL: float(dense[R.LABEL][i][0]), EXAMPLES: ex}
            for name in features:
                values = [x for x in dense[name][i] if (x != b"" if isinstance(x, bytes) else x != 0)]
                row[name] = (values[0] if values else None) if name in scalar else values
            rows.setdefault(dense[R.USER_ID][i][0], []).append(row)
    return rows


def canned_episodes(
    examples_uri: str,
    entities_uri: str,
    input_specs: Mapping[str, TensorSpecInfo],
    tasks: int = 4,
    support: int = 32,
    query: int = 10,
    max_rows: int = 20_000,
) -> dict[str, np.ndarray]:
    """Raw request inputs built from LogExampleGen's outputs: users with enough rows become tasks.

    ``input_specs``: the serving signature's inputs (``SignatureInfo.inputs``). Returns its
    ``support_*``/``query_*`` inputs (arrays, masks, support labels) and ``support_examples`` /
    ``query_examples`` (the same rows as serialized tf.Examples).
    """
    rows = _read_rows(examples_uri, entities_uri, input_specs, max_rows)
    users = [u for u, r in rows.items() if len(r) >= query + 3][:tasks]
    if not users:
        raise ValueError(f"no user with at least {query + 3} interactions in the first {max_rows} examples")
    episodes = [{SUPPORT: rows[u][:-query][:support], QUERY: rows[u][-query:]} for u in users]
    specs = dict(input_specs)
    for part in (SUPPORT, QUERY):
        name = f"{part}_{EXAMPLES}"
        specs[name] = TensorSpecInfo(name, types_pb2.DT_STRING, (None, None))
    return episode_inputs(episodes, specs, sizes={SUPPORT: support, QUERY: query})
