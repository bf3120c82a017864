"""The CMML TFX pipeline, built once from a :class:`PipelineConfig`; runners only execute it.

LogExampleGen → StatisticsGen → ImportSchemaGen → ExampleValidator → ValidationGate
  → Transform → TaskGen → Trainer (CMML)  ┐
                        → Trainer (DCN)   ┴→ TaskEvaluator (blessing)
                             Trainer (CMML) → ServingValidator (warm-up, infra blessing)
                                            → Pusher (TF Serving layout)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tfx import v1 as tfx

import cmml  # noqa: F401
from cmml.pipeline.config import PipelineConfig, data_sources, serving_base

TRAINER_RUN_FN = "cmml.components.trainer.run_fn"


def beam_pipeline_args(config: PipelineConfig, local: bool = True) -> list[str]:
    """DirectRunner settings from the config (or whatever Beam args ``beam.extra_args`` gives).

    In a local run, inputs smaller than ``beam.in_memory_below_mb`` run the DirectRunner in memory:
    starting worker processes (each imports TensorFlow) would take longer than the work they share.
    """
    from cmml.components.common import beam_args_for_input

    beam = dict(config.beam)
    args = [
        f"--direct_running_mode={beam.get('direct_running_mode', 'multi_processing')}",
        f"--direct_num_workers={int(beam.get('direct_num_workers', 2))}",
    ] + [str(a) for a in beam.get("extra_args") or []]
    threshold = int(float(beam.get("in_memory_below_mb", 0)) * 1e6)
    files = _input_files(config) if (local and threshold) else None
    return beam_args_for_input(args, files, threshold) if files else args


def _input_files(config: PipelineConfig) -> list[str] | None:
    """Every file of the configured datasets (named ones resolved, the synthetic one generated on first
    use, as ExampleGen would); None when one is remote."""
    from cmml.data import open_dataset

    files = []
    for spec in map(str, config.data):
        if "://" in spec:
            return None
        path = Path(spec).expanduser()
        root = path if path.exists() else open_dataset(spec).root
        files += [str(f) for f in ([root] if root.is_file() else sorted(root.rglob("*"))) if f.is_file()]
    return files


def create_components(config: PipelineConfig, output_dir: str, data_only: bool = False) -> list:
    from cmml.components.evaluator.component import TaskEvaluator
    from cmml.components.example_gen.component import LogExampleGen
    from cmml.components.serving_validator.component import ServingValidator
    from cmml.components.task_gen.component import TaskGen
    from cmml.components.transform import make_transform
    from cmml.components.validation.component import validation_components

    example_gen = LogExampleGen(data_sources(config), unknown_entities=config.unknown_entities)
    validation = validation_components(example_gen.outputs["examples"], example_gen.outputs["entities"])
    transform = make_transform(
        example_gen.outputs["entities"], validation.entity_schema.outputs["schema"], config.transform
    )
    transform.add_upstream_node(validation.gate)  # nothing is transformed (or trained) past failed validation
    task_gen = TaskGen(
        example_gen.outputs["examples"],
        transform.outputs["transformed_examples"],
        transform.outputs["transform_graph"],
        config={**config.taskgen, "setting": config.task_setting},
        transform_config=config.transform,
    )
    task_gen.add_upstream_node(validation.gate)
    components = [example_gen, *validation.components, transform, task_gen]
    if data_only:
        return components

    setting = config.task_setting
    rating_range = config.evaluation.get("rating_range") if setting == "user" else None

    def trainer(kind: str, model: dict, training: dict, name: str, retrieval: dict | None = None):
        return tfx.components.Trainer(
            run_fn=TRAINER_RUN_FN,
            examples=task_gen.outputs["tasks"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(splits=["meta_train"]),
            eval_args=tfx.proto.EvalArgs(splits=["meta_valid"]),
            custom_config={
                "kind": kind,
                "setting": setting,
                "model": model,
                "training": training,
                "rating_range": rating_range,
                **({"retrieval": retrieval} if retrieval is not None else {}),
            },
        ).with_id(name)

    candidate = trainer("cmml", config.model, config.training, "Trainer", config.retrieval)
    from cmml.models.training import EPISODE_FIELDS

    episode_sizes = {k: v for k, v in config.training.items() if k in EPISODE_FIELDS}
    baseline = trainer(
        config.baseline.get("kind", "dcn"),
        config.baseline.get("config") or {},
        {**episode_sizes, **(config.baseline.get("training") or {})},
        "BaselineTrainer",
    )
    evaluator = TaskEvaluator(
        task_gen.outputs["tasks"], candidate.outputs["model"], baseline.outputs["model"], setting, config.evaluation
    )
    serving_check = ServingValidator(
        candidate.outputs["model"],
        example_gen.outputs["examples"],
        example_gen.outputs["entities"],
        int(config.serving.get("warmup_requests", 4)),
    )
    pusher = tfx.components.Pusher(
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=serving_check.outputs["blessing"],  # pushes the validated model with its warm-up records
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_base(config, output_dir))
        ),
    )
    return components + [candidate, baseline, evaluator, serving_check, pusher]


def metadata_path(output_dir: str) -> str:
    return os.path.join(output_dir, "pipeline", "metadata.sqlite")


def create_pipeline(
    config: PipelineConfig,
    output_dir: str,
    local: bool = True,
    enable_cache: bool = True,
    data_only: bool = False,
    extra_beam_args: Sequence[str] = (),
) -> tfx.dsl.Pipeline:
    """The pipeline rooted at ``<output_dir>/pipeline``.

    ``local``: ML-Metadata in SQLite under the root (LocalDagRunner); otherwise the orchestrator
    (Kubeflow) provides the metadata store and ``output_dir`` should be a shared location (gs://...).
    """
    # absolute local paths: components hand URIs to subprocesses (Beam workers, the serving check)
    output_dir = output_dir if "://" in output_dir else os.path.abspath(output_dir)
    root = os.path.join(output_dir, "pipeline")
    metadata = (
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path(output_dir)) if local else None
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.name + ("-data" if data_only else ""),
        pipeline_root=root,
        components=create_components(config, output_dir, data_only),
        enable_cache=enable_cache,
        metadata_connection_config=metadata,
        beam_pipeline_args=beam_pipeline_args(config, local) + list(extra_beam_args),
    )
