"""LogExampleGen's Beam executor: read blocks -> encode -> split, the entity tables, dead letters and stats.

Work is done per block of the log (an Arrow table of ~100k rows): tf.Examples are serialised by
tfx_bsl's C++ encoder from Arrow record batches, and ``Do`` writes each (block, split) to its own
file, so there is no Beam element per example. Each block also counts its user and item ids; the
sums meet the side tables once, in the step that writes the ``entities`` artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterator, List, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from cmml.components import common
from cmml.components.common import ArtifactDict
from cmml.components.example_gen.dead_letters import (
    DEAD_LETTER_DIR,
    DEAD_LETTER_PREFIX,
    STATS_FILE,
    finalize_stats,
    reject_record,
)
from cmml.components.example_gen.entities import (
    ENTITY_SPLITS,
    ITEMS,
    KEEP,
    UNKNOWN_ENTITY_RULES,
    USERS,
    SideTables,
    count_ids,
    entity_examples,
    entity_table,
    load_side_tables,
    merge_counts,
)
from cmml.components.example_gen.interactions import (
    Partitioner,
    interaction_batch,
    interaction_columns,
    unknown_entity_reasons,
)
from cmml.components.example_gen.sources import Source, parse_query
from cmml.data import records as R

ENTITY_STATS_FILE = "entity_stats.json"
ENTITIES_KEY = "entities"  # the output artifact of the user and item tables
UNKNOWN_ENTITIES_KEY = "unknown_entities"  # execution property: keep | quarantine


class _ReadBlock(beam.DoFn):
    """(source index, block number, file number, block range) -> the block's canonical rows.

    Only these descriptors travel through the runner; each worker reads its blocks from the file.
    """

    def __init__(self, sources: Sequence[Source]):
        self._sources = list(sources)

    def setup(self):
        self._datasets: dict = {}

    def process(self, element: tuple) -> Iterator[tuple]:
        index, k, file, block = element
        if index not in self._datasets:
            self._datasets[index] = self._sources[index].open()
        batch = self._datasets[index].read_block(file, block, on_error="collect")
        yield index, k, batch.table, batch.rejects, batch.blank_lines, batch.path, batch.lines


class _EncodeBlock(beam.DoFn):
    """One block -> serialised tf.Examples per output split, id counts, dead letters and counters.

    With ``split_dirs`` the DoFn writes each (block, split) to its own gzipped TFRecord file
    (deterministic name, written to a temp file and renamed, so a retried bundle overwrites
    instead of duplicating) and emits only counters: no Beam element per example. Without it,
    it emits ``(split name, [serialised examples])`` for the standard GenerateExamplesByBeam API.
    """

    REJECTS = "rejects"
    STATS = "stats"
    COUNTS = "counts"

    def __init__(
        self,
        sources: Sequence[Source],
        partitioner: Partitioner,
        unknown_entities: str,
        split_dirs: Dict[str, str] | None = None,
    ):
        self._sources = list(sources)
        self._partitioner = partitioner
        self._unknown_entities = unknown_entities
        self._split_dirs = split_dirs

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._encode = example_coder.RecordBatchToExamples

    def _write(self, split: str, name: str, records: List[bytes]) -> None:
        common.write_tfrecords(os.path.join(self._split_dirs[split], f"data_tfrecord-{name}.gz"), records)

    def process(self, element: tuple, side: Dict[int, SideTables]):
        index, block, table, rejects, blank_lines, path, lines = element
        source = self._sources[index]
        stats: dict = {"blank_lines": blank_lines, "rejected_by_kind": {}}
        columns = interaction_columns(table, source.name)
        reasons = unknown_entity_reasons(columns, side[index], self._unknown_entities)
        keep = reasons == None  # noqa: E711
        rejects = rejects + [
            R.RejectedRow(
                path,
                int(lines[r]) if lines is not None else -1,
                f"{columns[R.USER_ID][r]},{columns[R.ITEM_ID][r]},{columns[R.LABEL][r]}",
                reasons[r],
            )
            for r in np.flatnonzero(~keep)
        ]
        for r in rejects:
            yield beam.pvalue.TaggedOutput(self.REJECTS, reject_record(source, r))
            kind = R.reason_kind(r.reason)
            stats["rejected_by_kind"][kind] = stats["rejected_by_kind"].get(kind, 0) + 1
        stats["rows_ok"] = int(keep.sum())
        if stats["rows_ok"]:
            batch = interaction_batch(columns, keep)
            kept = pa.array(keep)
            for side_name, key in ((USERS, R.USER_ID), (ITEMS, R.ITEM_ID)):
                counts = count_ids(columns[key].filter(kept))
                yield beam.pvalue.TaggedOutput(self.COUNTS, ((index, side_name), counts))
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


class _SumIdCounts(beam.CombineFn):
    """((source index, side), id counts) -> {(source index, side): summed id counts}."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        key, counts = element
        acc[key] = merge_counts([acc[key], counts]) if key in acc else counts
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            for key, counts in acc.items():
                out[key] = merge_counts([out[key], counts]) if key in out else counts
        return out

    def extract_output(self, acc):
        return acc


