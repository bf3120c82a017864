"""The one raw-request layout: rows of raw values per task -> the padded support_* / query_* inputs."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from cmml.serving.requests import episode_inputs
from cmml.serving.signatures import TensorSpecInfo

F, I64, S = types_pb2.DT_FLOAT, types_pb2.DT_INT64, types_pb2.DT_STRING


def _specs(**inputs) -> dict[str, TensorSpecInfo]:
    return {name: TensorSpecInfo(name, dtype, (None,) * rank) for name, (dtype, rank) in inputs.items()}


SPECS = _specs(
    support_item_id=(S, 2),
    support_age=(I64, 2),
    support_genres=(S, 3),
    support_label=(F, 2),
    support_mask=(F, 2),
    query_item_id=(S, 2),
    query_mask=(F, 2),
)


def test_rows_are_laid_out_padded_and_masked():
    tasks = [
        {
            "support": [
                {"item_id": "a", "age": 25, "genres": ["x", b"y"], "label": 4.0},
                {"item_id": b"b", "age": None, "genres": "z", "label": 2},
            ],
            "query": [{"item_id": "c"}, {"item_id": "d"}, {"item_id": "e"}],
        },
        {"support": [{"item_id": "f", "age": np.int64(31), "genres": [], "label": 5.0}], "query": [{"item_id": "g"}]},
    ]
    out = episode_inputs(tasks, SPECS)
    assert set(out) == set(SPECS)
    assert out["support_item_id"].dtype == object and out["support_item_id"].tolist() == [[b"a", b"b"], [b"f", b""]]
    assert out["support_age"].dtype == np.int64 and out["support_age"].tolist() == [[25, 0], [31, 0]]
    # rank 3: lists padded to the longest list of the part; a scalar is a list of one
    assert out["support_genres"].tolist() == [[[b"x", b"y"], [b"z", b""]], [[b"", b""], [b"", b""]]]
    assert out["support_label"].dtype == np.float32 and out["support_label"].tolist() == [[4.0, 2.0], [5.0, 0.0]]
    np.testing.assert_array_equal(out["support_mask"], [[1, 1], [1, 0]])
    assert out["query_item_id"].tolist() == [[b"c", b"d", b"e"], [b"g", b"", b""]]
    np.testing.assert_array_equal(out["query_mask"], [[1, 1, 1], [1, 0, 0]])


def test_fixed_sizes_and_a_task_without_rows():
    out = episode_inputs([{"support": [], "query": [{"item_id": "c"}]}], SPECS)
    # no support rows: one padding row, mask 0, so that shapes stay valid
    assert out["support_item_id"].tolist() == [[b""]] and out["support_genres"].shape == (1, 1, 1)
    np.testing.assert_array_equal(out["support_mask"], [[0.0]])
    assert out["support_label"].tolist() == [[0.0]]
    sized = episode_inputs([{"support": [{"item_id": "a"}], "query": [{"item_id": "c"}]}], SPECS, {"support": 4})
    assert sized["support_item_id"].shape == (1, 4) and sized["query_item_id"].shape == (1, 1)
    np.testing.assert_array_equal(sized["support_mask"], [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="more than the 1 of the request"):
        episode_inputs(
            [{"support": [{"item_id": "a"}, {"item_id": "b"}]}], _specs(support_item_id=(S, 2)), {"support": 1}
        )


@pytest.mark.parametrize(
    "specs, rows, message",
    [
        (_specs(support_item_id=(I64, 2)), [{"item_id": "i7"}], "takes transformed ids"),
        (_specs(support_genres=(S, 2)), [{"genres": ["x"]}], "takes one value per row"),
        (_specs(support_item_id=(S, 4)), [{"item_id": "a"}], "rank 4"),
        ({"support_x": TensorSpecInfo("support_x", S, None)}, [{"x": "a"}], "unknown rank"),
        (_specs(context=(F, 2)), [], "not a support_\\* or query_\\* input"),
    ],
)
def test_what_cannot_be_laid_out_is_refused(specs, rows, message):
    with pytest.raises(ValueError, match=message):
        episode_inputs([{"support": rows}], specs)
