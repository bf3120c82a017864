"""TaskGen's Apache Beam pipeline: interactions + transformed user and item tables -> per-task TFRecords
(:func:`run_task_gen`).

Beam graph (every element is a batch, a table or a shard, never one interaction)::

    interaction example files --ReadColumns (tf.data + tf.io.parse_example, 64k rows a batch)-->
    column batches --Extract--> (shard, PackedRows)     --GroupByKey(shard)--> BuildShard --> records
                            \\-> user / item key tables --merge, + features of the transformed tables-->
                                                           side inputs of Plan and BuildShard
                            \\-> task counts            --Plan (size filter + meta split)--> side input
                            \\-> quarantined rows       --> quarantine/rows-*.jsonl
    shard summaries --merge--> Finalize: conservation check, taskgen_stats.json, tasks.tsv,
                                         feature_specs.json

In a shard numpy sorts and slices the rows, assigns roles, and tfx_bsl's C++ encoder writes one
tf.Example per task (output layout and record format: ``schemas/task_records.md``). The TFX
executor runs :func:`run_task_gen`; tests and benchmarks can run it directly. Neither TFX nor
TensorFlow is imported at import time, so Beam workers start quickly.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from cmml.components import common
from cmml.components.task_gen.accounting import STATS_FILE, finalize
from cmml.components.task_gen.columns import FeatureInfo, ReadColumns, entity_parse_spec, read_columns
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.extract import ExtractContext, extract_batch, unique_pairs
from cmml.components.task_gen.records import write_catalog, write_shard
from cmml.components.task_gen.rows import ShardRows
from cmml.components.task_gen.scenario_tasks import build_scenario_tasks
from cmml.components.task_gen.splits import NO_SCENARIO, OUT_OF_BOUNDS, TaskPlan, make_plan
from cmml.components.task_gen.tables import FeatureTable, FeatureTableCombine, entity_table, with_features
from cmml.components.task_gen.themes import ThemeVocab, theme_plan
from cmml.components.task_gen.user_tasks import build_user_tasks
from cmml.models import preprocessing as TM

QUARANTINE_DIR = "quarantine"


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
        self._users = FeatureTableCombine("user id")
        self._items = FeatureTableCombine("item id")
        self._scenarios = FeatureTableCombine("scenario")
        self._acc = {self.USERS: [], self.ITEMS: [], self.SCENARIOS: []}
        self._pairs: list = []
        self._counters: list = []

    def process(self, cols: dict, item_table: FeatureTable | None = None):
        out = extract_batch(cols, self._ctx, item_table)
        yield from out["shards"]
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


def plan_tasks(
    _,
    ctx: ExtractContext,
    users: FeatureTable | None,
    items: FeatureTable | None,
    scenarios: FeatureTable | None,
    pairs: np.ndarray | None,
) -> TaskPlan:
    config = ctx.config
    empty = np.zeros(0, np.uint64)
    if config.setting == "user":
        if users is None:
            return make_plan(
                empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config
            )
        return make_plan(users.hashes, users.keys, users.counts, users.counts, config)
    if ctx.scenario_source == "column":
        if scenarios is None:
            return make_plan(
                empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config
            )
        uniq, n_items = np.unique(pairs[:, 0], return_counts=True) if len(pairs) else (empty, empty.astype(np.int64))
        aligned = np.zeros(len(scenarios), dtype=np.int64)
        aligned[np.searchsorted(scenarios.hashes, uniq)] = n_items
        return make_plan(scenarios.hashes, scenarios.keys, scenarios.counts, aligned, config)
    if items is None:
        plan = make_plan(empty, pa.array([], pa.large_binary()), empty.astype(np.int64), empty.astype(np.int64), config)
        plan.row_stats = {
            "rows_written": 0,
            "filtered": {NO_SCENARIO: 0, OUT_OF_BOUNDS: 0},
            "memberships_expected": 0,
        }
        return plan
    return theme_plan(items, ctx.theme_vocab, config)


class _BuildShard(beam.DoFn):
    """All rows of one shard -> task records per split (one file each) + a summary."""

    def __init__(self, ctx: ExtractContext, output_dir: str):
        self._ctx = ctx
        self._output_dir = output_dir

    def process(self, element, plan: TaskPlan, users: FeatureTable, items: FeatureTable):
        shard, parts = element
        parts = list(parts)
        config = self._ctx.config
        rows = ShardRows.concat(parts)
        build = build_user_tasks if config.setting == "user" else build_scenario_tasks
        blocks, counters, index = build(rows, plan, users, items, config)
        write_shard(blocks, shard, self._output_dir, config, users, items)
        yield {"counters": counters, "index": index}


def _with_features(keys: FeatureTable | None, table: FeatureTable) -> FeatureTable | None:
    return None if keys is None else with_features(keys, table)


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


def load_entity_table(source: Sequence[str] | FeatureTable, side: str, features: Sequence[FeatureInfo], batch: int):
    """A transformed user or item table from its files (or as given) -> a deduplicated FeatureTable."""
    if isinstance(source, FeatureTable):
        return source
    key = TM.RAW_USER_ID if side == "user" else TM.RAW_ITEM_ID
    names = [f.name for f in features if f.side == side]
    return entity_table(list(read_columns(list(source), entity_parse_spec(side, features), batch)), key, names)


def build_pipeline(
    batches: beam.PCollection, ctx: ExtractContext, output_dir: str, entities: dict[str, object]
) -> beam.PCollection:
    """Adds TaskGen's graph after a PCollection of column batches; returns the final stats.

    ``entities``: per side ('user', 'item'), the transformed table's files or a FeatureTable.
    """
    p = batches.pipeline
    tables = {
        side: beam.pvalue.AsSingleton(
            p
            | f"{side.title()}TableSource" >> beam.Create([entities[side]])
            | f"Load{side.title()}Table" >> beam.Map(load_entity_table, side, ctx.features, ctx.config.read_batch_size)
        )
        for side in ("user", "item")
    }
    themes = ctx.scenario_source == "themes"
    extract = beam.ParDo(_Extract(ctx), tables["item"]) if themes else beam.ParDo(_Extract(ctx))
    ext = batches | "Extract" >> extract.with_outputs(
        _Extract.USERS,
        _Extract.ITEMS,
        _Extract.SCENARIOS,
        _Extract.PAIRS,
        _Extract.COUNTERS,
        _Extract.QUARANTINE,
        main="rows",
    )
    users = (
        ext[_Extract.USERS]
        | "MergeUsers" >> beam.CombineGlobally(FeatureTableCombine("user id"))
        | "UserFeatures" >> beam.Map(_with_features, tables["user"])
    )
    items = (
        ext[_Extract.ITEMS]
        | "MergeItems" >> beam.CombineGlobally(FeatureTableCombine("item id"))
        | "ItemFeatures" >> beam.Map(_with_features, tables["item"])
    )
    scenarios = ext[_Extract.SCENARIOS] | "MergeScenarios" >> beam.CombineGlobally(FeatureTableCombine("scenario"))
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
    (
        p
        | "CatalogSeed" >> beam.Create([None])
        | "WriteCatalog" >> beam.Map(lambda _, u, i: write_catalog(output_dir, u, i), tables["user"], tables["item"])
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


def run_task_gen(
    source: Sequence[str] | Sequence[dict],
    entities: dict[str, Sequence[str] | FeatureTable],
    output_dir: str,
    config: TaskGenConfig,
    features: Sequence[FeatureInfo],
    theme_vocab: ThemeVocab | None = None,
    scenario_source: str | None = None,
    with_domain: bool = False,
    beam_args: Sequence[str] | None = None,
    make_pipeline=None,
) -> dict:
    """Runs TaskGen's Beam pipeline outside TFX.

    Args:
      source: TFRecord files of LogExampleGen's interaction examples, or a few small in-memory
        column batches (they are pickled into the pipeline; write larger data to files).
      entities: the transformed user and item tables: ``{'user': files, 'item': files}`` (Transform's
        ``transformed_examples`` splits ``users`` and ``items``), or FeatureTables.
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
            batches = (
                p
                | "Files" >> beam.Create(list(source))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadColumns"
                >> beam.ParDo(ReadColumns(scenario_source == "column", with_domain, config.read_batch_size))
            )
        else:
            batches = p | "Batches" >> beam.Create(list(source))
        build_pipeline(batches, ctx, output_dir, entities)
    with open(os.path.join(output_dir, STATS_FILE), encoding="utf-8") as f:
        return json.load(f)
