"""TaskGen throughput and peak memory versus a plain pandas implementation of the same grouping.

Both sides run the user-setting protocol on the same interactions: keep users with 13..100
ratings, split users 80/20 by the stable hash of their id, order each user's ratings by item id
and ``default_rng(user id).permutation``, mark the last 10 of meta-test users as query, and write
per-split output with every model feature of every row.

* TaskGen: ``cmml.components.task_gen.beam_graph.run_task_gen`` on gzipped interaction-example
  TFRecords and the transformed user and item tables, DirectRunner in multi-processing mode with 2
  workers (the component's default).
* pandas: reads the interactions already joined with their features from a Parquet file (pandas'
  fastest input, no tf.Example decoding), groups with ``groupby``, writes one Parquet file per split.

Inputs (``prepare*``) are built once and are not part of the timings::

    python -m bench.taskgen_bench prepare-tfx --data /path/to/ml-1m-partial --out /tmp/tg-ml1m
    cmml data synth --dest /tmp/syn20m --ratings 20000000
    python -m bench.taskgen_bench prepare --data /tmp/syn20m --out /tmp/tg-syn20m
    python -m bench.taskgen_bench compare --input /tmp/tg-syn20m

``prepare-tfx`` runs the pipeline's LogExampleGen, validation and Transform components and links
their outputs (TaskGen only: no Parquet for pandas). ``prepare`` writes the same inputs directly
(vocabularies from the side tables with Transform's index convention, tfx_bsl's C++ tf.Example
encoder) plus the joined Parquet file. ``compare`` runs each side in its own process and samples the
resident memory of the whole process tree (runner + Beam workers) every 0.2 s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

QUERY_SIZE = 10
MIN_RATINGS, MAX_RATINGS = 13, 100
TEST_FRACTION = 0.2
SALT = "cmml-taskgen"


# --- inputs ---------------------------------------------------------------------------------------------------
def _codes_for(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Transform's convention: 1..V for vocabulary values, 0 for missing."""
    idx = pc.index_in(values, value_set=vocab)
    return np.asarray(pc.fill_null(pc.add(idx, 1), 0).to_numpy(zero_copy_only=False), dtype=np.int64)


class DirectTransform:
    """Transformed columns of a dataset without tf.Transform (vocabularies from the side tables)."""

    def __init__(self, ds):
        from cmml.components.task_gen.columns import FeatureInfo
        from cmml.data import records as R
        from cmml.models import preprocessing as TM

        users, _ = ds.read_users(on_error="collect")
        items, _ = ds.read_items(on_error="collect")
        self.user_keys = users[R.USER_ID].combine_chunks()
        self.item_keys = items[R.ITEM_ID].combine_chunks()
        self.user_cols, self.item_cols, self.features = {}, {}, []
        for f in TM.resolve_features():
            table, keys, out = (
                (users, self.user_keys, self.user_cols) if f.side == "user" else (items, self.item_keys, self.item_cols)
            )
            if f.name in (R.USER_ID, R.ITEM_ID):
                out[f.name] = np.arange(1, len(keys) + 1, dtype=np.int64)
                vocab = len(keys)
            elif f.transform == "buckets":
                v = pc.fill_null(table[f.name].combine_chunks(), 0).to_numpy(zero_copy_only=False)
                out[f.name] = np.where(v > 0, np.searchsorted(np.array(f.boundaries), v, side="right") + 1, 0).astype(
                    np.int64
                )
                self.features.append(FeatureInfo(f.name, f.side, f.kind, len(f.boundaries) + 2))
                continue
            elif f.kind == "multi":
                lists = table[f.name].combine_chunks()
                flat = pc.list_flatten(lists)
                vocab_arr = pc.unique(flat)
                lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
                out[f.name] = (_codes_for(flat, vocab_arr), np.concatenate([[0], np.cumsum(lengths)]))
                vocab = len(vocab_arr)
            else:
                col = table[f.name].combine_chunks()
                vocab_arr = pc.unique(col.drop_null())
                out[f.name] = _codes_for(col, vocab_arr)
                vocab = len(vocab_arr)
            if vocab:
                self.features.append(FeatureInfo(f.name, f.side, f.kind, vocab + f.num_oov_buckets + 1))
            else:
                out.pop(f.name)

    def interaction_columns(self, table: pa.Table) -> dict:
        """LogExampleGen's interaction columns (raw ids, label, scenario) of a block."""
        from cmml.data import records as R

        return {
            R.USER_ID: table[R.USER_ID].combine_chunks().cast(pa.large_binary()),
            R.ITEM_ID: table[R.ITEM_ID].combine_chunks().cast(pa.large_binary()),
            R.LABEL: table[R.LABEL].to_numpy().astype(np.float32),
            R.SCENARIO: pc.fill_null(table[R.SCENARIO].combine_chunks(), "").cast(pa.large_binary()),
        }

    def entity_columns(self, side: str) -> dict:
        """The transformed user or item table as one column batch (raw id + features)."""
        from cmml.models import preprocessing as TM

        keys, cols, key = (
            (self.user_keys, self.user_cols, TM.RAW_USER_ID)
            if side == "user"
            else (self.item_keys, self.item_cols, TM.RAW_ITEM_ID)
        )
        names = [f.name for f in self.features if f.side == side]
        return {key: keys.cast(pa.large_binary()), **{n: cols[n] for n in names}}

    def joined_columns(self, table: pa.Table) -> dict:
        """The interactions with their users' and items' features (the pandas side's input)."""
        from cmml.components.task_gen.tables import offsets_from_lengths, ragged_take
        from cmml.data import records as R

        u = pc.index_in(table[R.USER_ID].combine_chunks(), value_set=self.user_keys).to_numpy(zero_copy_only=False)
        i = pc.index_in(table[R.ITEM_ID].combine_chunks(), value_set=self.item_keys).to_numpy(zero_copy_only=False)
        if np.isnan(u.astype(np.float64)).any() or np.isnan(i.astype(np.float64)).any():
            raise ValueError("interactions reference users or items without side features")
        u, i = u.astype(np.int64), i.astype(np.int64)
        base = self.interaction_columns(table)
        cols = {"raw_user_id": base[R.USER_ID], "raw_item_id": base[R.ITEM_ID], "label": base[R.LABEL]}
        for f in self.features:
            src, rows = (self.user_cols, u) if f.side == "user" else (self.item_cols, i)
            if f.kind == "multi":
                values, offsets = src[f.name]
                v, lengths = ragged_take(values, offsets, rows)
                cols[f.name] = (v, offsets_from_lengths(lengths))
            else:
                cols[f.name] = src[f.name][rows]
        return cols


