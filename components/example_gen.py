"""LogExampleGen: interaction logs -> joined tf.Examples, with a dead-letter output and row accounting.

A custom ExampleGen (a QueryBasedExampleGen whose "query" names the datasets to read). It reads
logs through the Foundation readers (:mod:`cmml.data`: MovieLens ``::`` and tab files, the
ML-1M-partial CSV, CSV logs with a column mapping, the synthetic generator), joins the user and
item side features (small tables, Beam side inputs) and writes one tf.Example per interaction
with the canonical feature names of ``schemas/example.pbtxt``.

Work is done per block of the log (an Arrow table of ~100k rows), never per row in Python:
joins are Arrow ``index_in`` / ``take``, and tf.Examples are serialised by tfx_bsl's C++ encoder
from Arrow record batches. Splits follow TFX's output split config; by default the examples are
partitioned 2:1 into ``train`` / ``eval`` by the hash of ``user_id`` with exactly the bucket
function of TFX's own ExampleGen (sha256 of the serialised partition feature).

Outputs, under the ``examples`` artifact URI:

* ``Split-<name>/data_tfrecord-*.gz`` — the examples (TFX layout, read by StatisticsGen, Transform);
* ``dead_letter/rejected-*.jsonl`` — one JSON object per malformed row: ``source``, ``file``,
  ``line``, ``kind``, ``reason``, ``text`` (the raw line);
* ``ingest_stats.json`` — rows in / ok / rejected by kind, examples per split, join coverage.

The same counts are set as MLMD custom properties of the examples artifact (``rows_in``,
``rows_ok``, ``rows_rejected``, ``rejected_<kind>``, ``examples_<split>``). The executor fails if
``rows_in != rows_ok + rows_rejected`` or if the examples written differ from ``rows_ok``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen.component import QueryBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from cmml.components import common
from cmml.data import records as R

QUERY_VERSION = 1
DEAD_LETTER_DIR = "dead_letter"
DEAD_LETTER_PREFIX = "rejected"
STATS_FILE = "ingest_stats.json"
DEFAULT_BLOCK_BYTES = 4 << 20
INPUT_SPLIT_NAME = "train"  # the one input "split" (all rows) before the output split config
DEFAULT_PARTITION_FEATURE = R.USER_ID
DOMAIN = "domain"

# Features written to the examples, in schema order (title is free text and is not a model input).
INTERACTION_FEATURES = (R.USER_ID, R.ITEM_ID, R.LABEL, R.TIMESTAMP, R.SCENARIO, R.TASK_KEY, DOMAIN)
USER_FEATURES = R.USER_FEATURES
ITEM_FEATURES = tuple(f for f in R.ITEM_FEATURES if f != "title")
PARTITION_FEATURES = (R.USER_ID, R.ITEM_ID, R.SCENARIO, R.TASK_KEY, DOMAIN)


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset to ingest.

    Attributes:
      data: a dataset name, a dataset folder, or a delimited log file (see ``cmml.data.open_dataset``).
      name: domain name. When set, user ids, item ids and scenarios are prefixed with ``<name>:``
        and every example carries a ``domain`` feature, so that several datasets can be
        concatenated with disjoint id spaces (multi-domain tasks).
      columns / delimiter / label_range / users_path / items_path: for a CSV log (column mapping,
        field separator, accepted label range, side-feature files).
    """

    data: str
    name: str | None = None
    columns: str | dict | None = None
    delimiter: str = ","
    label_range: tuple[float, float] | None = None
    users_path: str | None = None
    items_path: str | None = None

    def open(self):
        from cmml.data import open_dataset

        label_range = tuple(self.label_range) if self.label_range is not None else None
        return open_dataset(
            self.data,
            columns=self.columns,
            delimiter=self.delimiter,
            label_range=label_range,
            users_path=self.users_path,
            items_path=self.items_path,
            progress=None,
        )

    def label(self) -> str:
        return self.name or str(self.data)