def _write_entities(
    counts: dict, side: Dict[int, SideTables], sources: Sequence[Source], entity_dirs: Dict[str, str]
) -> dict:
    """Every source's user and item tables (side features + interaction counts) -> one file per split."""
    from tfx_bsl.coders import example_coder

    stats: dict = {}
    for index, source in enumerate(sources):
        for name in ENTITY_SPLITS:
            table, table_stats = entity_table(side[index].table(name), counts.get((index, name)), name)
            stats.setdefault(source.label(), {})[name] = table_stats
            records = example_coder.RecordBatchToExamples(entity_examples(table)) if table.num_rows else []
            common.write_tfrecords(os.path.join(entity_dirs[name], f"data_tfrecord-{index:03d}.gz"), records)
    totals = {name: {} for name in ENTITY_SPLITS}
    for per_source in stats.values():
        for name, table_stats in per_source.items():
            for k, v in table_stats.items():
                totals[name][k] = totals[name].get(k, 0) + v
    result = {"sources": stats, **totals}
    common.write_json(os.path.join(os.path.dirname(entity_dirs[USERS]), ENTITY_STATS_FILE), result)
    return result


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


def _unknown_entities(exec_properties: Dict[str, Any]) -> str:
    rule = exec_properties.get(UNKNOWN_ENTITIES_KEY) or KEEP
    if rule not in UNKNOWN_ENTITY_RULES:
        raise ValueError(f"unknown_entities must be one of {UNKNOWN_ENTITY_RULES}, got {rule!r}")
    return rule


def _encode_graph(
    pipeline: beam.Pipeline,
    exec_properties: Dict[str, Any],
    uri: str,
    split_dirs: Dict[str, str] | None,
    entity_dirs: Dict[str, str],
):
    """Read -> encode, the entity tables under ``entity_dirs``, dead letters and stats under ``uri``.

    Returns the encoded output and the partitioner.
    """
    sources, block_bytes, partitioner = _split_plan(exec_properties)
    rule = _unknown_entities(exec_properties)
    side, side_rejects, side_stats = {}, [], {}
    for i, source in enumerate(sources):
        side[i], rejects, side_stats[source.label()] = load_side_tables(source)
        side_rejects += [reject_record(source, r) for r in rejects]

    descriptors = [
        (i, k, file, block)
        for i, source in enumerate(sources)
        for k, (file, block) in enumerate(source.open().interaction_blocks(block_bytes))
    ]
    blocks = (
        pipeline
        | "Blocks" >> beam.Create(descriptors)
        | "SpreadBlocks" >> beam.Reshuffle()
        | "ReadBlocks" >> beam.ParDo(_ReadBlock(sources))
    )
    side_input = beam.pvalue.AsSingleton(pipeline | "SideTables" >> beam.Create([side]))
    encoded = blocks | "Encode" >> beam.ParDo(
        _EncodeBlock(sources, partitioner, rule, split_dirs), side_input
    ).with_outputs(_EncodeBlock.REJECTS, _EncodeBlock.STATS, _EncodeBlock.COUNTS, main="examples")
    (
        encoded[_EncodeBlock.COUNTS]
        | "SumIdCounts" >> beam.CombineGlobally(_SumIdCounts())
        | "WriteEntities" >> beam.Map(_write_entities, side_input, sources, entity_dirs)
    )
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
        "unknown_entities": rule,
    }
    (
        encoded[_EncodeBlock.STATS]
        | "SumStats" >> beam.CombineGlobally(common.sum_counters)
        | "AddInfo" >> beam.Map(lambda s: {**s, **extra})
        | "WriteStats" >> beam.Map(lambda stats, path: common.write_json(path, stats), os.path.join(uri, STATS_FILE))
    )
    return encoded, partitioner


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Beam executor of LogExampleGen (see the package docstring)."""

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
        entity_dirs = {name: os.path.join(uri, ENTITIES_KEY, f"Split-{name}") for name in ENTITY_SPLITS}
        for folder in entity_dirs.values():
            os.makedirs(folder, exist_ok=True)
        encoded, partitioner = _encode_graph(pipeline, exec_properties, uri, None, entity_dirs)
        result = {}
        for name in partitioner.split_names:
            result[name] = (
                encoded["examples"]
                | f"Select[{name}]" >> beam.Filter(lambda kv, n=name: kv[0] == n)
                | f"Unpack[{name}]" >> beam.FlatMap(lambda kv: kv[1])
            )
        return result

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: dict[str, Any]) -> None:
        from tfx.components.util import examples_utils

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[specs.EXAMPLES_KEY])
        _, _, partitioner = _split_plan(exec_properties)
        examples.split_names = artifact_utils.encode_split_names(partitioner.split_names)
        split_dirs = {name: artifact_utils.get_split_uri([examples], name) for name in partitioner.split_names}
        entities = artifact_utils.get_single_instance(output_dict[ENTITIES_KEY])
        entities.split_names = artifact_utils.encode_split_names(list(ENTITY_SPLITS))
        entity_dirs = {name: artifact_utils.get_split_uri([entities], name) for name in ENTITY_SPLITS}
        for folder in [*split_dirs.values(), *entity_dirs.values()]:  # an empty split still has its folder
            os.makedirs(folder, exist_ok=True)
        with self._make_beam_pipeline() as pipeline:
            _encode_graph(pipeline, exec_properties, examples.uri, split_dirs, entity_dirs)
        for artifact in (examples, entities):
            examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
            examples_utils.set_file_format(artifact, "tfrecords_gzip")
        with open(os.path.join(entities.uri, ENTITY_STATS_FILE), encoding="utf-8") as f:
            entity_stats = json.load(f)
        for name in ENTITY_SPLITS:
            for key, count in entity_stats[name].items():
                entities.set_int_custom_property(f"{name}_{key}", count)
        entities.set_string_custom_property("entity_stats_uri", os.path.join(entities.uri, ENTITY_STATS_FILE))

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
