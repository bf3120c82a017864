"""TensorProto <-> numpy, and the dtype enums of TF Serving's API.

Shared by the clients and the test double, so both sides encode tensors the same way. Decoding is
defensive: the element count declared by a TensorProto's shape is checked against a limit before
anything is allocated, and every malformed tensor raises
:class:`~cmml.serving.errors.ServingError` with ``INVALID_ARGUMENT`` and a message naming it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from cmml.serving.errors import Limits, invalid

# dtype enum -> (numpy dtype, TensorProto field of typed values). Strings use ``object`` arrays of bytes.
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_VALUE_FIELDS = sorted(
    {field for _, field in _DTYPES.values()} | {"scomplex_val", "dcomplex_val", "resource_handle_val", "variant_val"}
)
_BY_NUMPY = {np.dtype(dt): enum for enum, (dt, _) in _DTYPES.items() if enum != types_pb2.DT_STRING}


def dtype_name(enum: int) -> str:
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"<unknown dtype {enum}>"


def dtype_enum(array: np.ndarray) -> int:
    """The DataType enum of a numpy array (bytes / str / object arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    try:
        return _BY_NUMPY[array.dtype]
    except KeyError:
        raise invalid(f"numpy dtype {array.dtype} has no TF Serving tensor encoding") from None


def numpy_dtype(enum: int) -> np.dtype:
    try:
        return _DTYPES[enum][0]
    except KeyError:
        raise invalid(f"dtype {dtype_name(enum)} is not supported") from None


def _as_bytes_array(array: np.ndarray) -> np.ndarray:
    """An object array of bytes from a bytes / str / object array."""
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for k, v in enumerate(array.reshape(-1)):
        if isinstance(v, (bytes, np.bytes_)):
            flat[k] = bytes(v)
        elif isinstance(v, str):
            flat[k] = v.encode("utf-8")
        else:
            raise invalid(f"string tensor holds a {type(v).__name__} value")
    return out


def ndarray_to_tensor_proto(value: Any, typed_fields: bool = False) -> tensor_pb2.TensorProto:
    """A numpy array (or nested list) as a TensorProto; strings always in ``string_val``.

    Numbers go in ``tensor_content`` (as ``tf.make_tensor_proto`` writes a request), or with
    ``typed_fields`` in the dtype's value field, every element (``float_val``, ``int64_val``, ...;
    ``half_val`` holds float16 bit patterns): what TF Serving's ``Tensor::AsProtoField`` writes in a
    PredictResponse, and what its example clients read (``outputs['scores'].float_val``).
    """
    array = np.asarray(value)
    enum = dtype_enum(array)
    proto = tensor_pb2.TensorProto(dtype=enum)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape)
    if enum == types_pb2.DT_STRING:
        proto.string_val.extend(_as_bytes_array(array).reshape(-1).tolist())
    elif typed_fields:
        flat = array.reshape(-1)
        if enum == types_pb2.DT_HALF:
            flat = flat.view(np.uint16)
        getattr(proto, _DTYPES[enum][1]).extend(flat.tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


def proto_shape(
    proto: tensor_pb2.TensorProto, name: str, max_elements: int, max_bytes: int = Limits.max_tensor_bytes
) -> tuple[tuple[int, ...], int]:
    """The shape and element count a TensorProto declares, checked against ``max_elements`` and, for its dense
    size, ``max_bytes``: past it TF Serving's ``Tensor::FromProto`` fails to allocate the tensor and the request
    gets ``tensor parsing error: <alias>`` (TensorFlow's ``GetInputValues``); the double refuses it the same way
    before allocating anything."""
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"tensor '{name}' has an unknown rank")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in dims):
        raise invalid(f"tensor '{name}' has a negative dimension in shape {list(dims)}")
    if len(dims) > 32:
        raise invalid(f"tensor '{name}' has rank {len(dims)}; at most 32 is supported")
    n = math.prod(dims)  # exact (Python ints): no overflow
    itemsize = _DTYPES[proto.dtype][0].itemsize if proto.dtype in _DTYPES else 1  # strings: an 8-byte reference
    if n > max_elements or n * itemsize > max_bytes:
        raise invalid(f"tensor parsing error: {name}")
    return dims, n


def tensor_proto_to_ndarray(
    proto: tensor_pb2.TensorProto,
    name: str = "tensor",
    max_elements: int = Limits.max_tensor_elements,
    max_bytes: int = Limits.max_tensor_bytes,
) -> np.ndarray:
    """Decodes a TensorProto like TensorFlow's ``Tensor::FromProto``, but refuses ambiguous encodings.

    Accepted: ``tensor_content`` of exactly n·itemsize bytes (numbers), or the dtype's typed field
    with n values, 1..n-1 values (padded with the last one, as TensorFlow does) or none (zeros).
    Refused: values in a field of another dtype, more values than elements, both encodings at once.
    """
    np_dtype, field = _DTYPES.get(proto.dtype, (None, None))
    if np_dtype is None:
        raise invalid(f"tensor '{name}' has dtype {dtype_name(proto.dtype)}, which is not supported")
    dims, n = proto_shape(proto, name, max_elements, max_bytes)
    stray = [f for f in _VALUE_FIELDS if f != field and len(getattr(proto, f))]
    if stray:
        raise invalid(f"tensor '{name}' is {dtype_name(proto.dtype)} but carries values in {', '.join(stray)}")
    values = getattr(proto, field)
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise invalid(f"tensor '{name}': DT_STRING values go in string_val, not tensor_content")
        if len(values):
            raise invalid(f"tensor '{name}' has both tensor_content and {field}")
        expected = n * np_dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise invalid(
                f"tensor '{name}': tensor_content has {len(proto.tensor_content)} bytes, shape {list(dims)} "
                f"of {dtype_name(proto.dtype)} needs {expected}"
            )
        return (
            np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<"))
            .astype(np_dtype, copy=False)
            .reshape(dims)
        )
    m = len(values)
    if m > n:
        raise invalid(f"tensor '{name}' has {m} values in {field} for shape {list(dims)} ({n} elements)")
    if proto.dtype == types_pb2.DT_STRING:
        flat = np.empty(n, dtype=object)
        flat[:m] = list(values)
        flat[m:] = values[-1] if m else b""
        return flat.reshape(dims)
    if proto.dtype == types_pb2.DT_HALF:
        raw = np.asarray(values, dtype=np.uint16).view(np.float16)  # half_val holds the bit patterns
    else:
        raw = np.asarray(values, dtype=np_dtype)
    if m == n:
        return raw.reshape(dims)
    out = np.zeros(n, dtype=np_dtype)
    if m:
        out[:m] = raw
        out[m:] = raw[-1]
    return out.reshape(dims)
