"""Pipeline configuration: one YAML file, every knob of every component in one place.

``load_config()`` starts from ``pipeline/configs/default.yaml`` (shipped with the package), merges a
user file over it (nested mappings merge key by key) and then command-line overrides. Sections
map one-to-one onto components; unknown keys are errors, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from cmml.errors import CmmlError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
SETTINGS = ("user", "scenario", "multi-domain")


class ConfigError(CmmlError):
    """A pipeline configuration file or override is invalid."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole pipeline's configuration (see ``configs/default.yaml`` for every key)."""

    name: str
    data: list  # one dataset spec (name, folder or CSV file), or several for multi-domain
    setting: str
    columns: str | None  # CSV logs: field=column mapping
    unknown_entities: str  # keep | quarantine: interactions whose user or item has no side-table row
    transform: dict  # Transform custom_config (feature overrides)
    taskgen: dict  # cmml.components.task_gen.config.TaskGenConfig fields
    model: dict  # cmml.models.config.CMMLConfig fields
    training: dict  # cmml.models.training.TrainingConfig fields + episode sizes
    retrieval: dict  # cmml.models.retrieval.RetrievalConfig: recommend's retrieval stage for large catalogs
    baseline: dict  # the blessing baseline: kind + its config + training
    evaluation: dict  # metric clipping and blessing rules
    serving: dict  # model name, serving base directory, warm-up
    beam: dict  # DirectRunner settings (or any Beam pipeline args)
    scenario: dict  # merged over model / training / baseline when the setting is scenario or multi-domain

    @property
    def task_setting(self) -> str:
        """TaskGen's setting: multi-domain tasks are scenario tasks over several sources."""
        return "user" if self.setting == "user" else "scenario"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _deep_update(base: dict, update: Mapping[str, Any]) -> dict:
    """Nested mappings merge key by key; anything else replaces. Section keys are checked by the
    components that read them (CMMLConfig, TaskGenConfig ...), with their own messages."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, error: type[Exception] = ConfigError) -> dict:
    """A YAML file whose top level is a mapping; ``error`` (naming the file) when it is not one."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise error(f"{path}: the top level must be a mapping")
    return values


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Default configuration, then the file at ``path``, then ``overrides`` (same structure).

    For the scenario and multi-domain settings the ``scenario`` section is merged over the defaults
    first, so the file and the overrides still have the last word.
    """
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    updates = ([read_yaml(path)] if path else []) + ([dict(overrides)] if overrides else [])
    for update in updates:
        unknown = sorted(set(update) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration section(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
    defaults = read_yaml(DEFAULT_CONFIG)
    merged = defaults
    for update in updates:
        merged = _deep_update(merged, update)
    values = defaults
    if merged["setting"] != "user":
        values = _deep_update(values, merged.get("scenario") or {})
    for update in updates:
        values = _deep_update(values, update)
    if isinstance(values["data"], str):
        values["data"] = [values["data"]]
    config = PipelineConfig(**values)
    _check(config)
    return config


def _check(config: PipelineConfig) -> None:
    if config.setting not in SETTINGS:
        raise ConfigError(f"setting {config.setting!r}: choose one of {', '.join(SETTINGS)}")
    unknown = sorted(set(config.scenario) - {"model", "training", "baseline"})
    if unknown:
        raise ConfigError(f"scenario: only model, training and baseline can be overridden, not {', '.join(unknown)}")
    if not config.data:
        raise ConfigError("data: give at least one dataset")
    if config.unknown_entities not in ("keep", "quarantine"):
        raise ConfigError(f"unknown_entities {config.unknown_entities!r}: choose keep or quarantine")
    if config.setting == "multi-domain" and len(config.data) < 2:
        raise ConfigError("setting multi-domain needs two or more datasets in 'data'")
    if config.setting != "multi-domain" and len(config.data) > 1:
        raise ConfigError(f"several datasets given for setting {config.setting!r}; only multi-domain combines datasets")
    # Validate the component sections early, with the components' own checks.
    from cmml.models.config import CMMLConfig

    try:
        CMMLConfig.from_dict({**config.model, "head": "rating" if config.setting == "user" else "ctr"})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from None
    from cmml.models.retrieval import RetrievalConfig

    if not isinstance(config.retrieval, Mapping):
        raise ConfigError(f"retrieval: give a mapping of RetrievalConfig keys, not {config.retrieval!r}")
    try:
        RetrievalConfig.from_dict(config.retrieval)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"retrieval: {exc}") from None


def data_sources(config: PipelineConfig):
    """LogExampleGen's sources: one per dataset (several: named domains, ids prefixed)."""
    from cmml.components.example_gen.sources import Source

    # a CSV log's ratings must lie on the rating scale predictions are clipped to (user setting)
    label_range = config.evaluation.get("rating_range") if config.setting == "user" else None
    label_range = tuple(float(x) for x in label_range) if label_range else None
    if len(config.data) == 1:
        return Source(str(config.data[0]), columns=config.columns, label_range=label_range)
    names = []
    for spec in config.data:
        name = re.sub(r"[^A-Za-z0-9]+", "", Path(str(spec)).name) or "data"
        while name in names:
            name += "x"
        names.append(name)
    return [
        Source(str(spec), name=name, columns=config.columns, label_range=label_range)
        for spec, name in zip(config.data, names)
    ]


def serving_base(config: PipelineConfig, output_dir: str) -> str:
    """TF Serving's ``--model_base_path``: ``<base>/<model_name>`` (versions go below it)."""
    base = config.serving.get("base_directory") or os.path.join(output_dir, "serving")
    return os.path.join(base, config.serving.get("model_name", "cmml"))
