"""Wire formats of TF Serving's API: TensorProto and REST JSON <-> numpy, status codes, errors.

Shared by the clients and the test double, so both sides encode tensors the same way. Decoding is
defensive: the element count declared by a TensorProto's shape is checked against a limit before
anything is allocated, and every malformed input raises :class:`ServingError` with
``INVALID_ARGUMENT`` and a message naming the tensor.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any, Mapping

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

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

# gRPC status -> HTTP status of the REST API (the canonical google.rpc mapping).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}
_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CODE_OF_INT = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A failed call, with the gRPC status code it maps to (REST: :data:`HTTP_STATUS`)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def code_from_int(value: int) -> grpc.StatusCode:
    """TensorFlow's and gRPC's canonical codes share numbers (tf.errors.OpError.error_code)."""
    return _CODE_OF_INT.get(int(value), grpc.StatusCode.UNKNOWN)


def code_from_http(status: int) -> grpc.StatusCode:
    return _CODE_OF_HTTP.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size caps of the test double. A request over a cap is refused before anything is allocated.

    ``max_tensor_elements`` bounds one input; ``max_request_elements`` all inputs of a request;
    ``max_request_bytes`` the serialized gRPC message and the REST body.
    """

    max_request_bytes: int = 64 << 20
    max_tensor_elements: int = 1 << 22
    max_request_elements: int = 1 << 23


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


# --- TensorProto -------------------------------------------------------------------------------------------
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


def ndarray_to_tensor_proto(value: Any) -> tensor_pb2.TensorProto:
    """A numpy array (or nested list) as a TensorProto: numbers in ``tensor_content``, strings in ``string_val``."""
    array = np.asarray(value)
    enum = dtype_enum(array)
    proto = tensor_pb2.TensorProto(dtype=enum)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape)
    if enum == types_pb2.DT_STRING:
        proto.string_val.extend(_as_bytes_array(array).reshape(-1).tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


def proto_shape(proto: tensor_pb2.TensorProto, name: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    """The shape and element count a TensorProto declares, checked against ``max_elements``."""
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"tensor '{name}' has an unknown rank")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in dims):
        raise invalid(f"tensor '{name}' has a negative dimension in shape {list(dims)}")
    if len(dims) > 32:
        raise invalid(f"tensor '{name}' has rank {len(dims)}; at most 32 is supported")
    n = math.prod(dims)  # exact (Python ints): no overflow
    if n > max_elements:
        raise invalid(
            f"tensor '{name}' declares {n} elements (shape {list(dims)}), more than the limit of {max_elements}"
        )
    return dims, n


def tensor_proto_to_ndarray(
    proto: tensor_pb2.TensorProto, name: str = "tensor", max_elements: int = Limits.max_tensor_elements
) -> np.ndarray:
    """Decodes a TensorProto like TensorFlow's ``Tensor::FromProto``, but refuses ambiguous encodings.

    Accepted: ``tensor_content`` of exactly n·itemsize bytes (numbers), or the dtype's typed field
    with n values, 1..n-1 values (padded with the last one, as TensorFlow does) or none (zeros).
    Refused: values in a field of another dtype, more values than elements, both encodings at once.
    """
    np_dtype, field = _DTYPES.get(proto.dtype, (None, None))
    if np_dtype is None:
        raise invalid(f"tensor '{name}' has dtype {dtype_name(proto.dtype)}, which is not supported")
    dims, n = proto_shape(proto, name, max_elements)
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


# --- REST JSON ----------------------------------------------------------------------------------------------
def _decode_string_leaf(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"input '{name}': invalid base64 in a {{\"b64\": ...}} value") from None
    raise invalid(
        f"input '{name}' is DT_STRING: expected strings or {{\"b64\": ...}} objects, found {type(value).__name__}"
    )


def _string_array(value: Any, name: str, max_elements: int) -> np.ndarray:
    """Nested lists of strings -> object array of bytes; the nesting must be rectangular."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if len(shape) > 32:
            raise invalid(f"input '{name}' is nested more than 32 levels deep")
        if not probe:
            break
        probe = probe[0]
    if math.prod(shape) > max_elements:
        raise invalid(f"input '{name}' has more than {max_elements} elements")
    leaves: list[bytes] = []

    def walk(node: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(node, list):
                raise invalid(f"input '{name}' is not rectangular: lists nested deeper than shape {shape}")
            leaves.append(_decode_string_leaf(node, name))
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            raise invalid(f"input '{name}' is not rectangular: expected a list of {shape[depth]} at depth {depth}")
        for child in node:
            walk(child, depth + 1)

    walk(value, 0)
    out = np.empty(len(leaves), dtype=object)
    out[:] = leaves
    return out.reshape(shape)


def json_to_ndarray(value: Any, dtype: int, name: str, max_elements: int = Limits.max_tensor_elements) -> np.ndarray:
    """A JSON value (scalar or rectangular nested lists) as an array of the signature's dtype."""
    np_dtype = numpy_dtype(dtype)
    if dtype == types_pb2.DT_STRING:
        return _string_array(value, name, max_elements)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, mixed nesting
        raise invalid(f"input '{name}' is not a rectangular list of numbers: {exc}") from None
    if array.size > max_elements:
        raise invalid(f"input '{name}' has {array.size} elements, more than the limit of {max_elements}")
    if array.size == 0:
        return array.astype(np_dtype)
    kind = array.dtype.kind
    if np_dtype.kind == "b":
        ok = kind == "b"
    elif np_dtype.kind in "iu":
        ok = kind in "iub"
        if ok and kind != "b":
            info = np.iinfo(np_dtype)
            ok = info.min <= array.min() and array.max() <= info.max
            if not ok:
                raise invalid(f"input '{name}': values out of range for {dtype_name(dtype)}")
    else:
        ok = kind in "iuf"
    if not ok:
        found = {
            "U": "strings",
            "O": "null, objects or numbers too large",
            "f": "decimal numbers",
            "b": "booleans",
        }.get(kind, str(array.dtype))
        raise invalid(f"input '{name}' is {dtype_name(dtype)} but the JSON holds {found}")
    return array.astype(np_dtype)