def _write_block(args) -> int:
    cols, path = args
    from cmml.components.task_gen.columns import write_column_batches

    return write_column_batches([cols], path, "GZIP")


def _parquet_table(cols: dict) -> pa.Table:
    """Column batch -> Arrow table for pandas: ids as strings, list features as list<int64>."""
    arrays = {}
    for name, v in cols.items():
        if isinstance(v, tuple):
            arrays[name] = pa.ListArray.from_arrays(pa.array(v[1].astype(np.int32)), pa.array(v[0]))
        elif isinstance(v, pa.Array):
            if isinstance(v, pa.DictionaryArray):
                v = v.cast(v.type.value_type)
            arrays[name] = v.cast(pa.large_string())
        else:
            arrays[name] = pa.array(v)
    return pa.table(arrays)


def prepare_direct(data: str, out: str, workers: int = 2) -> None:
    """TaskGen's inputs written without the pipeline: interaction examples, the transformed user and item
    tables (vocabularies from the side tables), and the joined columns as Parquet for pandas."""
    import pyarrow.parquet as pq

    from cmml.data import open_dataset

    ds = open_dataset(data)
    t0 = time.time()
    transform = DirectTransform(ds)
    for folder in ("examples", "users", "items"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    _write_block((transform.entity_columns("user"), os.path.join(out, "users", "part-00000.tfrecord.gz")))
    _write_block((transform.entity_columns("item"), os.path.join(out, "items", "part-00000.tfrecord.gz")))
    writer, rows = None, 0
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        pending = []
        for k, batch in enumerate(ds.iter_interactions(on_error="collect", block_bytes=8 << 20)):
            table = _parquet_table(transform.joined_columns(batch.table))
            writer = writer or pq.ParquetWriter(os.path.join(out, "columns.parquet"), table.schema)
            writer.write_table(table)
            cols = transform.interaction_columns(batch.table)
            pending.append(
                pool.submit(_write_block, (cols, os.path.join(out, "examples", f"part-{k:05d}.tfrecord.gz")))
            )
            while len(pending) > 2 * workers:
                rows += pending.pop(0).result()
            print(f"block {k}: {batch.table.num_rows:,} rows ({time.time() - t0:.0f} s)", file=sys.stderr)
        rows += sum(f.result() for f in pending)
    writer.close()
    _save_features(out, transform.features, rows, "direct writer (no tf.Transform)")


def _save_features(out: str, features, rows: int, how: str) -> None:
    import dataclasses

    with open(os.path.join(out, "input.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "how": how, "features": [dataclasses.asdict(x) for x in features]}, f, indent=1)


def prepare_tfx(data: str, out: str) -> None:
    """Runs the pipeline's data part up to Transform (LocalDagRunner) and links TaskGen's inputs."""
    import tensorflow as tf
    import tensorflow_transform as tft
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from cmml.components.task_gen.executor import features_from_transform
    from cmml.pipeline.config import load_config
    from cmml.pipeline.pipeline import create_components

    out_path = Path(out)
    components = create_components(load_config(overrides={"data": data}), str(out_path), data_only=True)[:-1]
    mlmd = metadata.sqlite_metadata_connection_config(str(out_path / "mlmd.sqlite"))
    LocalDagRunner().run(
        tfx_pipeline.Pipeline(
            pipeline_name="taskgen-bench",
            pipeline_root=str(out_path / "root"),
            components=components,  # without TaskGen
            metadata_connection_config=mlmd,
        )
    )
    store = metadata_store.MetadataStore(mlmd)
    [graph] = store.get_artifacts_by_type("TransformGraph")
    features, _ = features_from_transform(tft.TFTransformOutput(graph.uri), None)
    examples = {a.uri.split("/")[-2]: a.uri for a in store.get_artifacts_by_type("Examples")}
    links = {
        "examples": sorted(glob.glob(f"{examples['examples']}/Split-*/*")),
        "users": sorted(glob.glob(f"{examples['transformed_examples']}/Split-users/*")),
        "items": sorted(glob.glob(f"{examples['transformed_examples']}/Split-items/*")),
    }
    for folder, files in links.items():
        os.makedirs(out_path / folder, exist_ok=True)
        for k, f in enumerate(files):
            os.symlink(f, out_path / folder / f"part-{k:05d}.tfrecord.gz")
    rows = sum(1 for _ in tf.data.TFRecordDataset(links["examples"], compression_type="GZIP"))
    _save_features(out, features, rows, "LogExampleGen + Transform (no Parquet: run the pandas side on 'prepare')")


# --- the two implementations ------------------------------------------------------------------------------------
def _load_input(input_dir: str):
    from cmml.components.task_gen.columns import FeatureInfo

    info = json.loads(Path(input_dir, "input.json").read_text())
    return info, [FeatureInfo(**f) for f in info["features"]]


def run_taskgen(
    input_dir: str, out: str, shards: int, beam_args: list[str] | None, in_memory_below: int | None = None
) -> dict:
    from cmml.components.task_gen.beam_graph import run_task_gen
    from cmml.components.task_gen.config import TaskGenConfig

    info, features = _load_input(input_dir)
    files = sorted(glob.glob(os.path.join(input_dir, "examples", "*.tfrecord*")))
    config = TaskGenConfig(
        min_ratings=MIN_RATINGS,
        max_ratings=MAX_RATINGS,
        test_fraction=TEST_FRACTION,
        salt=SALT,
        query_size=QUERY_SIZE,
        num_shards=shards,
    )
    if in_memory_below is not None:
        config = dataclasses.replace(config, in_memory_below_bytes=in_memory_below)
    t0 = time.time()
    entities = {
        side: sorted(glob.glob(os.path.join(input_dir, folder, "*.tfrecord*")))
        for side, folder in (("user", "users"), ("item", "items"))
    }
    stats = run_task_gen(files, entities, out, config, features, beam_args=beam_args)
    seconds = time.time() - t0
    mode = "auto" if in_memory_below is None else f"in_memory_below={in_memory_below}"
    return {
        "impl": "taskgen",
        "mode": mode,
        "rows": stats["rows_in"],
        "seconds": seconds,
        "rows_per_s": stats["rows_in"] / seconds,
        "rows_written": stats["rows_written"],
        "tasks": stats["tasks_by_split"],
    }


def run_pandas(input_dir: str, out: str, ids_only: bool = False) -> dict:
    """The same protocol in plain pandas (one process), written the efficient way (integer codes).

    ``ids_only``: group only (user, item, label) — a lower bound for any pandas version, since
    list-valued features are object columns (one Python list per row and feature) in pandas.
    """
    import pandas as pd

    from cmml.components import common

    t0 = time.time()
    columns = ["raw_user_id", "raw_item_id", "label"] if ids_only else None
    df = pd.read_parquet(os.path.join(input_dir, "columns.parquet"), columns=columns)
    df = df.drop(columns=[c for c in ("raw_scenario", "raw_domain") if c in df])
    rows = len(df)
    codes, users = pd.factorize(df["raw_user_id"])
    counts = np.bincount(codes)
    kept = (counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)
    test = common.unit_interval(common.stable_hash64(list(users), SALT)) < TEST_FRACTION
    df = df.assign(_user=codes, _item=pd.to_numeric(df["raw_item_id"], errors="coerce"))
    df = df[kept[codes]].sort_values(["_user", "_item"], kind="stable")
    sizes = df.groupby("_user", sort=True).size()
    order = np.empty(len(df), dtype=np.int64)
    roles = np.zeros(len(df), dtype=np.int8)
    start = 0
    for user, n in zip(sizes.index.to_numpy(), sizes.to_numpy()):
        text = users[user]
        seed = int(text) if text.isdigit() else int(common.stable_hash64([text])[0])
        order[start : start + n] = start + np.random.default_rng(seed).permutation(n)
        if test[user]:
            roles[start : start + n - QUERY_SIZE] = 1
            roles[start + n - QUERY_SIZE : start + n] = 2
        start += n
    df = df.iloc[order].assign(role=roles)
    is_test = test[df["_user"].to_numpy()]
    os.makedirs(out, exist_ok=True)
    tasks = {}
    for split, mask in (("meta_train", ~is_test), ("meta_test", is_test)):
        part = df[mask].drop(columns=["_user", "_item"])
        part.to_parquet(os.path.join(out, f"{split}.parquet"), index=False)
        tasks[split] = int(part["raw_user_id"].nunique())
    seconds = time.time() - t0
    return {
        "impl": "pandas-ids-only" if ids_only else "pandas",
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "rows_written": int(len(df)),
        "tasks": tasks,
    }


# --- harness ---------------------------------------------------------------------------------------------------
def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        for p in [proc] + proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    except psutil.Error:
        pass
    return total


def measured(cmd: list[str]) -> tuple[dict, float]:
    """Runs a command, returns (its JSON result, peak RSS of its process tree in bytes)."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(ps))
            done.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    stdout, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return json.loads(stdout.decode().strip().splitlines()[-1]), peak[0]


def compare(input_dir: str, work: str, shards: int, repeat: int) -> list[dict]:
    results = []
    me = [sys.executable, "-m", "bench.taskgen_bench"]
    with_pandas = os.path.exists(os.path.join(input_dir, "columns.parquet"))
    for r in range(repeat):
        runs = (
            *((("pandas", []), ("pandas", ["--ids-only"])) if with_pandas else ()),
            ("taskgen", ["--shards", str(shards)]),
            ("taskgen", ["--shards", str(shards), "--in-memory-below", "0"]),
        )  # default, then forced multi-processing
        for k, (impl, extra) in enumerate(runs):
            out = os.path.join(work, f"{impl}-{k}-{r}")
            cmd = me + [impl, "--input", input_dir, "--out", out] + extra
            res, peak = measured(cmd)
            res["peak_rss_mib"] = peak / 2**20
            results.append(res)
            print(json.dumps(res), file=sys.stderr)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="direct transformed-example writer (large synthetic data)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("prepare-tfx", help="real LogExampleGen + Transform")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    for name in ("taskgen", "pandas"):
        p = sub.add_parser(name)
        p.add_argument("--input", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--shards", type=int, default=16)
        p.add_argument(
            "--beam_args", default=None, help="comma-separated Beam args (default: multi-processing, 2 workers)"
        )
        p.add_argument("--ids-only", action="store_true", help="pandas: group (user, item, label) only")
        p.add_argument(
            "--in-memory-below",
            type=int,
            default=None,
            help="taskgen: TaskGenConfig.in_memory_below_bytes (default: the config's; 0 = always multi-processing)",
        )
    p = sub.add_parser("compare", help="pandas then TaskGen, each in its own process, with peak memory")
    p.add_argument("--input", required=True)
    p.add_argument("--work", default="/tmp/taskgen-bench-out")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    import cmml  # noqa: F401

    if args.cmd == "prepare":
        prepare_direct(args.data, args.out)
    elif args.cmd == "prepare-tfx":
        prepare_tfx(args.data, args.out)
    elif args.cmd == "taskgen":
        print(
            json.dumps(
                run_taskgen(
                    args.input,
                    args.out,
                    args.shards,
                    args.beam_args.split(",") if args.beam_args else None,
                    args.in_memory_below,
                )
            )
        )
    elif args.cmd == "pandas":
        print(json.dumps(run_pandas(args.input, args.out, args.ids_only)))
    else:
        for r in compare(args.input, args.work, args.shards, args.repeat):
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
