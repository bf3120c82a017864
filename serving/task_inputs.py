"""Serving inputs for one user built from a dataset: the user's history as the support set and the
candidate items as the query set, laid out by :func:`cmml.serving.requests.episode_inputs`.

Values are the dataset's RAW fields (user id, item id, gender, genres ...), which is what a model
exported with its tf.Transform graph takes. A model that takes transformed integer ids cannot be
fed raw string ids: that case is refused with an explanation instead of sending wrong indices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow.compute as pc

from cmml.data import records as R
from cmml.data.records import ITEM_FEATURES, USER_FEATURES
from cmml.serving.requests import MASK, QUERY, SUPPORT, episode_inputs, task_values
from cmml.serving.signatures import SignatureInfo


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


def build_user_inputs(
    dataset, signature: SignatureInfo, user_id: str, candidates: Sequence[str], max_support: int = 64
) -> tuple[dict[str, np.ndarray], UserTask]:
    """Inputs of ``signature`` (its ``support_*`` and ``query_*`` inputs, and the items-by-id
    signatures' ``user_id`` / ``user_<field>``) for one user and the candidate items, from a
    :class:`cmml.data.Dataset`. Any other input (``context``, ``state``)
    cannot come from a dataset and raises ValueError."""
    if not candidates and any(k.startswith(QUERY + "_") for k in signature.inputs):
        raise ValueError("no candidate items given")
    # the items-by-id signatures' per-task user inputs: user_id, user_<field>
    task_user = {n: n[len("user_") :] for n in signature.inputs if n == R.USER_ID or n.startswith("user_")}
    for name in signature.inputs:
        part, _, field = name.partition("_")
        if name in task_user:
            if name != R.USER_ID and task_user[name] not in USER_FEATURES:
                raise ValueError(f"input '{name}': '{task_user[name]}' is not a user field {USER_FEATURES}")
            continue
        if part not in (SUPPORT, QUERY) or not field:
            raise ValueError(
                f"input '{name}' of signature '{signature.name}' cannot be built from a dataset "
                "(use the two-stage API or --input)"
            )
        if field not in (R.LABEL, MASK, R.USER_ID, R.ITEM_ID, *USER_FEATURES, *ITEM_FEATURES):
            raise ValueError(
                f"input '{name}': '{field}' is not a user field {USER_FEATURES} or an item field {ITEM_FEATURES}"
            )
    user_rows, item_rows = _value_rows(dataset)
    items, labels = user_history(dataset, user_id, exclude=candidates, max_support=max_support)
    task = UserTask(str(user_id), items, labels, [str(c) for c in candidates])
    user_row = user_rows.get(user_id, {})
    user_values = {f: user_row.get(f) for f in USER_FEATURES}

    def row(item: str) -> dict[str, Any]:
        item_row = item_rows.get(item, {})
        return {**{f: item_row.get(f) for f in ITEM_FEATURES}, **user_values, R.USER_ID: user_id, R.ITEM_ID: item}

    support = [{**row(i), R.LABEL: label} for i, label in zip(items, labels)]
    query = [row(i) for i in task.candidates]
    rows = {n: spec for n, spec in signature.inputs.items() if n not in task_user}
    inputs = episode_inputs([{SUPPORT: support, QUERY: query}], rows)
    for name, field in task_user.items():  # one task: the user's id (a known user) and attributes
        inputs[name] = task_values([user_id if name == R.USER_ID else user_values.get(field)], signature.inputs[name])
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
