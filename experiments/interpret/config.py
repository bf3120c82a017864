"""The interpretability studies' models, training and data settings (``interpret.yaml``)."""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Mapping

from cmml.experiments.suites import EXPERIMENTS_DIR, ExperimentError, check_keys
from cmml.pipeline.config import read_yaml

STUDY_FILE = EXPERIMENTS_DIR / "interpret.yaml"
SECTIONS = {"models": ("user", "soft", "scenario"), "training": ("user", "scenario"), "taskgen": ("user", "scenario")}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    models: dict  # 'user' (contexts), 'soft' (routes), 'scenario' (contexts): CMML configs
    training: dict  # per setting: TrainingConfig fields and episode sizes (epochs and patience: command line)
    taskgen: dict  # per setting: TaskGen overrides of the data path


def load_study_config(path: str | os.PathLike = STUDY_FILE) -> StudyConfig:
    """The study settings of ``path``; unknown or missing keys are errors naming the file and key."""
    values = check_keys(read_yaml(path, ExperimentError), ("features", *SECTIONS), str(path), required=tuple(SECTIONS))
    sections = {}
    for name, keys in SECTIONS.items():
        section = check_keys(values[name], keys, f"{path}: {name}", required=keys)
        for key, value in section.items():
            if not isinstance(value, Mapping):
                raise ExperimentError(f"{path}: {name}.{key}: expected a mapping, got {type(value).__name__}")
        sections[name] = copy.deepcopy({k: dict(v) for k, v in section.items()})
    return StudyConfig(**sections)
