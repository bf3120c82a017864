"""TaskGen's TFX executor: resolves its inputs and the scenario source, runs the Beam pipeline.

Inputs: LogExampleGen's interaction examples, Transform's transformed user and item tables and
its graph. Vocabulary sizes and names come from the transform graph; ``scenario_source='auto'``
becomes 'column' when the interactions carry a scenario. The pipeline runs on the DirectRunner in
multi-processing mode with 2 workers unless ``beam_pipeline_args`` say otherwise (in-memory for
inputs below ``TaskGenConfig.in_memory_below_bytes``, where worker start-up would dominate). The
row accounting is recorded as MLMD custom properties of the ``tasks`` artifact.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Iterable, Sequence

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from cmml.components import common
from cmml.components.common import ArtifactDict
from cmml.components.task_gen.beam_graph import run_task_gen
from cmml.components.task_gen.columns import DOMAIN, FeatureInfo
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.themes import ThemeVocab
from cmml.data import records as R
from cmml.models import preprocessing as TM
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T


def features_from_transform(tft_output, transform_config: dict | None) -> tuple[list[FeatureInfo], ThemeVocab]:
    """Features to copy (non-empty vocabularies) with their vocab sizes, and the theme vocabularies."""
    sizes = TM.feature_vocab_sizes(tft_output.transformed_metadata.schema)
    features, names = [], {}
    for f in TM.resolve_features(transform_config):
        if f.name not in sizes:
            raise ValueError(
                f"feature {f.name!r} of the transform config has no categorical int domain in the Transform output; "
                "pass TaskGen the same transform_config as Transform"
            )
        words = TM.vocabulary(tft_output, f)
        names[f.name] = tuple(words)
        if not words:  # nothing observed: the feature carries no information
            continue
        features.append(FeatureInfo(f.name, f.side, f.kind, sizes[f.name]))
    vocab = ThemeVocab(
        **{k: names.get(k, ()) for k in ("genres", "year", "directors", "actors", "writers", "rated", "tags")}
    )
    return features, vocab


def input_files(examples: types.Artifact, split_names: Iterable[str]) -> list[str]:
    """The data files of the given splits of an Examples artifact."""
    files = []
    for split in split_names:
        folder = artifact_utils.get_split_uri([examples], split)
        files += sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))
    return files


def first_rows_have(files: Sequence[str], feature: str) -> bool:
    """Does the first batch of interaction examples carry a non-empty ``feature`` (scenario, domain)?"""
    import tensorflow as tf

    for path in files[:1]:
        ds = (
            tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
            .take(4096)
            .batch(4096)
        )
        for batch in ds:
            parsed = tf.io.parse_example(batch, {feature: tf.io.FixedLenFeature([], tf.string, default_value=b"")})
            return bool(tf.reduce_any(tf.strings.length(parsed[feature]) > 0).numpy())
    return False


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs TaskGen's Beam pipeline on the interactions and the transformed tables (see the module docstring)."""

    def _make_beam_pipeline(self):
        if self._make_beam_pipeline_fn is None:
            self._beam_pipeline_args = common.default_beam_args(self._beam_pipeline_args)
        return super()._make_beam_pipeline()

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: dict[str, Any]) -> None:
        import tensorflow_transform as tft

        self._log_startup(input_dict, output_dict, exec_properties)
        config = TaskGenConfig.from_dict(json.loads(exec_properties.get("config") or "{}"))
        transform_config = json.loads(exec_properties.get("transform_config") or "{}")
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        entities = artifact_utils.get_single_instance(input_dict["entities"])
        graph = artifact_utils.get_single_instance(input_dict["transform_graph"])
        tasks = artifact_utils.get_single_instance(output_dict["tasks"])
        tft_output = tft.TFTransformOutput(graph.uri)
        features, vocab = features_from_transform(tft_output, transform_config)
        splits = config.splits or artifact_utils.decode_split_names(examples.split_names)
        files = input_files(examples, splits)
        if not files:
            raise FileNotFoundError(f"TaskGen: no interaction examples in splits {list(splits)} of {examples.uri}")
        tables = {side: input_files(entities, [split]) for side, split in (("user", "users"), ("item", "items"))}
        self._beam_pipeline_args = common.beam_args_for_input(
            self._beam_pipeline_args, files, config.in_memory_below_bytes, log=logging.info
        )
        scenario_source = None
        if config.setting == "scenario":
            scenario_source = config.scenario_source
            if scenario_source == "auto":
                scenario_source = "column" if first_rows_have(files, R.SCENARIO) else "themes"
        stats = run_task_gen(
            files,
            tables,
            tasks.uri,
            config,
            features,
            vocab,
            scenario_source,
            with_domain=first_rows_have(files, DOMAIN),
            make_pipeline=self._make_beam_pipeline,
        )
        tasks.set_int_custom_property("rows_in", stats["rows_in"])
        tasks.set_int_custom_property("rows_written", stats["rows_written"])
        tasks.set_int_custom_property("rows_filtered", stats["rows_filtered"])
        tasks.set_int_custom_property("rows_quarantined", stats["rows_quarantined"])
        for reason, count in stats["rows_filtered_by_reason"].items():
            tasks.set_int_custom_property(f"filtered_{common.mlmd_key(reason)}", count)
        for reason, count in stats["rows_quarantined_by_reason"].items():
            tasks.set_int_custom_property(f"quarantined_{common.mlmd_key(reason)}", count)
        for split, count in stats["tasks_by_split"].items():
            tasks.set_int_custom_property(f"tasks_{split}", count)
        tasks.set_int_custom_property("conservation_ok", int(stats["conservation_ok"]))
        tasks.split_names = artifact_utils.encode_split_names([s for s in T.SPLITS if stats["tasks_by_split"].get(s)])
        tasks.set_string_custom_property("setting", config.setting)
        tasks.set_string_custom_property("feature_specs_uri", os.path.join(tasks.uri, E.FEATURE_SPECS_FILE))
