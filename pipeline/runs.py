"""Past runs, read back from the local ML-Metadata store: what ``cmml run`` prints at the end and
what ``cmml runs`` lists."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from cmml.pipeline.pipeline import metadata_path


@dataclasses.dataclass
class RunSummary:
    """What a finished run produced, read back from ML-Metadata and the artifacts."""

    pipeline: str
    run_id: str
    seconds: float
    ingest: dict
    tasks: dict
    evaluation: dict | None
    pushed: str | None
    serving_base: str | None
    components: list
    serving_check: dict | None = None  # the ServingValidator's report (serving_validation.json)
    entities: dict | None = None  # LogExampleGen's user and item table counts

    def render(self) -> str:
        lines = [f"pipeline {self.pipeline}, run {self.run_id}: {self.seconds:.0f} s", ""]
        if self.ingest:
            lines.append(
                f"ingested {self.ingest.get('rows_ok', 0):,} rows; quarantined {self.ingest.get('rows_rejected', 0):,} "
                f"(dead letters under the ExampleGen output)"
            )
        if self.entities:
            e = self.entities
            lines.append(
                f"tables: {e.get('users_rows', 0):,} users, {e.get('items_rows', 0):,} items "
                f"({e.get('items_without_interactions', 0):,} items and {e.get('users_without_interactions', 0):,} "
                f"users without interactions; {e.get('users_unknown_kept', 0):,} users and "
                f"{e.get('items_unknown_kept', 0):,} items known only from the log)"
            )
        if self.tasks:
            t = self.tasks
            lines.append(
                f"tasks: {t.get('tasks_meta_train', 0):,} meta-train, {t.get('tasks_meta_valid', 0):,} meta-valid, "
                f"{t.get('tasks_meta_test', 0):,} meta-test; rows in tasks {t.get('rows_written', 0):,}, "
                f"filtered {t.get('rows_filtered', 0):,}, quarantined {t.get('rows_quarantined', 0):,}"
            )
        if self.evaluation:
            from cmml.components.evaluator.blessing import report_markdown

            ev = self.evaluation
            lines += ["", report_markdown(ev["metrics"], ev["setting"], ev["blessed"], ev["reasons"]).strip()]
        if self.pushed:
            name = os.path.basename(self.serving_base)
            base = os.path.abspath(self.serving_base)  # TF Serving refuses a relative base path
            lines += [
                "",
                f"pushed to {self.pushed} (TF Serving layout: --model_base_path={base})",
                "query it with the test double (or tensorflow_model_server with the same flags):",
                f"  cmml serve --model_base_path={base} --model_name={name} --port=8500 --rest_api_port=8501",
                f"  cmml predict --server localhost:8500 --model_name {name} --items <rated item ids> "
                "--ratings <their ratings> --top 10",
            ]
        if self.serving_check is not None and not self.serving_check.get("blessed"):
            lines += [
                "",
                f"serving validation FAILED: {self.serving_check.get('error', 'see serving_validation.json')}",
            ]
        if not self.pushed and self.evaluation is not None:
            why = (
                "not blessed by the Evaluator"
                if not self.evaluation.get("blessed")
                else "serving validation failed"
                if self.serving_check and not self.serving_check.get("blessed")
                else "see the Pusher's log"
            )
            lines += ["", f"nothing was pushed ({why})"]
        return "\n".join(lines)


def _artifacts_of(store, run_context, type_name: str) -> list:
    return [
        a
        for a in store.get_artifacts_by_context(run_context.id)
        if store.get_artifact_types_by_id([a.type_id])[0].name == type_name
    ]


def _artifact_json(store, run_context, type_name: str, filename: str) -> dict | None:
    """The JSON file an artifact of this run holds (the last such artifact), or None."""
    found = None
    for a in _artifacts_of(store, run_context, type_name):
        path = os.path.join(a.uri, filename)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
    return found


def _props(artifact) -> dict[str, Any]:
    out = {}
    for key, value in artifact.custom_properties.items():
        out[key] = (
            value.int_value
            if value.HasField("int_value")
            else value.double_value
            if value.HasField("double_value")
            else value.string_value
        )
    return out


def open_store(output_dir: str):
    """The local ML-Metadata store of the pipelines run under ``output_dir`` (SQLite)."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    return metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path(output_dir)))