def make_query(sources: Sequence[Source], block_bytes: int = DEFAULT_BLOCK_BYTES) -> str:
    """The JSON "query" of the component: what to read, plus a fingerprint of the input files.

    The fingerprint (sizes and modification times) is part of the execution properties, so TFX's
    cache is invalidated when the data on disk changes.
    """
    if not sources:
        raise ValueError("LogExampleGen needs at least one source")
    names = [s.name for s in sources]
    if len(sources) > 1 and (any(n is None for n in names) or len(set(names)) != len(names)):
        raise ValueError(f"several sources need distinct names (domains) to keep their ids apart, got {names}")
    fingerprint = []
    resolved = []
    for s in sources:
        ds = s.open()  # resolves names such as 'synthetic' to folders and fails early on bad paths
        data = str(getattr(ds, "log_path", ds.root))
        resolved.append(dataclasses.replace(s, data=data))
        files = [p for p, _ in ds.interaction_sources()]
        files += [Path(p) for p in (s.users_path, s.items_path) if p]
        if ds.root.is_dir() and not hasattr(ds, "log_path"):
            files += [p for p in sorted(ds.root.iterdir()) if p.is_file()]
        for p in sorted(set(files)):
            st = p.stat()
            fingerprint.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    payload = {
        "version": QUERY_VERSION,
        "sources": [dataclasses.asdict(s) for s in resolved],
        "block_bytes": int(block_bytes),
        "fingerprint": hashlib.sha256("\n".join(fingerprint).encode()).hexdigest(),
    }
    return json.dumps(payload, sort_keys=True)


def parse_query(text: str) -> tuple[list[Source], int]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"LogExampleGen input pattern is not the JSON made by make_query: {exc}") from None
    sources = []
    for d in payload["sources"]:
        if d.get("label_range") is not None:
            d["label_range"] = tuple(d["label_range"])
        sources.append(Source(**d))
    return sources, int(payload.get("block_bytes", DEFAULT_BLOCK_BYTES))


# --- side features ----------------------------------------------------------------------------------------
def _prefix(values: pa.Array | pa.ChunkedArray, name: str | None) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not name:
        return values
    return pc.binary_join_element_wise(pa.scalar(f"{name}:"), values, "")


@dataclasses.dataclass
class SideTables:
    """User and item side features of one source, keyed by (prefixed) id."""

    users: pa.Table
    items: pa.Table


def load_side_tables(source: Source) -> tuple[SideTables, list[R.RejectedRow], dict]:
    """Reads a source's side-feature files; bad rows are returned (dead letters), never raised."""
    ds = source.open()
    users, user_rejects = ds.read_users(on_error="collect")
    items, item_rejects = ds.read_items(on_error="collect")
    users = users.set_column(0, R.USER_ID, _prefix(users[R.USER_ID], source.name))
    items = items.set_column(0, R.ITEM_ID, _prefix(items[R.ITEM_ID], source.name))
    items = items.select([R.ITEM_ID, *ITEM_FEATURES])
    stats = {
        "users": {"rows": users.num_rows, "rejected": len(user_rejects)},
        "items": {"rows": items.num_rows, "rejected": len(item_rejects)},
    }
    return SideTables(users, items), user_rejects + item_rejects, stats


# --- encoding ------------------------------------------------------------------------------------------------
def _list_of_one(values: pa.Array) -> pa.ListArray:
    """Scalar column -> list column with one value per row; a null becomes a null list (missing)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_string(values.type):
        values = values.cast(pa.binary())
    elif pa.types.is_integer(values.type):
        values = values.cast(pa.int64())
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(valid, out=offsets[1:])
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets), values.drop_null(), mask=mask)


def _list_column(values: pa.Array) -> pa.ListArray:
    """list<string> column -> list<binary>; empty lists become null (the feature is missing)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    flat = pc.list_flatten(values).cast(pa.binary())
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    empty = lengths == 0
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(empty) if empty.any() else None)


