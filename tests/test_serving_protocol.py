"""Wire formats of the serving API: TensorProto and REST JSON encodings, signature validation."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

import cmml  # noqa: F401
from cmml.serving.errors import Limits, ServingError
from cmml.serving.json_codec import (
    format_predict_response,
    inputs_to_json,
    json_to_ndarray,
    parse_predict_body,
    parse_predict_response,
)
from cmml.serving.results import rank_items
from cmml.serving.signatures import SignatureInfo, TensorSpecInfo, validate_inputs
from cmml.serving.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

F, I64, S = types_pb2.DT_FLOAT, types_pb2.DT_INT64, types_pb2.DT_STRING


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([[1.5, np.nan], [np.inf, -0.0]], dtype=np.float32),
        np.array([True, False]),
        np.array(7, dtype=np.int32),
        np.zeros((2, 0, 3), dtype=np.float64),
        np.array([[b"a", b"\xff\x00"], [b"", "\u00e9".encode()]], dtype=object),
    ],
)
def test_tensor_proto_round_trip(array):
    back = tensor_proto_to_ndarray(ndarray_to_tensor_proto(array))
    assert back.shape == array.shape and back.dtype == array.dtype
    if array.dtype == object:
        assert back.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(back, array)


def test_tensor_proto_decodes_typed_fields_like_tensorflow():
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.array([[1, 2], [3, 4]], dtype=np.int64))  # what TF's own clients send
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), [[1, 2], [3, 4]])
    fill = tensor_pb2.TensorProto(dtype=F, float_val=[2.5])
    fill.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(fill), [2.5, 2.5, 2.5])  # one value fills the shape


def _proto(dtype, dims, **fields):
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


@pytest.mark.parametrize(
    "proto, message",
    [
        # a dense size TF Serving's Tensor::FromProto cannot allocate: "tensor parsing error: <alias>"
        # (TensorFlow's saved_model GetInputValues, called by TF Serving 2.16.1's predict_util.cc)
        (_proto(I64, [10**9, 10**9]), "tensor parsing error: x"),
        (_proto(I64, [-1]), "negative dimension"),
        (_proto(F, [4], tensor_content=b"\x00" * 15), "tensor_content has 15 bytes"),
        (_proto(I64, [2], float_val=[1.0, 2.0]), "carries values in float_val"),
        (_proto(F, [1], float_val=[1.0, 2.0]), "2 values in float_val"),
        (_proto(S, [1], tensor_content=b"ab"), "string_val, not tensor_content"),
        (_proto(types_pb2.DT_COMPLEX64, [1]), "not supported"),
        (tensor_pb2.TensorProto(dtype=F, tensor_shape={"unknown_rank": True}), "unknown rank"),
    ],
)
def test_malformed_tensor_protos_are_invalid_arguments(proto, message):
    with pytest.raises(ServingError) as err:
        tensor_proto_to_ndarray(proto, "x", max_elements=Limits.max_tensor_elements)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.message


def test_json_values_follow_the_signature_dtype():
    np.testing.assert_array_equal(json_to_ndarray([[1, 2]], I64, "a"), np.array([[1, 2]], np.int64))
    assert json_to_ndarray([1, 2], F, "a").dtype == np.float32
    assert np.isnan(json_to_ndarray(json.loads("[NaN]"), F, "a")[0])
    assert json_to_ndarray([["x", {"b64": "/w=="}]], S, "a").tolist() == [[b"x", b"\xff"]]
    assert json_to_ndarray([], I64, "a").shape == (0,)
    for value, dtype, message in [
        ([[1, 2], [3]], I64, "not a rectangular"),
        ([1.5], I64, "decimal numbers"),
        (["1"], I64, "strings"),
        ([2**70], I64, "too large"),
        ([None], F, "null"),
        ([["a"], "b"], S, "not rectangular"),
        ([{"b64": "%%%"}], S, "invalid base64"),
        ([1], S, "expected strings"),
        ([3_000_000_000], types_pb2.DT_INT32, "out of range"),
    ]:
        with pytest.raises(ServingError, match=message):
            json_to_ndarray(value, dtype, "a")


def test_row_and_columnar_bodies_parse_to_the_same_inputs():
    inputs = {"a": np.array([[1, 2], [3, 4]], np.int64), "b": np.array([0.5, 1.5], np.float32)}
    dtypes = {"a": I64, "b": F}
    for row in (False, True):
        body = json.loads(json.dumps(inputs_to_json(inputs, row_format=row)))
        parsed, is_row = parse_predict_body(body, dtypes)
        assert is_row == row
        for k in inputs:
            np.testing.assert_array_equal(parsed[k], inputs[k])
            assert parsed[k].dtype == inputs[k].dtype
    single, _ = parse_predict_body({"instances": [1.0, 2.0]}, {"x": F})
    np.testing.assert_array_equal(single["x"], [1.0, 2.0])
    # columnar inputs: keys the signature does not take are never read (TF Serving's json_tensor.cc)
    extra, _ = parse_predict_body({"inputs": {**inputs_to_json(inputs)["inputs"], "zzz": "?"}}, dtypes)
    assert set(extra) == {"a", "b"}
    for value in ([[1, True], [3, 4]], [[1, 2], [3, False]]):
        with pytest.raises(ServingError, match="is not of expected type: int64"):
            parse_predict_body({"inputs": {"a": value, "b": [0.5, 1.5]}}, dtypes)
    with pytest.raises(ServingError, match="JSON Value: true Type: True is not of expected type: float"):
        parse_predict_body({"inputs": {"a": [[1, 2], [3, 4]], "b": [0.5, True]}}, dtypes)
    for body, message in [
        ({"instances": [], "inputs": {}}, "exactly one of"),
        ({"instances": []}, "non-empty list"),
        ({"inputs": {"a": [1], "zzz": [1]}}, "Missing named input: b in 'inputs' object."),
        ({"instances": [{"a": [1]}, {"b": 1.0}]}, "same input names"),
        ({"instances": [1, 2]}, "keyed by input name"),
        ([1, 2], "JSON object"),
    ]:
        with pytest.raises(ServingError, match=message):
            parse_predict_body(body, dtypes)


def test_response_formats_follow_tf_serving():
    one = {"scores": np.array([[1.0, 2.0]], np.float32)}
    two = {"context": np.zeros((2, 3), np.float32), "state": np.ones((2, 1), np.float32)}
    assert format_predict_response(one, row_format=False) == {"outputs": [[1.0, 2.0]]}
    assert format_predict_response(one, row_format=True) == {"predictions": [[1.0, 2.0]]}
    rows = format_predict_response(two, row_format=True)["predictions"]
    assert rows[1] == {"context": [0.0, 0.0, 0.0], "state": [1.0]}
    back = parse_predict_response(format_predict_response(two, row_format=True), {"context": F, "state": F})
    np.testing.assert_array_equal(back["state"], two["state"])
    back = parse_predict_response(format_predict_response(one, row_format=False), {"scores": F})
    assert back["scores"].dtype == np.float32 and back["scores"].shape == (1, 2)
    with pytest.raises(ServingError, match="different batch sizes"):
        format_predict_response({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, row_format=True)


def test_validation_names_the_offending_input():
    sig = SignatureInfo(
        "s", {"ids": TensorSpecInfo("ids", I64, (None, None)), "ctx": TensorSpecInfo("ctx", F, (None, 4))}, {}
    )
    good = {"ids": np.zeros((2, 3), np.int64), "ctx": np.zeros((2, 4), np.float32)}
    validate_inputs(sig, good)
    cases = [
        (
            {"ids": good["ids"]},
            "input size does not match signature: 1!=2 len({ids}) != len({ctx,ids}). "
            "Sent extra: {}. Missing but required: {ctx}.",
        ),
        ({**good, "extra": good["ids"]}, "Sent extra: {extra}. Missing but required: {}."),
        ({"ids": good["ids"], "extra": good["ids"]}, "Signature input alias: ctx not found in request"),
        ({**good, "ids": good["ids"].astype(np.int32)}, "expects DT_INT64 but DT_INT32"),
        ({**good, "ids": good["ids"][0]}, "expects rank 2"),
        ({**good, "ctx": np.zeros((2, 5), np.float32)}, "dimension 1 to be 4"),
    ]
    for inputs, message in cases:
        with pytest.raises(ServingError) as err:
            validate_inputs(sig, inputs)
        assert message in err.value.message


def test_rank_items_orders_valid_candidates_by_score():
    ranking = rank_items(np.array([0.1, 0.9, 0.5, 0.7]), ["a", "b", "c", "d"], mask=np.array([1, 1, 1, 0]), top_k=2)
    assert [(r.item, round(r.score, 3)) for r in ranking] == [("b", 0.9), ("c", 0.5)]
