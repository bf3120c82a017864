"""The ServingValidator's parts: canned requests from raw tf.Examples, and the serving check in a fresh
interpreter where ``cmml`` cannot be imported (passing, and failing with TensorFlow's whole message)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.components.serving_validator.canned import canned_episodes
from cmml.components.serving_validator.checks import (
    FRESH_PROCESS_SCRIPT,
    bounded,
    check_in_fresh_process,
    last_error,
    npz_safe,
)
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig
from cmml.models.export import export_saved_model
from cmml.models.testing import DEFAULT_SPECS, random_episodes
from cmml.serving.signatures import signature_def_map, signatures_from_map
from cmml.serving.testing import hash_ids

RAW_SPECS = {
    "user_id": ([], tf.string),
    "gender": ([], tf.string),
    "item_id": ([], tf.string),
    "genres": ([None], tf.string),
}
USERS, ROWS = 5, 14


def _strings(*values: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def _example(**feature: tf.train.Feature) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _interaction(user: int, item: int, label: float) -> bytes:
    return _example(
        user_id=_strings(f"u{user}"),
        item_id=_strings(f"i{item}"),
        label=tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
        timestamp=tf.train.Feature(int64_list=tf.train.Int64List(value=[1000 + item])),
    )


def _write(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for r in records:
            writer.write(r)


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    """A CMML model exported with raw-feature signatures (serve_tf_examples included), and raw
    tf.Examples in ExampleGen's layout (``Split-*/*.gz``)."""
    root = tmp_path_factory.mktemp("serving_validator")
    tf.keras.utils.set_random_seed(5)
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(embedding_dim=8))
    model({k: tf.constant(v) for k, v in random_episodes(tasks=1, support=3, query=2).items()})
    string = tf.io.FixedLenFeature([], tf.string, default_value="")
    example_spec = {
        "user_id": string,
        "gender": tf.io.VarLenFeature(tf.string),  # an optional scalar feature, as in a multi-domain schema
        "item_id": string,
        "genres": tf.io.VarLenFeature(tf.string),
        "label": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    }
    path = export_saved_model(
        model,
        root / "model",
        preprocess=hash_ids,
        raw_specs={name: tf.TensorSpec(shape, dtype) for name, (shape, dtype) in RAW_SPECS.items()},
        example_spec=example_spec,
    )
    # LogExampleGen's layout: interactions, and the user and item tables (entities)
    rng = np.random.default_rng(0)
    rows = [(k % USERS, int(rng.integers(40)), float(rng.integers(1, 6))) for k in range(USERS * ROWS)]
    _write(root / "examples" / "Split-train" / "data_tfrecord-0.gz", [_interaction(*row) for row in rows])
    count = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
    users = [
        _example(user_id=_strings(f"u{u}"), gender=_strings("F" if u % 2 else "M"), interactions=count)
        for u in range(USERS)
    ]
    items = [
        _example(
            item_id=_strings(f"i{i}"),
            genres=_strings(*[f"g{(i + k) % 7}" for k in range(1 + i % 3)]),
            interactions=count,
        )
        for i in range(40)
    ]
    _write(root / "entities" / "Split-users" / "data_tfrecord-000.gz", users)
    _write(root / "entities" / "Split-items" / "data_tfrecord-000.gz", items)
    return str(path), str(root / "examples"), str(root / "entities")


def _inputs(raw_model, **sizes):
    model_dir, examples, entities = raw_model
    signature = signatures_from_map(signature_def_map(model_dir))["serving_default"]
    return canned_episodes(examples, entities, signature.inputs, **sizes)