def join_block(table: pa.Table, side: SideTables, domain: str | None) -> tuple[pa.RecordBatch, dict]:
    """Canonical interactions of one block + side tables -> list-typed columns for the encoder.

    Returns the record batch (one row per interaction, feature columns only; columns that are
    null in every row are left out) and join counters.
    """
    user_ids = _prefix(table[R.USER_ID], domain)
    item_ids = _prefix(table[R.ITEM_ID], domain)
    columns: dict[str, pa.Array] = {R.USER_ID: user_ids, R.ITEM_ID: item_ids, R.LABEL: table[R.LABEL]}
    for name in (R.TIMESTAMP, R.TASK_KEY):
        columns[name] = table[name]
    columns[R.SCENARIO] = _prefix(table[R.SCENARIO], domain) if domain else table[R.SCENARIO]
    if domain:
        columns[DOMAIN] = pa.array(np.full(table.num_rows, domain, dtype=object), pa.string())
    user_idx = pc.index_in(user_ids, value_set=side.users[R.USER_ID].combine_chunks())
    item_idx = pc.index_in(item_ids, value_set=side.items[R.ITEM_ID].combine_chunks())
    for name in USER_FEATURES:
        columns[name] = side.users[name].combine_chunks().take(user_idx)
    for name in ITEM_FEATURES:
        columns[name] = side.items[name].combine_chunks().take(item_idx)
    arrays, names = [], []
    for name, values in columns.items():
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if values.null_count == len(values):
            continue
        if pa.types.is_list(values.type):
            lst = _list_column(values)
            if lst.null_count == len(lst):
                continue
            arrays.append(lst)
        else:
            arrays.append(_list_of_one(values))
        names.append(name)
    counters = {
        "interactions_without_user_features": int(user_idx.null_count),
        "interactions_without_item_features": int(item_idx.null_count),
    }
    return pa.RecordBatch.from_arrays(arrays, names), counters


class Partitioner:
    """TFX ExampleGen's output split function, applied per block.

    Same buckets as ``tfx.components.example_gen.base_example_gen_executor._PartitionFn``:
    ``sha256(serialised partition feature) % total_buckets`` (or of the serialised example when no
    partition feature is configured), so a split here is the split stock ExampleGen would make.
    """

    def __init__(self, split_names: Sequence[str], hash_buckets: Sequence[int], feature: str | None):
        if feature is not None and feature not in PARTITION_FEATURES:
            raise ValueError(f"partition_feature_name must be one of {PARTITION_FEATURES}, got {feature!r}")
        self.split_names = list(split_names)
        self.cumulative = list(np.cumsum(hash_buckets)) if hash_buckets else []
        self.feature = feature

    @staticmethod
    def _feature_key(value: bytes) -> bytes:
        from tensorflow.core.example import feature_pb2

        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value])).SerializeToString(
            deterministic=True
        )

    def _bucket(self, key: bytes) -> int:
        return bisect.bisect(self.cumulative, int(hashlib.sha256(key).hexdigest(), 16) % self.cumulative[-1])

    def assign(self, batch: pa.RecordBatch, serialized: List[bytes]) -> np.ndarray:
        """Split index of every row of ``batch``."""
        n = batch.num_rows
        if not self.cumulative:
            return np.zeros(n, dtype=np.int64)
        if self.feature is None:
            return np.fromiter((self._bucket(s) for s in serialized), dtype=np.int64, count=n)
        if self.feature not in batch.schema.names:
            raise ValueError(f"partition feature {self.feature!r} is missing from the examples")
        column = batch.column(batch.schema.get_field_index(self.feature))
        if column.null_count:
            raise ValueError(f"partition feature {self.feature!r} has no value in {column.null_count} rows")
        encoded = pc.list_flatten(column).dictionary_encode()
        keys = encoded.dictionary.to_pylist()
        per_key = np.array([self._bucket(self._feature_key(k)) for k in keys], dtype=np.int64)
        return per_key[encoded.indices.to_numpy()]


