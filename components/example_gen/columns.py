"""Arrow columns -> the list-typed columns tfx_bsl's tf.Example encoder takes (one list per row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def combined(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def prefixed(values: pa.Array | pa.ChunkedArray, name: str | None) -> pa.Array:
    """``<name>:<value>`` (a domain's ids); the values unchanged without a name."""
    values = combined(values)
    if not name:
        return values
    return pc.binary_join_element_wise(pa.scalar(f"{name}:"), values, "")


def list_of_one(values: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Scalar column -> list column with one value per row; a null becomes a null list (missing)."""
    values = combined(values)
    if pa.types.is_string(values.type):
        values = values.cast(pa.binary())
    elif pa.types.is_integer(values.type):
        values = values.cast(pa.int64())
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(valid, out=offsets[1:])
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), values.drop_null(), mask=mask)


def list_column(values: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """list<string> column -> list<binary>; empty lists become null (the feature is missing)."""
    values = combined(values)
    flat = pc.list_flatten(values).cast(pa.binary())
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    empty = lengths == 0
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(empty) if empty.any() else None)


def example_batch(columns: dict[str, pa.Array]) -> pa.RecordBatch:
    """Columns -> the encoder's record batch; a column null in every row is left out (missing feature)."""
    arrays, names = [], []
    for name, values in columns.items():
        values = combined(values)
        if values.null_count == len(values) and len(values):
            continue
        if pa.types.is_list(values.type):
            values = list_column(values)
            if values.null_count == len(values) and len(values):
                continue
        else:
            values = list_of_one(values)
        arrays.append(values)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names)
