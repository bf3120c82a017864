"""The end of a run: row accounting (conservation check), taskgen_stats.json, feature_specs.json, tasks.tsv.

Conservation: ``rows_in = rows_written + rows_filtered (by reason) + rows_quarantined``; the run
fails when it does not hold. The counts are also MLMD custom properties of the artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os

from cmml.components import common
from cmml.components.task_gen.extract import ExtractContext
from cmml.components.task_gen.records import write_index
from cmml.components.task_gen.splits import TaskPlan
from cmml.components.task_gen.tables import FeatureTable
from cmml.schemas import episodes as E

STATS_FILE = "taskgen_stats.json"


class ConservationError(RuntimeError):
    """Rows in != rows written + filtered + quarantined."""


def finalize(
    summary: dict,
    ctx: ExtractContext,
    output_dir: str,
    extract: dict,
    plan: TaskPlan,
    users: FeatureTable | None,
    items: FeatureTable | None,
) -> dict:
    """Checks the row accounting and writes taskgen_stats.json, tasks.tsv and feature_specs.json."""
    config = ctx.config
    shard = summary["counters"]
    extract = extract or {}
    rows_in = int(extract.get("rows_in", 0))
    quarantined = {k: int(v) for k, v in extract.get("quarantined", {}).items()}
    filtered = {k: int(v) for k, v in extract.get("filtered", {}).items()}
    written = {k: int(v) for k, v in shard.get("rows_written", {}).items()}
    checks = {}
    if ctx.scenario_source == "themes":
        # rows are accounted once each from the item-level plan; memberships are counted by the shards
        row_written = int(plan.row_stats.get("rows_written", 0))
        filtered.update({k: int(v) for k, v in plan.row_stats.get("filtered", {}).items()})
        rows_written_total = row_written
        checks["memberships"] = {
            "expected": int(plan.row_stats.get("memberships_expected", 0)),
            "written": int(shard.get("memberships_written", 0)),
            "filtered_by_reason": {k: int(v) for k, v in shard.get("filtered", {}).items()},
        }
        checks["memberships"]["ok"] = checks["memberships"]["expected"] == checks["memberships"]["written"]
    else:
        filtered.update({k: int(v) for k, v in shard.get("filtered", {}).items()})
        rows_written_total = int(sum(written.values()))
    total = rows_written_total + sum(filtered.values()) + sum(quarantined.values())
    checks["rows"] = {"ok": total == rows_in, "rows_in": rows_in, "accounted": total}
    ok = all(c["ok"] for c in checks.values())
    feature_specs = []
    max_lens = {}
    for table in (users, items):
        if table is not None:
            max_lens.update(table.max_lengths())
    for f in ctx.features:
        max_len = max(1, max_lens.get(f.name, 1)) if f.kind == "multi" else 1
        feature_specs.append(E.FeatureSpec(f.name, f.side, f.kind, f.vocab_size, max_len))
    stats = {
        "setting": config.setting,
        "scenario_source": ctx.scenario_source,
        "rows_in": rows_in,
        "rows_written": rows_written_total,
        # rows stored in the records of each split; with derived themes an interaction is stored once per
        # kept theme of its item, so these add up to more than rows_written
        "task_rows_written_by_split": written,
        "rows_filtered": int(sum(filtered.values())),
        "rows_filtered_by_reason": filtered,
        "rows_quarantined": int(sum(quarantined.values())),
        "rows_quarantined_by_reason": quarantined,
        "negatives_written_by_split": {k: int(v) for k, v in shard.get("negatives_written", {}).items()},
        "tasks_by_split": {k: int(v) for k, v in shard.get("tasks", {}).items()},
        "plan": plan.summary(config.setting),
        "conservation": checks,
        "conservation_ok": ok,
        "config": json.loads(config.to_json()),
        "features": [dataclasses.asdict(s) for s in feature_specs],
    }
    os.makedirs(output_dir, exist_ok=True)
    E.save_feature_specs(feature_specs, os.path.join(output_dir, E.FEATURE_SPECS_FILE))
    write_index(summary["index"], output_dir)
    common.write_json(os.path.join(output_dir, STATS_FILE), stats)
    if not ok:
        raise ConservationError(
            f"TaskGen row accounting does not add up: {json.dumps(checks, sort_keys=True)} "
            f"(rows in {rows_in}; written {rows_written_total}; filtered {filtered}; quarantined {quarantined})"
        )
    return stats