def pipeline_runs(store, pipeline_name: str) -> list:
    """The run contexts of one pipeline."""
    return [c for c in store.get_contexts_by_type("pipeline_run") if _run_pipeline(store, c) == pipeline_name]


def newest_run(store, pipeline_name: str):
    """The pipeline's most recent run context, or None if it never ran."""
    return max(pipeline_runs(store, pipeline_name), key=lambda c: c.create_time_since_epoch, default=None)


def summarize_run(output_dir: str, pipeline_name: str, run_id: str | None = None, seconds: float = 0.0) -> RunSummary:
    """Reads a (finished) run's outcome from ML-Metadata: latest run unless ``run_id`` is given."""
    store = open_store(output_dir)
    if run_id:
        run = next((c for c in pipeline_runs(store, pipeline_name) if c.name == run_id), None)
    else:
        run = newest_run(store, pipeline_name)
    if run is None:
        which = f"run {run_id!r}" if run_id else "run"
        raise RuntimeError(f"no {which} of pipeline {pipeline_name!r} in {metadata_path(output_dir)}")
    examples = [
        a
        for a in _artifacts_of(store, run, "Examples")
        if "rows_in" in a.custom_properties and "/TaskGen/" not in a.uri
    ]
    entities = [a for a in _artifacts_of(store, run, "Examples") if "users_rows" in a.custom_properties]
    tasks = [
        a
        for a in _artifacts_of(store, run, "Examples")
        if "tasks_meta_train" in a.custom_properties or "rows_written" in a.custom_properties
    ]
    evaluation = _artifact_json(store, run, "cmml.TaskEvaluation", "metrics.json")
    serving_check = _artifact_json(store, run, "InfraBlessing", "serving_validation.json")
    pushed = None
    for a in _artifacts_of(store, run, "PushedModel"):
        props = _props(a)
        if props.get("pushed") == 1:
            pushed = props.get("pushed_destination")
    components = sorted({component for component, _ in run_executions(store, run)})
    return RunSummary(
        pipeline=pipeline_name,
        run_id=run.name,
        seconds=seconds,
        ingest=_props(examples[0]) if examples else {},
        tasks=_props(tasks[0]) if tasks else {},
        evaluation=evaluation,
        pushed=pushed,
        serving_base=os.path.dirname(pushed.rstrip("/")) if pushed else None,
        components=components,
        serving_check=serving_check,
        entities=_props(entities[0]) if entities else None,
    )


def run_executions(store, run_context) -> list[tuple[str, str]]:
    """(component id, execution state name) of every execution of one pipeline run."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    node_type = store.get_context_type("node").id
    out = []
    for execution in store.get_executions_by_context(run_context.id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
        component = nodes[0].split(".", 1)[-1] if nodes else "?"  # node contexts are named <pipeline>.<component>
        out.append((component, pb.Execution.State.Name(execution.last_known_state)))
    return out


def _run_pipeline(store, run_context) -> str | None:
    """The pipeline a run context belongs to (its parent 'pipeline' context)."""
    for parent in store.get_parent_contexts_by_context(run_context.id):
        return parent.name
    return None


def list_runs(output_dir: str) -> list[dict[str, Any]]:
    """Past runs recorded in the local ML-Metadata store, newest first."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    if not os.path.exists(metadata_path(output_dir)):
        return []
    store = open_store(output_dir)
    rows = []
    for run in store.get_contexts_by_type("pipeline_run"):
        executions = store.get_executions_by_context(run.id)
        states = [e.last_known_state for e in executions]
        rows.append(
            {
                "pipeline": _run_pipeline(store, run),
                "run_id": run.name,
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.create_time_since_epoch / 1000)),
                "executions": len(executions),
                "cached": sum(s == pb.Execution.CACHED for s in states),
                "failed": sum(s == pb.Execution.FAILED for s in states),
            }
        )
    return sorted(rows, key=lambda r: r["started"], reverse=True)
