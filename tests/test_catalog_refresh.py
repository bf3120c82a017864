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
