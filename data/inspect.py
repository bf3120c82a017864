"""A readable report of what a dataset holds and what its reader had to reject."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from cmml.data import records as R
from cmml.data.dataset import Dataset


def _ids(table: pa.Table, column: str) -> pa.Array:
    return pc.unique(table[column]) if table.num_rows else pa.array([], pa.string())


def inspect_dataset(ds: Dataset, max_rejects: int = 10) -> str:
    """Reads everything (collecting bad rows instead of stopping) and describes it."""
    result = ds.read_interactions(on_error="collect")
    users, user_rejects = ds.read_users(on_error="collect")
    items, item_rejects = ds.read_items(on_error="collect")
    t = result.table
    lines = [f"dataset: {ds.name} at {ds.root}", f"interactions: {result.stats.summary()}"]
    if t.num_rows:
        rated_users, rated_items = _ids(t, R.USER_ID), _ids(t, R.ITEM_ID)
        labels = t[R.LABEL]
        lines.append(
            f"  {len(rated_users):,} users, {len(rated_items):,} items; label min {pc.min(labels).as_py():g}, "
            f"mean {pc.mean(labels).as_py():.3f}, max {pc.max(labels).as_py():g}"
        )
        if t[R.SCENARIO].null_count < t.num_rows:
            lines.append(f"  {len(pc.unique(t[R.SCENARIO].drop_null())):,} scenarios")
        for name, table, ids, key in (
            ("users", users, rated_users, R.USER_ID),
            ("items", items, rated_items, R.ITEM_ID),
        ):
            if table.num_rows == 0:
                lines.append(f"{name}: no side-feature file")
                continue
            known = table[key]
            no_features = int(pc.sum(pc.invert(pc.is_in(ids, value_set=known))).as_py() or 0)
            unused = int(pc.sum(pc.invert(pc.is_in(known, value_set=ids))).as_py() or 0)
            lines.append(
                f"{name}: {table.num_rows:,} rows; {no_features:,} {name} in the log have no features, "
                f"{unused:,} have features but no interactions"
            )
    rejects = result.rejects + user_rejects + item_rejects
    if rejects:
        lines.append(f"rejected rows: {len(rejects):,} (first {min(max_rejects, len(rejects))}):")
        lines += [f"  {r.message()}" for r in rejects[:max_rejects]]
    return "\n".join(lines)