def test_canned_requests_are_users_rows_padded_to_the_request_size(raw_model):
    inputs = _inputs(raw_model, tasks=3, support=16, query=4)
    assert inputs["support_user_id"].shape == (3, 16) and inputs["query_item_id"].shape == (3, 4)
    assert inputs["support_genres"].shape[:2] == (3, 16) and inputs["support_genres"].dtype == object
    # each user has ROWS rows: the last 4 are the candidates, the other 10 the support set, then padding
    np.testing.assert_array_equal(inputs["support_mask"], np.repeat([[1.0] * 10 + [0.0] * 6], 3, axis=0))
    np.testing.assert_array_equal(inputs["query_mask"], np.ones((3, 4)))
    assert (inputs["support_label"][:, :10] >= 1).all() and (inputs["support_label"][:, 10:] == 0).all()
    for t in range(3):
        assert len(set(inputs["support_user_id"][t, :10])) == 1 and inputs["support_user_id"][t, 10] == b""
        assert inputs["query_user_id"][t, 0] == inputs["support_user_id"][t, 0]
        examples = [tf.train.Example.FromString(e) for e in inputs["support_examples"][t, :10]]
        assert [e.features.feature["item_id"].bytes_list.value[0] for e in examples] == list(
            inputs["support_item_id"][t, :10]
        )
        assert inputs["support_examples"][t, 10] == b""


def test_canned_requests_pass_the_fresh_process_check(raw_model):
    report = check_in_fresh_process(raw_model[0], _inputs(raw_model, tasks=3, support=8, query=4))
    assert report["signatures"] == ["encode_context", "score", "serve_tf_examples", "serving_default", "update_context"]
    assert "encode_context + score equals serving_default" in report["checks"]
    assert "serve_tf_examples equals serving_default on the same rows" in report["checks"]
    assert report["server"].startswith("fresh Python process")


def _without(serialized: bytes, names: tuple[str, ...]) -> bytes:
    if not serialized:
        return serialized
    example = tf.train.Example.FromString(serialized)
    for name in names:
        del example.features.feature[name]
    return example.SerializeToString()


def test_features_no_row_has_are_served(raw_model):
    """A domain without some features (ML-100K has no actors, no MPAA rating): no row of the request
    has them, as raw tensors ([B, R] "" or [B, R, 0]) and as tf.Examples without the feature."""
    inputs = _inputs(raw_model, tasks=3, support=8, query=4)
    for part in ("support", "query"):
        inputs[f"{part}_genres"] = np.zeros(inputs[f"{part}_mask"].shape + (0,), dtype=object)
        inputs[f"{part}_gender"] = np.full(inputs[f"{part}_mask"].shape, b"", dtype=object)
        examples = inputs[f"{part}_examples"]
        inputs[f"{part}_examples"] = np.vectorize(lambda e: _without(e, ("genres", "gender")), otypes=[object])(
            examples
        )
    report = check_in_fresh_process(raw_model[0], inputs)
    assert "serve_tf_examples equals serving_default on the same rows" in report["checks"]


def _broken(raw_model) -> dict:
    """Support labels for one row fewer than the support set: TensorFlow fails inside the graph."""
    inputs = _inputs(raw_model, tasks=2, support=8, query=4)
    inputs["support_label"] = inputs["support_label"][:, :-1]
    return inputs


def test_a_failing_model_reports_tensorflows_whole_error(raw_model):
    with pytest.raises(RuntimeError) as err:
        check_in_fresh_process(raw_model[0], _broken(raw_model))
    message = str(err.value)
    assert message.startswith("serving check failed in a fresh process: InvalidArgumentError")
    assert "[[{{node " in message, message  # the failing node: the end of TF's message is kept
    assert len(message) < 4200


def test_fresh_process_script_runs_by_path_without_cmml_and_exits_nonzero_on_failure(raw_model, tmp_path):
    np.savez(tmp_path / "inputs.npz", **npz_safe(_broken(raw_model)))
    probe = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, FRESH_PROCESS_SCRIPT, raw_model[0], str(tmp_path / "inputs.npz"), str(probe)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1
    report = json.loads(probe.read_text())
    assert report["error"].startswith("InvalidArgumentError") and "[[{{node " in report["error"]
    assert report["error"] in proc.stderr


def test_error_text_keeps_the_last_traceback_bounded():
    stderr = "warning\nTraceback (most recent call last):\n  old\nValueError: x\nTraceback (most recent call last):\n"
    stderr += '  File "a.py"\nInvalidArgumentError: ' + "y" * 10_000 + "\n\t [[{{node Reshape_17}}]]"
    text = bounded(last_error(stderr))
    assert text.startswith("Traceback (most recent call last):\n  File") and "ValueError" not in text
    assert text.endswith("[[{{node Reshape_17}}]]") and len(text) < 4100
    assert bounded("short\n") == "short"
