"""The data path of ``cmml run`` (LogExampleGen -> ... -> TaskGen) on one dataset: each stage's time,
peak memory of the whole process tree, and what TaskGen made of it.

Runs the pipeline's data part (``create_pipeline(data_only=True)``, the components ``cmml run``
runs before training) with the LocalDagRunner and no cache, in a child process whose process tree
(runner + Beam workers) is sampled every 0.2 s::

    python -m bench.data_path --data /path/to/ml-1m-partial --config pipeline/configs/users-v1.yaml \\
        --out /tmp/data-path --user 3333
    cmml data synth --dest /tmp/syn20m --ratings 20000000
    python -m bench.data_path --data /tmp/syn20m --out /tmp/data-path-20m

Prints one JSON line: seconds per component (from ML-Metadata: an execution's creation to its last
update), the wall time of the run, the peak resident memory in MiB, rows ingested, tasks per split,
and with ``--user`` that user's meta-test query items and ratings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.taskgen_bench import measured


def _stage_seconds(output: str, pipeline_name: str) -> dict[str, float]:
    from cmml.pipeline.runs import newest_run, open_store

    store = open_store(output)
    run = newest_run(store, pipeline_name)
    node_type = store.get_context_type("node").id
    seconds = {}
    for execution in store.get_executions_by_context(run.id):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type]
        component = nodes[0].split(".", 1)[-1] if nodes else "?"
        seconds[component] = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
    return seconds


def _query_of(tasks_uri: str, user: str) -> dict:
    """Query items and labels of one meta-test task, read from TaskGen's records."""
    import numpy as np
    import tensorflow as tf

    from cmml.models.episodes import task_files
    from cmml.schemas import tasks as T

    for record in tf.data.TFRecordDataset(task_files(tasks_uri, "meta_test"), compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        f = example.features.feature
        if f[T.TASK_KEY].bytes_list.value[0].decode() != user:
            continue
        role = np.asarray(f[T.ROW_ROLE].int64_list.value)
        items = np.asarray(f[T.ITEM_RAW_ID].bytes_list.value)[np.asarray(f[T.ROW_ITEM].int64_list.value)]
        query = role == T.ROLE_QUERY
        return {
            "rows": len(role),
            "query_items": [i.decode() for i in items[query]],
            "query_labels": [float(y) for y in np.asarray(f[T.ROW_LABEL].float_list.value)[query]],
        }
    raise KeyError(f"no meta-test task {user!r}")


def run_stages(args: argparse.Namespace) -> dict:
    from cmml.pipeline.config import load_config
    from cmml.pipeline.runner import run_local
    from cmml.pipeline.runs import open_store

    overrides = {"data": args.data if len(args.data) > 1 else args.data[0]}
    if args.setting:
        overrides["setting"] = args.setting
    config = load_config(args.config, overrides=overrides)
    start = time.time()
    summary = run_local(config, args.out, enable_cache=False, data_only=True, progress=sys.stderr)
    wall = time.time() - start
    result = {
        "data": args.data,
        "config": args.config,
        "wall_seconds": round(wall, 1),
        "stage_seconds": {k: round(v, 1) for k, v in _stage_seconds(args.out, summary.pipeline).items()},
        "rows_ok": summary.ingest.get("rows_ok"),
        "rows_rejected": summary.ingest.get("rows_rejected"),
        "tasks": {k: v for k, v in summary.tasks.items() if k.startswith("tasks_")},
    }
    if args.user:
        tasks = [a.uri for a in open_store(args.out).get_artifacts_by_type("Examples") if "/TaskGen/" in a.uri]
        result["user"] = {"key": args.user, **_query_of(tasks[-1], args.user)}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", required=True, help="dataset (repeat for multi-domain)")
    parser.add_argument("--config", default=None, help="pipeline YAML merged over the defaults")
    parser.add_argument("--setting", default=None)
    parser.add_argument("--out", required=True, help="pipeline output folder (emptied first)")
    parser.add_argument("--user", default=None, help="print this meta-test task's query set")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import cmml  # noqa: F401

        print(json.dumps(run_stages(args)))
        return 0
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    load = os.getloadavg()[0]
    result, peak = measured([sys.executable, "-m", "bench.data_path", "--child", *(argv or sys.argv[1:])])
    result["peak_rss_mib"] = round(peak / 2**20)
    result["load_before"] = round(load, 2)
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