def reject_record(source: Source, reject: R.RejectedRow) -> str:
    return json.dumps(
        {
            "source": source.label(),
            "file": reject.path,
            "line": reject.line,
            "kind": R.reason_kind(reject.reason),
            "reason": reject.reason,
            "text": reject.text,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


# --- Beam ----------------------------------------------------------------------------------------------------
class _ReadBlocks(beam.DoFn):
    """Source index -> (source index, block number, canonical table, rejects, blank lines) per block."""

    def __init__(self, sources: Sequence[Source], block_bytes: int):
        self._sources = list(sources)
        self._block_bytes = block_bytes

    def process(self, index: int) -> Iterator[tuple]:
        ds = self._sources[index].open()
        for k, batch in enumerate(ds.iter_interactions(on_error="collect", block_bytes=self._block_bytes)):
            yield index, k, batch.table, batch.rejects, batch.blank_lines


class _EncodeBlock(beam.DoFn):
    """One block -> serialised tf.Examples per output split, dead letters and counters.

    With ``split_dirs`` the DoFn writes each (block, split) to its own gzipped TFRecord file
    (deterministic name, written to a temp file and renamed, so a retried bundle overwrites
    instead of duplicating) and emits only counters: no Beam element per example. Without it,
    it emits ``(split name, [serialised examples])`` for the standard GenerateExamplesByBeam API.
    """

    REJECTS = "rejects"
    STATS = "stats"

    def __init__(self, sources: Sequence[Source], partitioner: Partitioner, split_dirs: Dict[str, str] | None = None):
        self._sources = list(sources)
        self._partitioner = partitioner
        self._split_dirs = split_dirs

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._encode = example_coder.RecordBatchToExamples

    def _write(self, split: str, name: str, records: List[bytes]) -> None:
        common.write_tfrecords(os.path.join(self._split_dirs[split], f"data_tfrecord-{name}.gz"), records)

    def process(self, element: tuple, side: Dict[int, SideTables]):
        index, block, table, rejects, blank_lines = element
        source = self._sources[index]
        for r in rejects:
            yield beam.pvalue.TaggedOutput(self.REJECTS, reject_record(source, r))
        stats: dict = {"rows_ok": table.num_rows, "blank_lines": blank_lines, "rejected_by_kind": {}}
        for r in rejects:
            kind = R.reason_kind(r.reason)
            stats["rejected_by_kind"][kind] = stats["rejected_by_kind"].get(kind, 0) + 1
        if table.num_rows:
            batch, join_counts = join_block(table, side[index], source.name)
            stats.update(join_counts)
            serialized = self._encode(batch)
            splits = self._partitioner.assign(batch, serialized)
            by_split = {}
            for s, split in enumerate(self._partitioner.split_names):
                rows = np.flatnonzero(splits == s)
                by_split[split] = int(len(rows))
                if not len(rows):
                    continue
                records = [serialized[i] for i in rows]
                if self._split_dirs is None:
                    yield split, records
                else:
                    self._write(split, f"{index:03d}-{block:06d}", records)
            stats["examples_by_split"] = by_split
        yield beam.pvalue.TaggedOutput(self.STATS, stats)


def _write_stats(stats: dict, path: str) -> None:
    common.write_json(path, stats)


def _split_plan(exec_properties: Dict[str, Any]) -> tuple[list[Source], int, Partitioner]:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[specs.INPUT_CONFIG_KEY], input_config)
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(exec_properties[specs.OUTPUT_CONFIG_KEY], output_config)
    if len(input_config.splits) != 1:
        raise ValueError("LogExampleGen takes exactly one input split (its query); use output_config to split")
    sources, block_bytes = parse_query(input_config.splits[0].pattern)
    split_config = output_config.split_config
    if split_config.splits:
        names = [s.name for s in split_config.splits]
        buckets = [s.hash_buckets for s in split_config.splits]
        feature = split_config.partition_feature_name or None
    else:
        names, buckets, feature = [input_config.splits[0].name], [], None
    return sources, block_bytes, Partitioner(names, buckets, feature)


def _encode_graph(
    pipeline: beam.Pipeline, exec_properties: Dict[str, Any], uri: str, split_dirs: Dict[str, str] | None
):
    """Read -> join -> encode, plus dead letters and stats under ``uri``. Returns the encoded output."""
    sources, block_bytes, partitioner = _split_plan(exec_properties)
    side, side_rejects, side_stats = {}, [], {}
    for i, source in enumerate(sources):
        side[i], rejects, side_stats[source.label()] = load_side_tables(source)
        side_rejects += [reject_record(source, r) for r in rejects]

    blocks = (
        pipeline
        | "Sources" >> beam.Create(list(range(len(sources))))
        | "ReadBlocks" >> beam.ParDo(_ReadBlocks(sources, block_bytes))
        | "SpreadBlocks" >> beam.Reshuffle()
    )
    side_input = beam.pvalue.AsSingleton(pipeline | "SideTables" >> beam.Create([side]))
    encoded = blocks | "JoinAndEncode" >> beam.ParDo(
        _EncodeBlock(sources, partitioner, split_dirs), side_input
    ).with_outputs(_EncodeBlock.REJECTS, _EncodeBlock.STATS, main="examples")
    (
        (encoded[_EncodeBlock.REJECTS], pipeline | "SideRejects" >> beam.Create(side_rejects))
        | "AllRejects" >> beam.Flatten()
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            os.path.join(uri, DEAD_LETTER_DIR, DEAD_LETTER_PREFIX),
            file_name_suffix=".jsonl",
            num_shards=1,
            shard_name_template="-SSSSS-of-NNNNN",
        )
    )
    extra = {
        "side_features": side_stats,
        "sources": [dataclasses.asdict(s) for s in sources],
        "splits": partitioner.split_names,
        "partition_feature": partitioner.feature,
    }
    (
        encoded[_EncodeBlock.STATS]
        | "SumStats" >> beam.CombineGlobally(common.sum_counters)
        | "AddInfo" >> beam.Map(lambda s: {**s, **extra})
        | "WriteStats" >> beam.Map(_write_stats, os.path.join(uri, STATS_FILE))
    )
    return encoded, partitioner


