"""TaskGen's Apache Beam pipeline: transformed interactions -> per-task TFRecords.

The TFX component (``cmml.components.task_gen``) runs :func:`run_task_gen`; tests and
benchmarks can run it directly. This module imports neither TFX nor TensorFlow at import time, so
Beam workers start quickly (TensorFlow is loaded where files are read).

Beam graph (every element is a batch or a shard, never one interaction)::

    transformed example files --ReadColumns (tf.data + tf.io.parse_example, 64k rows a batch)-->
    column batches --Extract--> (shard, PackedRows)     --GroupByKey(shard)--> BuildShard --> records
                            \\-> user / item tables     --merge-->  side inputs of Plan and BuildShard
                            \\-> task counts            --Plan (size filter + meta split)--> side input
                            \\-> quarantined rows       --> quarantine/rows-*.jsonl
    shard summaries --merge--> Finalize: conservation check, taskgen_stats.json, tasks.tsv,
                                         feature_specs.json

Rows are keyed by ``hash(task key) % num_shards``; all rows of a task meet in one shard, where
numpy sorts and slices them, assigns roles, and tfx_bsl's C++ encoder writes one tf.Example per
task (format: ``schemas/task_records.md``).

Output layout (the ``tasks`` artifact URI)::

    Split-meta_train/tasks-SSSSS-of-NNNNN.tfrecord.gz   full interaction lists (fresh episodes per epoch)
    Split-meta_valid/...                                fixed episodes (only when valid_fraction > 0)
    Split-meta_test/...                                 fixed episodes
    feature_specs.json                            episodes.md feature specs (vocab sizes, max_len)
    taskgen_stats.json                            row accounting, task counts, configuration
    tasks.tsv                                     one line per written task: key, split, sizes
    quarantine/rows-*.jsonl                       rows that could not be used, with the reason

Conservation: ``rows_in = rows_written + rows_filtered (by reason) + rows_quarantined``; the run
fails when it does not hold. The counts are also MLMD custom properties of the artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components import common
from cmml.components import task_logic as L
from cmml.models import preprocessing as TM
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T

STATS_FILE = "taskgen_stats.json"
RECORD_CHUNK_ROWS = 100_000  # rows encoded at a time when writing a shard's records
INDEX_FILE = "tasks.tsv"
QUARANTINE_DIR = "quarantine"

MISSING_USER = "missing user id"
MISSING_ITEM = "missing item id"
BAD_LABEL = "non-finite label"


# --- input batches -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """A transformed feature TaskGen copies into the records."""

    name: str
    side: str
    kind: str
    vocab_size: int


def parse_spec(features: Sequence[FeatureInfo], with_scenario: bool, with_domain: bool) -> dict:
    """tf.io.parse_example spec of the transformed examples, limited to what TaskGen reads."""
    import tensorflow as tf

    spec = {
        TM.RAW_USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        TM.RAW_ITEM_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        TM.LABEL: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
    }
    if with_scenario:
        spec[TM.RAW_SCENARIO] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    if with_domain:
        spec[TM.RAW_DOMAIN] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    for f in features:
        if f.kind == "multi":
            spec[f.name] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    return spec


def columns_from_parsed(parsed: dict) -> dict:
    """Parsed tensors -> column batch: numpy arrays, (values, row_splits) for lists, and pyarrow
    dictionary arrays for strings (``tf.unique`` first, so only distinct ids become Python objects)."""
    import tensorflow as tf

    out = {}
    for name, value in parsed.items():
        if isinstance(value, tf.RaggedTensor):
            out[name] = (value.flat_values.numpy(), value.row_splits.numpy())
        elif value.dtype == tf.string:
            uniq, idx = tf.unique(value, out_idx=tf.int32)
            out[name] = pa.DictionaryArray.from_arrays(pa.array(idx.numpy()), pa.array(uniq.numpy(), pa.large_binary()))
        else:
            out[name] = value.numpy()
    return out


def write_column_batches(batches: Iterable[dict], path: str, compression: str = "GZIP") -> int:
    """Writes column batches as transformed-example TFRecords (the inverse of reading them).

    For tests, benchmarks and backfills that produce transformed columns without running
    tf.Transform: each batch is encoded by tfx_bsl's C++ encoder from Arrow arrays (no Python per
    example). Returns the number of examples written.
    """
    from tfx_bsl.coders import example_coder

    records = []
    for cols in batches:
        arrays, names = [], []
        for name, value in cols.items():
            if isinstance(value, tuple):  # multi feature: (values, row_splits)
                values, splits = value
                arrays.append(
                    pa.LargeListArray.from_arrays(pa.array(splits.astype(np.int64)), pa.array(values.astype(np.int64)))
                )
            else:
                arr = value if isinstance(value, pa.Array) else pa.array(value)
                if pa.types.is_integer(arr.type):
                    arr = arr.cast(pa.int64())
                elif pa.types.is_floating(arr.type):
                    arr = arr.cast(pa.float32())
                else:
                    arr = L.to_binary(arr)
                arrays.append(pa.LargeListArray.from_arrays(pa.array(np.arange(len(arr) + 1, dtype=np.int64)), arr))
            names.append(name)
        records += example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays(arrays, names))
    common.write_tfrecords(path, records, compression)
    return len(records)


class _ReadColumns(beam.DoFn):
    """TFRecord file of transformed examples -> column batches (parsing in TensorFlow's C++ kernels)."""

    def __init__(self, spec_fn, batch_size: int):
        self._spec_fn = spec_fn
        self._batch_size = batch_size

    def process(self, path: str) -> Iterator[dict]:
        import tensorflow as tf

        spec = self._spec_fn()
        compression = "GZIP" if path.endswith(".gz") else ""
        ds = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=8 << 20)
        ds = ds.batch(self._batch_size).map(lambda x: tf.io.parse_example(x, spec)).prefetch(1)
        for parsed in ds:
            yield columns_from_parsed(parsed)


