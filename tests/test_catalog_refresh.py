"""Catalog refresh: merging the served item table with the new item file's (the end-to-end refresh, hot
swap included, is in tests/test_pipeline.py)."""

from __future__ import annotations

import numpy as np

from cmml.pipeline.catalog_refresh import _merge


def test_new_rows_replace_old_ones_and_items_missing_from_the_new_file_are_kept():
    old = (
        np.array([b"a", b"b", b"c"]),
        {
            "rated": np.array([1, 2, 3]),
            "genres": np.array([[1, 0], [2, 3], [4, 0]]),
            "year": np.array([7, 8, 9]),  # a column the model does not read
        },
    )
    new = (
        np.array([b"b", b"c", b"d"]),
        {"rated": np.array([2, 5, 6]), "genres": np.array([[2, 3, 0], [4, 0, 0], [1, 2, 5]])},
    )
    keys, features, counts = _merge(old, new)
    assert counts == {"added": 1, "changed": 1, "unchanged": 1, "kept": 1}  # d; c's rating; b; a
    assert keys.tolist() == [b"b", b"c", b"d", b"a"]
    assert sorted(features) == ["genres", "rated"]
    np.testing.assert_array_equal(features["rated"], [2, 5, 6, 1])
    np.testing.assert_array_equal(features["genres"], [[2, 3, 0], [4, 0, 0], [1, 2, 5], [1, 0, 0]])


def test_list_features_of_different_widths_are_compared_padded():
    old = (np.array([b"a"]), {"genres": np.array([[1, 2, 3]])})
    new = (np.array([b"a", b"z"]), {"genres": np.array([[1, 2], [4, 0]])})
    keys, features, counts = _merge(old, new)
    assert counts == {"added": 1, "changed": 1, "unchanged": 0, "kept": 0}
    np.testing.assert_array_equal(features["genres"], [[1, 2, 0], [4, 0, 0]])  # a's 3rd genre is gone


def test_warmup_records_are_carried_to_the_new_version_and_refilled_where_a_signature_moved(tmp_path):
    """A refresh exports with today's code: a served record that no longer fits (recommend's k was a
    scalar) is refilled from its inputs that still fit; one of a signature the new model lacks is left out."""
    import tensorflow as tf

    from cmml.serving.warmup import carry_warmup_requests, read_warmup_requests, request_inputs, write_warmup_requests

    def save(path, k_shape, with_default):
        module = tf.Module()
        ids = tf.TensorSpec([None, None], tf.string, name="support_item_id")
        module.recommend = tf.function(
            lambda support_item_id, k: {"n": tf.size(support_item_id) + tf.reduce_sum(k)},
            input_signature=[ids, tf.TensorSpec(k_shape, tf.int32, name="k")],
        )
        signatures = {"recommend": module.recommend.get_concrete_function()}
        if with_default:
            module.default = tf.function(
                lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32, name="x")]
            )
            signatures["serving_default"] = module.default.get_concrete_function()
        tf.saved_model.save(module, str(path), signatures=signatures)
        return path

    served = save(tmp_path / "served", [], True)
    support = np.array([[b"1193", b"661"]], object)
    write_warmup_requests(
        served,
        [
            ("recommend", {"support_item_id": support, "k": np.array(10, np.int32)}),
            ("serving_default", {"x": np.ones(1, "f4")}),
        ],
    )
    new = save(tmp_path / "new", [None], False)
    assert carry_warmup_requests(served, new) == {"kept": 0, "refilled": 1, "left_out": 1}
    [log] = read_warmup_requests(new)
    assert log.predict_log.request.model_spec.signature_name == "recommend"
    inputs = request_inputs(log.predict_log.request)
    np.testing.assert_array_equal(inputs["support_item_id"], support)
    np.testing.assert_array_equal(inputs["k"], [10])  # per task now
    assert carry_warmup_requests(new, save(tmp_path / "again", [None], False)) == {
        "kept": 1,
        "refilled": 0,
        "left_out": 0,
    }