# --- TFX executor and component -----------------------------------------------------------------------------------
class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Beam executor of LogExampleGen (see the module docstring)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("LogExampleGen builds its whole Beam graph in GenerateExamplesByBeam")

    def _make_beam_pipeline(self):
        if self._make_beam_pipeline_fn is None:
            self._beam_pipeline_args = common.default_beam_args(self._beam_pipeline_args)
        return super()._make_beam_pipeline()

    def GenerateExamplesByBeam(
        self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
    ) -> Dict[str, beam.pvalue.PCollection]:
        """Standard ExampleGen API: split name -> PCollection of serialised tf.Examples.

        Dead letters and stats go under ``exec_properties['_output_uri']`` (default: a temp folder).
        ``Do`` does not use this per-example form: it writes whole blocks (see _EncodeBlock).
        """
        uri = exec_properties.get("_output_uri") or os.path.join(
            os.environ.get("TMPDIR", "/tmp"), "cmml-log-example-gen"
        )
        encoded, partitioner = _encode_graph(pipeline, exec_properties, uri, None)
        result = {}
        for name in partitioner.split_names:
            result[name] = (
                encoded["examples"]
                | f"Select[{name}]" >> beam.Filter(lambda kv, n=name: kv[0] == n)
                | f"Unpack[{name}]" >> beam.FlatMap(lambda kv: kv[1])
            )
        return result

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        from tfx.components.util import examples_utils

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[specs.EXAMPLES_KEY])
        _, _, partitioner = _split_plan(exec_properties)
        examples.split_names = artifact_utils.encode_split_names(partitioner.split_names)
        split_dirs = {name: artifact_utils.get_split_uri([examples], name) for name in partitioner.split_names}
        with self._make_beam_pipeline() as pipeline:
            _encode_graph(pipeline, exec_properties, examples.uri, split_dirs)
        for folder in split_dirs.values():  # a split may legitimately be empty; consumers still expect its folder
            os.makedirs(folder, exist_ok=True)
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")

        stats = finalize_stats(examples.uri)
        examples.set_int_custom_property("rows_in", stats["rows_in"])
        examples.set_int_custom_property("rows_ok", stats["rows_ok"])
        examples.set_int_custom_property("rows_rejected", stats["rows_rejected"])
        for kind, count in stats["rejected_by_kind"].items():
            examples.set_int_custom_property(f"rejected_{common.mlmd_key(kind)}", count)
        for split, count in stats["examples_by_split"].items():
            examples.set_int_custom_property(f"examples_{split}", count)
        examples.set_string_custom_property("dead_letter_uri", os.path.join(examples.uri, DEAD_LETTER_DIR))
        examples.set_string_custom_property("ingest_stats_uri", os.path.join(examples.uri, STATS_FILE))