# --- extract ------------------------------------------------------------------------------------------------------
def _dictionary(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(per-row index, dictionary) of a string column (dictionary-encoded if it is not already)."""
    enc = values if isinstance(values, pa.DictionaryArray) else pc.dictionary_encode(values)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), L.to_binary(enc.dictionary)


def _encode_keys(values: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(per-row index into the dictionary, dictionary keys, stable uint64 hash of each key)."""
    idx, keys = _dictionary(values)
    return idx, keys, common.stable_hash64(keys)


def _nonempty(values: pa.Array) -> np.ndarray:
    if isinstance(values, pa.DictionaryArray):
        idx, keys = _dictionary(values)
        return _nonempty(keys)[idx]
    return np.asarray(
        pc.fill_null(pc.greater(pc.binary_length(values), 0), False).to_numpy(zero_copy_only=False), dtype=bool
    )


def _feature_table(
    rows: np.ndarray,
    uniq_index: np.ndarray,
    uniq_keys: pa.Array,
    uniq_hash: np.ndarray,
    cols: dict,
    features: Sequence[FeatureInfo],
    domains: pa.Array | None,
) -> L.FeatureTable:
    """Distinct keys of a batch with the features of their first row and their row counts."""
    n_uniq = len(uniq_keys)
    first = np.full(n_uniq, -1, dtype=np.int64)
    # first occurrence of every unique among ``rows`` (rows are in batch order)
    idx = uniq_index[rows]
    order = np.argsort(idx, kind="stable")
    starts = np.flatnonzero(np.r_[True, idx[order][1:] != idx[order][:-1]]) if len(idx) else np.zeros(0, np.int64)
    present = idx[order][starts]
    first[present] = rows[order][starts]
    counts = np.bincount(idx, minlength=n_uniq).astype(np.int64)
    sel = np.flatnonzero(first >= 0)
    src = first[sel]
    categorical, multi = {}, {}
    for f in features:
        if f.kind == "multi":
            values, splits = cols[f.name]
            v, lengths = L.ragged_take(values.astype(np.int64), splits.astype(np.int64), src)
            multi[f.name] = (v, L.offsets_from_lengths(lengths))
        else:
            categorical[f.name] = cols[f.name][src].astype(np.int64)
    return L.FeatureTable(
        uniq_hash[sel],
        L.to_binary(uniq_keys).take(pa.array(sel)),
        categorical,
        multi,
        counts[sel],
        None if domains is None else domains.take(pa.array(src)),
    )


def _quarantine_records(cols: dict, rows: np.ndarray, reasons: np.ndarray) -> list[str]:
    users = cols[TM.RAW_USER_ID].take(pa.array(rows)).to_pylist()
    items = cols[TM.RAW_ITEM_ID].take(pa.array(rows)).to_pylist()
    labels = cols[TM.LABEL][rows]
    return [
        json.dumps(
            {
                "reason": r,
                "raw_user_id": u.decode("utf-8", "replace"),
                "raw_item_id": i.decode("utf-8", "replace"),
                "label": None if not np.isfinite(y) else float(y),
            },
            sort_keys=True,
        )
        for r, u, i, y in zip(reasons, users, items, labels)
    ]


@dataclasses.dataclass(frozen=True)
class ExtractContext:
    config: L.TaskGenConfig
    features: tuple[FeatureInfo, ...]
    scenario_source: str | None  # 'column' | 'themes' (scenario setting) | None
    theme_vocab: L.ThemeVocab | None


def extract_batch(cols: dict, ctx: ExtractContext) -> dict:
    """One column batch -> shard rows, side-table partials, counts and quarantined rows."""
    config = ctx.config
    user_raw, item_raw = cols[TM.RAW_USER_ID], cols[TM.RAW_ITEM_ID]
    label = np.asarray(cols[TM.LABEL], dtype=np.float32)
    n = len(label)
    reasons = np.full(n, None, dtype=object)
    for mask, reason in (
        (~_nonempty(user_raw), MISSING_USER),
        (~_nonempty(item_raw), MISSING_ITEM),
        (~np.isfinite(label), BAD_LABEL),
    ):
        reasons[mask & (reasons == None)] = reason  # noqa: E711
    bad = np.flatnonzero(reasons != None)  # noqa: E711
    good = np.flatnonzero(reasons == None)  # noqa: E711
    counters: dict = {"rows_in": n, "quarantined": {}, "filtered": {}}
    for r in set(reasons[bad]):
        counters["quarantined"][r] = int((reasons[bad] == r).sum())
    out: dict = {"counters": counters, "quarantine": _quarantine_records(cols, bad, reasons[bad]) if len(bad) else []}

    domains = None
    if TM.RAW_DOMAIN in cols and _nonempty(cols[TM.RAW_DOMAIN]).any():
        domains = L.to_binary(cols[TM.RAW_DOMAIN])
    u_idx, u_keys, u_hash = _encode_keys(user_raw)
    i_idx, i_keys, i_hash = _encode_keys(item_raw)
    user_feats = [f for f in ctx.features if f.side == "user"]
    item_feats = [f for f in ctx.features if f.side == "item"]
    out["users"] = _feature_table(good, u_idx, u_keys, u_hash, cols, user_feats, domains)
    out["items"] = _feature_table(good, i_idx, i_keys, i_hash, cols, item_feats, domains)
    row_user = u_hash[u_idx[good]]
    row_item = i_hash[i_idx[good]]
    row_label = label[good]

    if config.setting == "user":  # task is the user: one array serves both (pickled once)
        task, user, item, y = row_user, row_user, row_item, row_label
    elif ctx.scenario_source == "column":
        scen = cols[TM.RAW_SCENARIO].take(pa.array(good))
        has = _nonempty(scen)
        counters["filtered"][L.NO_SCENARIO] = int((~has).sum())
        keep = np.flatnonzero(has)
        s_idx, s_keys, s_hash = _encode_keys(scen.take(pa.array(keep)))
        task, user, item, y = s_hash[s_idx], row_user[keep], row_item[keep], row_label[keep]
        counts = np.bincount(s_idx, minlength=len(s_keys)).astype(np.int64)
        used = np.flatnonzero(counts)
        out["scenarios"] = L.FeatureTable(s_hash[used], s_keys.take(pa.array(used)), {}, {}, counts[used])
        out["pairs"] = unique_pairs(np.stack([task, item], axis=1))
    else:  # themes of the row's item; an interaction belongs to every theme of its item
        items = out["items"]
        pos, theme_keys = L.derive_themes(items, ctx.theme_vocab, config.themes)
        theme_hash = common.stable_hash64(theme_keys)
        order = np.argsort(pos, kind="stable")
        pos, theme_hash = pos[order], theme_hash[order]
        theme_off = L.offsets_from_lengths(np.bincount(pos, minlength=len(items)))
        item_of_row = _positions(items.hashes, row_item)
        task, lengths = L.ragged_take(theme_hash, theme_off, item_of_row)
        rep = np.repeat(np.arange(len(row_item)), lengths)
        user, item, y = row_user[rep], row_item[rep], row_label[rep]
    shard = (task % np.uint64(config.num_shards)).astype(np.int64)
    order = np.argsort(shard, kind="stable")
    starts, ends = L.segments(shard[order])
    out["shards"] = []
    for s, e in zip(starts, ends):
        t = task[order[s:e]]
        u = t if user is task else user[order[s:e]]
        out["shards"].append((int(shard[order[s]]), L.ShardRows(t, u, item[order[s:e]], y[order[s:e]]).pack()))
    return out


def _positions(table_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Positions of ``hashes`` in an unsorted array of distinct hashes."""
    order = np.argsort(table_hashes)
    return order[np.searchsorted(table_hashes[order], hashes)]


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct rows of a (k, 2) uint64 array."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    p = pairs[order]
    keep = np.r_[True, (p[1:] != p[:-1]).any(axis=1)]
    return p[keep]


class _Extract(beam.DoFn):
    """Column batches -> (shard, rows) per batch; side tables, pairs and counters merged per bundle.

    Side tables are merged inside the DoFn and emitted once per bundle (a hand-made combiner
    lift): a batch repeats most of the catalogue's items, and shipping one item table per batch
    to the runner would cost more memory than the rows themselves.
    """

    USERS, ITEMS, SCENARIOS, PAIRS, COUNTERS, QUARANTINE = (
        "users",
        "items",
        "scenarios",
        "pairs",
        "counters",
        "quarantine",
    )

    def __init__(self, ctx: ExtractContext):
        self._ctx = ctx

    def start_bundle(self):
        self._users = L.FeatureTableCombine("user id")
        self._items = L.FeatureTableCombine("item id")
        self._scenarios = L.FeatureTableCombine("scenario")
        self._acc = {self.USERS: [], self.ITEMS: [], self.SCENARIOS: []}
        self._pairs: list = []
        self._counters: list = []

    def process(self, cols: dict):
        out = extract_batch(cols, self._ctx)
        for shard, rows in out["shards"]:
            yield shard, rows
        self._acc[self.USERS] = self._users.add_input(self._acc[self.USERS], out["users"])
        self._acc[self.ITEMS] = self._items.add_input(self._acc[self.ITEMS], out["items"])
        if "scenarios" in out:
            self._acc[self.SCENARIOS] = self._scenarios.add_input(self._acc[self.SCENARIOS], out["scenarios"])
            self._pairs = [unique_pairs(np.concatenate(self._pairs + [out["pairs"]]))]
        self._counters.append(out["counters"])
        for line in out["quarantine"]:
            yield beam.pvalue.TaggedOutput(self.QUARANTINE, line)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        def emit(tag, value):
            return beam.pvalue.TaggedOutput(tag, WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()]))

        for tag, combine in ((self.USERS, self._users), (self.ITEMS, self._items), (self.SCENARIOS, self._scenarios)):
            if self._acc[tag]:
                yield emit(tag, combine.extract_output(self._acc[tag]))
        if self._pairs:
            yield emit(self.PAIRS, self._pairs[0])
        if self._counters:
            yield emit(self.COUNTERS, common.sum_counters(self._counters))


class _TableCombine(beam.CombineFn):
    def __init__(self, what: str):
        self._impl = L.FeatureTableCombine(what)

    def create_accumulator(self):
        return self._impl.create_accumulator()

    def add_input(self, acc, table):
        return self._impl.add_input(acc, table)

    def merge_accumulators(self, accs):
        return self._impl.merge_accumulators(accs)

    def extract_output(self, acc):
        return self._impl.extract_output(acc)


class _PairsCombine(beam.CombineFn):
    def create_accumulator(self):
        return []

    def add_input(self, acc, pairs):
        acc.append(pairs)
        if len(acc) > 64:
            acc = [unique_pairs(np.concatenate(acc))]
        return acc

    def merge_accumulators(self, accs):
        parts = [p for acc in accs for p in acc]
        return [unique_pairs(np.concatenate(parts))] if parts else []

    def extract_output(self, acc):
        return unique_pairs(np.concatenate(acc)) if acc else np.zeros((0, 2), np.uint64)


# --- plan ---------------------------------------------------------------------------------------------------------------
def plan_tasks(
    _,
    ctx: ExtractContext,
    users: L.FeatureTable | None,
    items: L.FeatureTable | None,
    scenarios: L.FeatureTable | None,
    pairs: np.ndarray | None,
) -> L.TaskPlan:
    config = ctx.config
    empty = np.zeros(0, np.uint64)
    if config.setting == "user":
        if users is None:
            return L.make_plan(
                empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config
            )
        return L.make_plan(users.hashes, users.keys, users.counts, users.counts, config)
    if ctx.scenario_source == "column":
        if scenarios is None:
            return L.make_plan(
                empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config
            )
        uniq, n_items = np.unique(pairs[:, 0], return_counts=True) if len(pairs) else (empty, empty.astype(np.int64))
        aligned = np.zeros(len(scenarios), dtype=np.int64)
        aligned[np.searchsorted(scenarios.hashes, uniq)] = n_items
        return L.make_plan(scenarios.hashes, scenarios.keys, scenarios.counts, aligned, config)
    if items is None:
        plan = L.make_plan(
            empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config
        )
        plan.row_stats = {
            "rows_written": 0,
            "filtered": {L.NO_SCENARIO: 0, L.OUT_OF_BOUNDS: 0},
            "memberships_expected": 0,
        }
        return plan
    return L.theme_plan(items, ctx.theme_vocab, config)


# --- build -----------------------------------------------------------------------------------------------------------------
class _BuildShard(beam.DoFn):
    """All rows of one shard -> task records per split (one file each) + a summary."""

    def __init__(self, ctx: ExtractContext, output_dir: str):
        self._ctx = ctx
        self._output_dir = output_dir

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._encode = example_coder.RecordBatchToExamples

    def process(self, element, plan: L.TaskPlan, users: L.FeatureTable, items: L.FeatureTable):
        shard, parts = element
        parts = list(parts)
        config = self._ctx.config
        rows = L.ShardRows.concat(parts)
        build = L.build_user_tasks if config.setting == "user" else L.build_scenario_tasks
        blocks, counters, index = build(rows, plan, users, items, config)
        specs = [E.FeatureSpec(f.name, f.side, f.kind, f.vocab_size, 1) for f in self._ctx.features]
        for split, block in blocks.items():
            name = f"tasks-{shard:05d}-of-{config.num_shards:05d}.tfrecord" + (
                ".gz" if config.compression == "GZIP" else ""
            )
            with common.TFRecordFile(os.path.join(T.split_dir(self._output_dir, split), name), config.compression) as f:
                for chunk in block.chunks(RECORD_CHUNK_ROWS):
                    f.write(self._encode(chunk.record_batch(config.setting, users, items, specs)))
        yield {"counters": counters, "index": index}


class _SummaryCombine(beam.CombineFn):
    def create_accumulator(self):
        return {"counters": {}, "index": []}

    def add_input(self, acc, s):
        acc["counters"] = common.sum_counters([acc["counters"], s["counters"]])
        acc["index"].extend(s["index"])
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


# --- finalize ----------------------------------------------------------------------------------------------------------------
class ConservationError(RuntimeError):
    """Rows in != rows written + filtered + quarantined."""


def finalize(
    summary: dict,
    ctx: ExtractContext,
    output_dir: str,
    extract: dict,
    plan: L.TaskPlan,
    users: L.FeatureTable | None,
    items: L.FeatureTable | None,
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
    index = sorted(summary["index"], key=lambda r: (T.SPLITS.index(r[1]), r[0]))
    with open(os.path.join(output_dir, INDEX_FILE), "w", encoding="utf-8") as f:
        f.write("task_key\tsplit\trows\tsupport\tquery\tusers\titems\n")
        for r in index:
            f.write("\t".join(str(x).replace("\t", " ") for x in r) + "\n")
    common.write_json(os.path.join(output_dir, STATS_FILE), stats)
    if not ok:
        raise ConservationError(
            f"TaskGen row accounting does not add up: {json.dumps(checks, sort_keys=True)} "
            f"(rows in {rows_in}; written {rows_written_total}; filtered {filtered}; quarantined {quarantined})"
        )
    return stats


# --- the pipeline -------------------------------------------------------------------------------------------------------------
def build_pipeline(batches: beam.PCollection, ctx: ExtractContext, output_dir: str) -> beam.PCollection:
    """Adds TaskGen's graph after a PCollection of column batches; returns the final stats."""
    p = batches.pipeline
    ext = batches | "Extract" >> beam.ParDo(_Extract(ctx)).with_outputs(
        _Extract.USERS,
        _Extract.ITEMS,
        _Extract.SCENARIOS,
        _Extract.PAIRS,
        _Extract.COUNTERS,
        _Extract.QUARANTINE,
        main="rows",
    )
    users = ext[_Extract.USERS] | "MergeUsers" >> beam.CombineGlobally(_TableCombine("user id"))
    items = ext[_Extract.ITEMS] | "MergeItems" >> beam.CombineGlobally(_TableCombine("item id"))
    scenarios = ext[_Extract.SCENARIOS] | "MergeScenarios" >> beam.CombineGlobally(_TableCombine("scenario"))
    pairs = ext[_Extract.PAIRS] | "MergePairs" >> beam.CombineGlobally(_PairsCombine())
    counters = ext[_Extract.COUNTERS] | "SumCounters" >> beam.CombineGlobally(common.sum_counters)
    plan = (
        p
        | "PlanSeed" >> beam.Create([None])
        | "Plan"
        >> beam.Map(
            plan_tasks,
            ctx,
            beam.pvalue.AsSingleton(users),
            beam.pvalue.AsSingleton(items),
            beam.pvalue.AsSingleton(scenarios),
            beam.pvalue.AsSingleton(pairs),
        )
    )
    summaries = (
        ext["rows"]
        | "GroupByShard" >> beam.GroupByKey()
        | "BuildShard"
        >> beam.ParDo(
            _BuildShard(ctx, output_dir),
            beam.pvalue.AsSingleton(plan),
            beam.pvalue.AsSingleton(users),
            beam.pvalue.AsSingleton(items),
        )
        | "MergeSummaries" >> beam.CombineGlobally(_SummaryCombine())
    )
    (
        ext[_Extract.QUARANTINE]
        | "WriteQuarantine"
        >> beam.io.WriteToText(
            os.path.join(output_dir, QUARANTINE_DIR, "rows"),
            file_name_suffix=".jsonl",
            num_shards=1,
            shard_name_template="-SSSSS-of-NNNNN",
        )
    )
    return summaries | "Finalize" >> beam.Map(
        finalize,
        ctx,
        output_dir,
        beam.pvalue.AsSingleton(counters),
        beam.pvalue.AsSingleton(plan),
        beam.pvalue.AsSingleton(users),
        beam.pvalue.AsSingleton(items),
    )


class _SpecFn:
    """Picklable factory of the parse spec (tf objects are built in the worker)."""

    def __init__(self, features, with_scenario, with_domain):
        self.args = (tuple(features), with_scenario, with_domain)

    def __call__(self):
        return parse_spec(*self.args)


def run_task_gen(
    source: Sequence[str] | Sequence[dict],
    output_dir: str,
    config: L.TaskGenConfig,
    features: Sequence[FeatureInfo],
    theme_vocab: L.ThemeVocab | None = None,
    scenario_source: str | None = None,
    with_domain: bool = False,
    beam_args: Sequence[str] | None = None,
    make_pipeline=None,
) -> dict:
    """Runs TaskGen's Beam pipeline outside TFX.

    Args:
      source: TFRecord files of transformed examples, or a few small in-memory column batches
        (they are pickled into the pipeline; write larger data with write_column_batches).
      scenario_source: 'column' or 'themes' for the scenario setting ('auto' must be resolved).
      beam_args: Beam pipeline arguments; by default the multi-processing DirectRunner (in-memory
        for files below ``config.in_memory_below_bytes``).
      make_pipeline: a factory of the Beam pipeline (TFX executors pass theirs); overrides beam_args.
    Returns:
      the content of taskgen_stats.json.
    """
    if config.setting == "scenario" and scenario_source not in ("column", "themes"):
        raise ValueError("scenario setting: pass scenario_source='column' or 'themes'")
    if config.setting == "scenario" and scenario_source == "themes" and theme_vocab is None:
        raise ValueError("scenario themes need the item vocabularies (theme_vocab)")
    ctx = ExtractContext(
        config, tuple(features), scenario_source if config.setting == "scenario" else None, theme_vocab
    )
    if make_pipeline is not None:
        pipeline = make_pipeline()
    else:
        files = list(source) if source and isinstance(source[0], str) else []
        pipeline = beam.Pipeline(argv=common.beam_args_for_input(beam_args, files, config.in_memory_below_bytes))
    with pipeline as p:
        if source and isinstance(source[0], str):
            spec_fn = _SpecFn(features, scenario_source == "column", with_domain)
            batches = (
                p
                | "Files" >> beam.Create(list(source))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadColumns" >> beam.ParDo(_ReadColumns(spec_fn, config.read_batch_size))
            )
        else:
            batches = p | "Batches" >> beam.Create(list(source))
        build_pipeline(batches, ctx, output_dir)
    with open(os.path.join(output_dir, STATS_FILE), encoding="utf-8") as f:
        return json.load(f)