def ndarray_to_json(array: np.ndarray, name: str) -> Any:
    """An output tensor as JSON: numbers as numbers (NaN/Infinity tokens allowed), strings as text,
    ``{"b64": ...}`` for names ending in ``_bytes`` or for bytes that are not UTF-8."""
    if array.dtype.kind not in "OSU":
        return array.tolist()
    binary = name.endswith("_bytes")

    def leaf(v: Any) -> Any:
        raw = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        if not binary:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(raw).decode("ascii")}

    return np.frompyfunc(leaf, 1, 1)(array).tolist() if array.ndim else leaf(array.item())


def inputs_to_json(inputs: Mapping[str, np.ndarray], row_format: bool = False) -> dict:
    """Request-body fragment: ``{"inputs": {...}}`` (columnar) or ``{"instances": [...]}`` (row)."""
    encoded = {k: _input_json(np.asarray(v), k) for k, v in inputs.items()}
    if not row_format:
        return {"inputs": encoded}
    sizes = {np.asarray(v).shape[0] if np.ndim(v) else None for v in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "the row ('instances') format needs every input to have the same 0-th dimension; use the columnar format"
        )
    (batch,) = sizes
    return {"instances": [{k: v[i] for k, v in encoded.items()} for i in range(batch)]}


def _input_json(array: np.ndarray, name: str) -> Any:
    if array.dtype.kind in "OSU":
        # inputs always go as text when they are UTF-8 (the server cannot tell "_bytes" intent otherwise)
        return ndarray_to_json(array, name)
    return array.tolist()


def parse_predict_body(
    body: Any, input_dtypes: Mapping[str, int], max_elements: int = Limits.max_tensor_elements
) -> tuple[dict[str, np.ndarray], bool]:
    """A decoded ``:predict`` body -> (inputs, row_format). ``input_dtypes`` maps the signature's
    input names to dtype enums. Follows TF Serving's rules for ``instances`` and ``inputs``."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise invalid("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    names = list(input_dtypes)
    if has_cols:
        value = body["inputs"]
        if isinstance(value, dict) and not (len(names) == 1 and set(value) == {"b64"}):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise invalid(
                    f"the request has input(s) the signature does not take; unexpected: {unknown}; the signature takes {sorted(names)}"
                )
            return {k: json_to_ndarray(v, input_dtypes[k], k, max_elements) for k, v in value.items()}, False
        if len(names) != 1:
            raise invalid(
                f"'inputs' must be an object keyed by input name: the signature has {len(names)} inputs {sorted(names)}"
            )
        return {names[0]: json_to_ndarray(value, input_dtypes[names[0]], names[0], max_elements)}, False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise invalid("'instances' must be a non-empty list")
    if all(isinstance(r, dict) and not (set(r) == {"b64"}) for r in rows):
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            raise invalid("every instance must have the same input names")
        unknown = sorted(keys - set(names))
        if unknown:
            raise invalid(
                f"the request has input(s) the signature does not take; unexpected: {unknown}; the signature takes {sorted(names)}"
            )
        return {k: json_to_ndarray([r[k] for r in rows], input_dtypes[k], k, max_elements) for k in keys}, True
    if len(names) != 1:
        raise invalid(
            f"each instance must be an object keyed by input name: the signature has {len(names)} inputs {sorted(names)}"
        )
    return {names[0]: json_to_ndarray(rows, input_dtypes[names[0]], names[0], max_elements)}, True


def format_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    """``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones."""
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": ndarray_to_json(value, name)}
        return {"outputs": {k: ndarray_to_json(v, k) for k, v in outputs.items()}}
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        if value.ndim == 0:
            raise invalid(f"output '{name}' is a scalar: it has no batch dimension for the row format; use 'inputs'")
        return {"predictions": ndarray_to_json(value, name)}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid(f"outputs have different batch sizes {sizes}: the row format needs one; use 'inputs'")
    batch = next(iter(sizes.values()))
    encoded = {k: ndarray_to_json(v, k) for k, v in outputs.items()}
    return {"predictions": [{k: v[i] for k, v in encoded.items()} for i in range(batch)]}


def parse_predict_response(body: Any, output_dtypes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """A ``:predict`` response body -> named output arrays (cast to the signature's dtypes when known).

    A single unnamed output (TF Serving omits the name when there is one) is returned under the only
    name of ``output_dtypes``, or ``"output"`` when the signature is not known.
    """
    dtypes = dict(output_dtypes or {})
    if not isinstance(body, dict) or not ({"predictions", "outputs"} & set(body)):
        raise ServingError(
            grpc.StatusCode.INTERNAL, f"response has neither 'predictions' nor 'outputs': {str(body)[:200]}"
        )
    single = next(iter(dtypes)) if len(dtypes) == 1 else "output"
    if "outputs" in body:
        value = body["outputs"]
        named = value if isinstance(value, dict) and len(dtypes) != 1 else {single: value}
    else:
        rows = body["predictions"]
        if rows and all(isinstance(r, dict) for r in rows) and len(dtypes) != 1:
            named = {k: [r[k] for r in rows] for k in rows[0]}
        else:
            named = {single: rows}
    out = {}
    for k, v in named.items():
        if k in dtypes:
            out[k] = json_to_ndarray(v, dtypes[k], k, max_elements=1 << 62)
        else:
            out[k] = np.asarray(v)
    return out