def finalize_stats(uri: str) -> dict:
    """Completes ``ingest_stats.json`` with totals and checks the row accounting."""
    path = os.path.join(uri, STATS_FILE)
    with open(path, encoding="utf-8") as f:
        stats = json.load(f)
    stats.setdefault("rejected_by_kind", {})
    stats.setdefault("examples_by_split", dict.fromkeys(stats.get("splits", []), 0))
    stats["rows_rejected"] = int(sum(stats["rejected_by_kind"].values()))
    stats["rows_in"] = int(stats.get("rows_ok", 0) + stats["rows_rejected"])
    written = int(sum(stats["examples_by_split"].values()))
    if written != stats.get("rows_ok", 0):
        raise RuntimeError(
            f"LogExampleGen row accounting failed: {stats.get('rows_ok', 0)} rows parsed but {written} examples written ({path})"
        )
    common.write_json(path, stats)
    return stats


def read_dead_letters(examples_uri: str) -> list[dict]:
    """All dead-letter records of an examples artifact, sorted by (file, line)."""
    folder = Path(examples_uri) / DEAD_LETTER_DIR
    out = []
    for p in sorted(folder.glob(f"{DEAD_LETTER_PREFIX}*.jsonl")):
        out += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted(out, key=lambda d: (d["file"], d["line"]))


def default_output_config():
    """train : eval = 2 : 1, partitioned by user so that a user's interactions stay together."""
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ],
            partition_feature_name=DEFAULT_PARTITION_FEATURE,
        )
    )


class LogExampleGen(QueryBasedExampleGen):
    """ExampleGen for interaction logs read through ``cmml.data`` (see the module docstring).

    Example::

        gen = LogExampleGen("../shared/data/ml-1m-partial")
        multi = LogExampleGen([Source("/data/ml-100k", name="ml100k"), Source("/data/ml-1m-partial", name="ml1m")])
        csv = LogExampleGen(Source("clicks.csv", columns="user=uid,item=sku,label=click"))
    """

    def __init__(
        self,
        data: str | os.PathLike | Source | Sequence[Source],
        output_config=None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ):
        """
        Args:
          data: a dataset name/folder/log file, a :class:`Source`, or several named Sources
            (multi-domain: ids are prefixed with each source's name).
          output_config: TFX ``example_gen_pb2.Output``; default :func:`default_output_config`.
          block_bytes: size of the log blocks read and encoded as one unit.
        """
        if isinstance(data, Source):
            sources = [data]
        elif isinstance(data, (str, os.PathLike)):
            sources = [Source(os.fspath(data))]
        else:
            sources = list(data)
        query = make_query(sources, block_bytes)
        input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=INPUT_SPLIT_NAME, pattern=query)])
        super().__init__(
            input_config=input_config,
            output_config=output_config if output_config is not None else default_output_config(),
            custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
        )
