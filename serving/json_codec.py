"""The REST API's JSON <-> numpy: ``:predict`` request bodies (row and columnar formats) and responses.

Follows TF Serving's rules: strings as text or ``{"b64": ...}`` objects, ``instances`` (row format)
or ``inputs`` (columnar format) in requests, ``predictions`` or ``outputs`` in responses. Every
malformed body raises :class:`~cmml.serving.errors.ServingError` with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Mapping

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from cmml.serving.errors import Limits, ServingError, invalid
from cmml.serving.tensors import dtype_name, numpy_dtype


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


_TF_TYPE = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_INT32: "int32",
}


def _first_bool(value: Any) -> bool | None:
    """The first boolean a JSON value holds, or None (``True == 1`` in Python, so test the type)."""
    if type(value) is bool:
        return value
    if isinstance(value, list):
        for x in value:
            found = _first_bool(x) if isinstance(x, list) or type(x) is bool else None
            if found is not None:
                return found
    return None


def json_to_ndarray(value: Any, dtype: int, name: str, max_elements: int = Limits.max_tensor_elements) -> np.ndarray:
    """A JSON value (scalar or rectangular nested lists) as an array of the signature's dtype."""
    np_dtype = numpy_dtype(dtype)
    if dtype == types_pb2.DT_STRING:
        return _string_array(value, name, max_elements)
    flag = _first_bool(value) if np_dtype.kind != "b" else None
    if flag is not None:  # numpy would read true as 1; TF Serving refuses it (json_tensor.cc)
        tf_type = _TF_TYPE.get(dtype, dtype_name(dtype))
        raise invalid(
            f"input '{name}': JSON Value: {str(flag).lower()} Type: {flag} is not of expected type: {tf_type}"
        )
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
            # TF Serving reads the signature's inputs from the object and never looks at other keys
            missing = [k for k in names if k not in value]
            if missing:
                raise invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
            return {k: json_to_ndarray(value[k], input_dtypes[k], k, max_elements) for k in names}, False
        if len(names) != 1:
            raise invalid(
                f"'inputs' must be an object keyed by input name: the signature has {len(names)} inputs {sorted(names)}"
            )
        return {names[0]: json_to_ndarray(value, input_dtypes[names[0]], names[0], max_elements)}, False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise invalid("'instances' must be a non-empty list")
    if all(isinstance(r, dict) and set(r) != {"b64"} for r in rows):
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            raise invalid("every instance must have the same input names")
        unknown = sorted(keys - set(names))
        if unknown:
            raise invalid(
                f"the request has input(s) the signature does not take; unexpected: {unknown}; "
                f"the signature takes {sorted(names)}"
            )
        return {k: json_to_ndarray([r[k] for r in rows], input_dtypes[k], k, max_elements) for k in keys}, True
    if len(names) != 1:
        raise invalid(
            f"each instance must be an object keyed by input name: the signature has {len(names)} inputs "
            f"{sorted(names)}"
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
