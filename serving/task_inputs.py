"""Serving inputs for one user built from a dataset: the user's history as the support set and the
candidate items as the query set, laid out as the episode tensors of ``schemas/episodes.md``.

Values are the dataset's RAW fields (user id, item id, gender, genres ...), which is what a model
exported with its tf.Transform graph takes. A model that takes transformed integer ids cannot be
fed raw string ids: that case is refused with an explanation instead of sending wrong indices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow.compute as pc
from tensorflow.core.framework import types_pb2

from cmml.data.records import ITEM_FEATURES, USER_FEATURES
from cmml.serving.protocol import numpy_dtype
from cmml.serving.signatures import SignatureInfo

SUPPORT, QUERY = "support", "query"
LABEL, MASK = "label", "mask"


@dataclasses.dataclass
class UserTask:
    """What the inputs were built from (for display next to the scores)."""

    user_id: str
    support_items: list[str]
    support_labels: list[float]
    candidates: list[str]


def _value_rows(dataset) -> tuple[dict[str, dict], dict[str, dict]]:
    users, _ = dataset.read_users()
    items, _ = dataset.read_items()
    return {r["user_id"]: r for r in users.to_pylist()}, {r["item_id"]: r for r in items.to_pylist()}


def user_history(
    dataset, user_id: str, exclude: Sequence[str] = (), max_support: int = 64
) -> tuple[list[str], list[float]]:
    """The user's most recent ``max_support`` interactions (items, labels) in time order, without
    the items in ``exclude`` (the candidates: their labels must not leak into the context)."""
    table = dataset.read_interactions().table
    rows = table.filter(pc.equal(table["user_id"], user_id))
    if exclude:
        rows = rows.filter(pc.invert(pc.is_in(rows["item_id"], value_set=_string_array(exclude))))
    items = rows["item_id"].to_pylist()
    labels = rows["label"].to_pylist()
    stamps = rows["timestamp"].to_pylist()
    # oldest first; rows without a timestamp count as the oldest, so the most recent known ones are kept
    order = (
        sorted(range(len(items)), key=lambda k: (stamps[k] is not None, stamps[k] or 0, k))[-max_support:]
        if max_support > 0
        else []
    )
    return [items[k] for k in order], [float(labels[k]) for k in order]


def _string_array(values: Sequence[str]):
    import pyarrow as pa

    return pa.array([str(v) for v in values], type=pa.string())


def _encode(value: Any, dtype: int, input_name: str) -> Any:
    if value is None:
        return b"" if dtype == types_pb2.DT_STRING else 0
    if dtype == types_pb2.DT_STRING:
        return str(value).encode("utf-8")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    raise ValueError(
        f"input '{input_name}' is {types_pb2.DataType.Name(dtype)} but the dataset holds {type(value).__name__} values "
        f"({value!r}): this model takes transformed ids, not raw features. Serve the model exported with its "
        "tf.Transform graph, or send a JSON request with the ids (--input)"
    )


def _column(values: list[Any], dtype: int, rank: int, input_name: str) -> np.ndarray:
    """One input ``[1, R]`` (rank 2) or ``[1, R, L]`` (rank 3, lists padded at the end)."""
    np_dtype = numpy_dtype(dtype)
    pad = b"" if dtype == types_pb2.DT_STRING else 0
    if rank == 2:
        if any(isinstance(v, (list, tuple)) for v in values):
            raise ValueError(f"input '{input_name}' takes one value per row but the dataset field is a list")
        out = np.empty((1, len(values)), dtype=np_dtype)
        out[0, :] = [_encode(v, dtype, input_name) for v in values]
        return out
    if rank == 3:
        lists = [list(v) if isinstance(v, (list, tuple)) else ([] if v is None else [v]) for v in values]
        width = max(1, max((len(v) for v in lists), default=1))
        out = np.empty((1, len(values), width), dtype=np_dtype)
        out[...] = pad
        for r, vals in enumerate(lists):
            out[0, r, : len(vals)] = [_encode(v, dtype, input_name) for v in vals]
        return out
    raise ValueError(f"input '{input_name}' has rank {rank}; episode inputs have rank 2 or 3")


def build_user_inputs(
    dataset, signature: SignatureInfo, user_id: str, candidates: Sequence[str], max_support: int = 64
) -> tuple[dict[str, np.ndarray], UserTask]:
    """Inputs of ``signature`` (its ``support_*`` and ``query_*`` inputs) for one user and the
    candidate items, from a :class:`cmml.data.Dataset`. Any other input (``context``, ``state``)
    cannot come from a dataset and raises ValueError."""
    if not candidates and any(k.startswith(QUERY + "_") for k in signature.inputs):
        raise ValueError("no candidate items given")
    user_rows, item_rows = _value_rows(dataset)
    items, labels = user_history(dataset, user_id, exclude=candidates, max_support=max_support)
    task = UserTask(str(user_id), items, labels, [str(c) for c in candidates])
    user_row = user_rows.get(user_id, {})
    inputs: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        part, _, field = name.partition("_")
        if part not in (SUPPORT, QUERY) or not field:
            raise ValueError(
                f"input '{name}' of signature '{signature.name}' cannot be built from a dataset (use the two-stage API or --input)"
            )
        row_items = items if part == SUPPORT else task.candidates
        n = len(row_items)
        padded = n == 0  # a user without history: one padding row (mask 0) keeps shapes valid
        if field == MASK:
            inputs[name] = np.full((1, max(n, 1)), 0.0 if padded else 1.0, dtype=np.float32)
            continue
        if field == LABEL:
            inputs[name] = np.asarray([labels or [0.0]], dtype=np.float32)
            continue
        if field == "user_id":
            values: list[Any] = [user_id] * n
        elif field == "item_id":
            values = list(row_items)
        elif field in USER_FEATURES:
            values = [user_row.get(field)] * n
        elif field in ITEM_FEATURES:
            values = [item_rows.get(i, {}).get(field) for i in row_items]
        else:
            raise ValueError(
                f"input '{name}': '{field}' is not a user field {USER_FEATURES} or an item field {ITEM_FEATURES}"
            )
        if padded:
            values = [None]
        if spec.shape is None:
            raise ValueError(f"input '{name}' has an unknown rank")
        inputs[name] = _column(values, spec.dtype, len(spec.shape), name)
    return inputs, task


def item_labels(inputs: Mapping[str, np.ndarray], task: UserTask | None = None) -> list[list[Any]] | None:
    """Per-task candidate labels for display: the task's candidate ids, else ``query_item_id``."""
    if task is not None:
        return [task.candidates]
    ids = inputs.get("query_item_id")
    if ids is None:
        return None
    return [
        [v.decode("utf-8", "replace") if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in row]
        for row in np.asarray(ids)
    ]
