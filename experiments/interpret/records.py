"""Task records for the studies, made by the pipeline's own data path (cached on re-runs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from cmml.experiments.interpret.config import StudyConfig
from cmml.pipeline.config import PipelineConfig, load_config

Log = Callable[[str], None]


def run_data_path(config: PipelineConfig, output: Path, log: Log) -> str:
    """Runs LogExampleGen → validation → Transform → TaskGen (cached on re-runs); returns TaskGen's folder."""
    from cmml.pipeline.runner import run_local

    summary = run_local(config, str(output), data_only=True, progress=sys.stdout)
    tasks = summary.tasks
    log(
        f"task records: {tasks.get('tasks_meta_train', 0)} meta-train, {tasks.get('tasks_meta_valid', 0)} meta-valid, "
        f"{tasks.get('tasks_meta_test', 0)} meta-test"
    )
    return os.path.dirname(tasks["feature_specs_uri"])


def _beam(workers: int) -> dict:
    return (
        {"direct_running_mode": "in_memory", "direct_num_workers": 1}
        if workers <= 1
        else {"direct_running_mode": "multi_processing", "direct_num_workers": workers}
    )


def synthetic_users(work: Path, users: int, seed: int, log: Log) -> Path:
    """Synthetic data with planted groups, generated once per size and seed under ``work``."""
    from cmml.data import synthetic

    data = work / f"synthetic-u{users}-s{seed}"
    cfg = synthetic.SyntheticConfig(users=users, seed=seed)
    stamp = data / "synthetic.json"
    if not (stamp.exists() and json.loads(stamp.read_text())["config"] == json.loads(json.dumps(cfg.__dict__))):
        log(f"generating synthetic data: {users} users (seed {seed}) in {data}")
        synthetic.generate(data, cfg, progress=None)
    return data


def user_pipeline(data: Path, study: StudyConfig, beam_workers: int = 1) -> PipelineConfig:
    """The data path's configuration for user-setting tasks of ``data``."""
    overrides = {
        "name": "interpret-users",
        "data": str(data),
        "setting": "user",
        "taskgen": dict(study.taskgen["user"]),
        "beam": _beam(beam_workers),
    }
    return load_config(overrides=overrides)


def scenario_pipeline(data: str | os.PathLike, study: StudyConfig, beam_workers: int = 1) -> PipelineConfig:
    """The data path's configuration for scenario-setting tasks: MovieLens themes of ``data``."""
    overrides = {
        "name": "interpret-scenario",
        "data": str(data),
        "setting": "scenario",
        "taskgen": dict(study.taskgen["scenario"]),
        "beam": _beam(beam_workers),
    }
    return load_config(overrides=overrides)
