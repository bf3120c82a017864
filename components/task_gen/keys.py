"""Raw string keys of users, items and tasks: binary form, integer reading and canonical order.

The canonical order (integer keys numerically and first, the rest by bytes) is the order of the
permutation split rule and of a task's candidate items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def to_binary(values: Any) -> pa.Array:
    """Any string-like array/iterable -> pyarrow large_binary array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.large_binary())
    return values if pa.types.is_large_binary(values.type) else values.cast(pa.large_binary())


def key_strings(keys: pa.Array) -> list[str]:
    return [k.decode("utf-8", errors="replace") for k in to_binary(keys).to_pylist()]


def integer_values(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(is_integer mask, int64 values with 0 where not an integer) for string keys."""
    s = to_binary(keys).cast(pa.large_string())
    ok = np.asarray(
        pc.fill_null(pc.match_substring_regex(s, r"^[0-9]{1,18}$"), False).to_numpy(zero_copy_only=False), dtype=bool
    )
    values = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values[ok] = pc.cast(s.filter(pa.array(ok)), pa.int64()).to_numpy()
    return ok, values


def canonical_order(keys: pa.Array) -> np.ndarray:
    """Indices sorting keys numerically when integers (these first), the rest by bytes."""
    ok, values = integer_values(keys)
    table = pa.table({"nonint": pa.array(~ok), "value": pa.array(values), "key": to_binary(keys)})
    return pc.sort_indices(
        table, sort_keys=[("nonint", "ascending"), ("value", "ascending"), ("key", "ascending")]
    ).to_numpy()
