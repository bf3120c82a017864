"""Raw serving requests: rows of raw values per task -> the padded episode inputs of a signature.

The one layout of ``support_*`` / ``query_*`` inputs (``schemas/episodes.md``) for requests built
from raw data: ``cmml predict --data`` (a user's history and candidates from a dataset,
:mod:`cmml.serving.task_inputs`) and the ServingValidator's canned requests (ExampleGen's raw
tf.Examples). A task is ``{"support": rows, "query": rows}``; a row maps a field (``user_id``,
``genres``, ``label`` ...) to its raw value: a scalar, a list (multi-valued features) or None
(missing). Input ``<part>_<field>`` of the signature is the field's value in every row of the part:

* rank 2 inputs ``[tasks, rows]`` take one value per row; rank 3 inputs ``[tasks, rows, width]``
  take lists, padded at the end to the longest list (a scalar is a list of one);
* ``<part>_mask`` is 1 for a real row and 0 for a padding row;
* missing values and padding are ``b""`` (strings) or 0 (numbers), as in TaskGen's episodes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from tensorflow.core.framework import types_pb2

from cmml.serving.signatures import TensorSpecInfo
from cmml.serving.tensors import numpy_dtype

SUPPORT, QUERY = "support", "query"
MASK = "mask"

Row = Mapping[str, Any]
Task = Mapping[str, Sequence[Row]]


def _encode(value: Any, dtype: int, input_name: str) -> Any:
    if value is None:
        return b"" if dtype == types_pb2.DT_STRING else 0
    if dtype == types_pb2.DT_STRING:
        return value if isinstance(value, bytes) else str(value).encode("utf-8")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    raise ValueError(
        f"input '{input_name}' is {types_pb2.DataType.Name(dtype)} but the data holds {type(value).__name__} values "
        f"({value!r}): this model takes transformed ids, not raw features. Serve the model exported with its "
        "tf.Transform graph, or send a JSON request with the ids (--input)"
    )


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [] if value is None else [value]


def _column(values: Sequence[Sequence[Any]], size: int, spec: TensorSpecInfo) -> np.ndarray:
    """Per-task value lists -> ``[tasks, size]`` (rank 2) or ``[tasks, size, width]`` (rank 3)."""
    if spec.shape is None:
        raise ValueError(f"input '{spec.name}' has an unknown rank")
    rank = len(spec.shape)
    dtype = numpy_dtype(spec.dtype)
    pad = _encode(None, spec.dtype, spec.name)
    if rank == 2:
        if any(isinstance(v, (list, tuple)) for task in values for v in task):
            raise ValueError(f"input '{spec.name}' takes one value per row but the field is a list")
        out = np.empty((len(values), size), dtype=dtype)
        out[...] = pad
        for t, task in enumerate(values):
            out[t, : len(task)] = [_encode(v, spec.dtype, spec.name) for v in task]
        return out
    if rank == 3:
        lists = [[_as_list(v) for v in task] for task in values]
        width = max([1] + [len(v) for task in lists for v in task])
        out = np.empty((len(values), size, width), dtype=dtype)
        out[...] = pad
        for t, task in enumerate(lists):
            for r, row in enumerate(task):
                out[t, r, : len(row)] = [_encode(v, spec.dtype, spec.name) for v in row]
        return out
    raise ValueError(f"input '{spec.name}' has rank {rank}; episode inputs have rank 2 or 3")


def task_values(values: Sequence[Any], spec: TensorSpecInfo) -> np.ndarray:
    """One value per task (``[tasks]``, or ``[tasks, width]`` for a list input): a per-task input
    such as an items-by-id signature's ``user_<field>``."""
    if spec.shape is None or len(spec.shape) not in (1, 2):
        raise ValueError(f"input '{spec.name}' takes one value per task: its rank must be 1 or 2, not {spec.shape}")
    rows = TensorSpecInfo(spec.name, spec.dtype, (spec.shape[0], None, *spec.shape[1:]))
    return _column([[v] for v in values], 1, rows)[:, 0]


def episode_inputs(
    tasks: Sequence[Task], specs: Mapping[str, TensorSpecInfo], sizes: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """The inputs ``specs`` (name -> spec, e.g. ``SignatureInfo.inputs``) laid out from the tasks' rows.

    ``sizes`` fixes the number of rows of a part (tasks with fewer rows are padded); by default a
    part has the most rows of any task, at least one (a task without rows is one padding row, mask
    0, so that shapes stay valid). Every input must be a ``support_*`` or ``query_*`` input.
    """
    sizes = dict(sizes or {})
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        part, _, field = name.partition("_")
        if part not in (SUPPORT, QUERY) or not field:
            raise ValueError(f"input '{name}' is not a support_* or query_* input: it cannot be built from rows")
        rows = [list(task.get(part, ())) for task in tasks]
        size = sizes.get(part) or max([1] + [len(r) for r in rows])
        if any(len(r) > size for r in rows):
            raise ValueError(f"a task has {max(len(r) for r in rows)} {part} rows, more than the {size} of the request")
        if field == MASK:
            mask = np.zeros((len(tasks), size), np.float32)
            for t, r in enumerate(rows):
                mask[t, : len(r)] = 1.0
            out[name] = mask
        else:
            out[name] = _column([[row.get(field) for row in r] for r in rows], size, spec)
    return out
