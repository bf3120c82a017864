"""Runners: the local DAG runner (embedded default) and the Kubeflow Pipelines V2 compiler.

What a finished run produced is read back by :mod:`cmml.pipeline.runs`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

import cmml  # noqa: F401
from cmml.pipeline.config import PipelineConfig
from cmml.pipeline.pipeline import create_pipeline
from cmml.pipeline.runs import RunSummary, summarize_run


def run_local(
    config: PipelineConfig,
    output_dir: str,
    enable_cache: bool = True,
    data_only: bool = False,
    progress: TextIO | None = sys.stderr,
    verbose: bool = False,
) -> RunSummary:
    """Runs the pipeline with the LocalDagRunner (SQLite ML-Metadata, Beam DirectRunner).

    With ``progress``, one line per component goes there (:mod:`cmml.pipeline.console`); TFX's own
    INFO logs are shown only when ``verbose`` (warnings and errors always are).
    """
    from tfx import v1 as tfx

    from cmml.pipeline.console import run_output

    pipeline = create_pipeline(config, output_dir, local=True, enable_cache=enable_cache, data_only=data_only)
    start = time.time()
    with run_output(len(pipeline.components), progress, verbose):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return summarize_run(output_dir, pipeline.pipeline_info.pipeline_name, seconds=time.time() - start)


def compile_kubeflow(config: PipelineConfig, output_dir: str, output_file: str, image: str) -> str:
    """Compiles the pipeline to a Kubeflow Pipelines V2 pipeline-spec JSON file."""
    from tfx import v1 as tfx

    pipeline = create_pipeline(config, output_dir, local=False)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    runner.run(pipeline, write_out=True)
    return output_file
