"""What the experiments run: suites of model rows, read from ``pipeline/configs/experiments/*.yaml``.

A suite is one table of RESULTS.md: a pipeline configuration (the data and the protocol), the
episode sizes and the model rows (:class:`ModelSpec`). The YAML files write every constant once
(anchors); :func:`load_suites` turns them into :class:`Suite` objects and rejects unknown keys,
kinds and settings with the file and the key named. This module imports no TensorFlow: the
command line and the renderer read it too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from cmml.errors import CmmlError
from cmml.pipeline.config import CONFIG_DIR, ConfigError, PipelineConfig, load_config, read_yaml

EXPERIMENTS_DIR = CONFIG_DIR / "experiments"
SUITES_FILE = EXPERIMENTS_DIR / "suites.yaml"
DATA_ROOT_VARIABLE = "CMML_SHARED_DATA"
# datasets `cmml data fetch` can download; any other one (ml-1m-partial is a research subset) is a folder to give
FETCHABLE = ("ml-100k", "ml-1m", "ml-20m")
FLOORS = ("global_mean", "item_mean", "bias", "item_pop")
KINDS = FLOORS + ("dcn", "maml", "cmml")
SETTINGS = ("user", "scenario")
CHECKS = ("users-v1",)  # protocol checks against the reference figures file
USER_COLUMNS = ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5")
SCENARIO_COLUMNS = ("recall@10", "recall@20", "recall@50")
LOWER_IS_BETTER = ("mae", "rmse")


class ExperimentError(CmmlError):
    """An experiment cannot run as specified (bad suite file, missing data, protocol check failed ...)."""


def metric_label(metric: str) -> str:
    """How a metric is written in tables: MAE, RMSE, NDCG@3, Recall@20."""
    return metric.upper() if metric in LOWER_IS_BETTER else metric.replace("ndcg", "NDCG").replace("recall", "Recall")


@dataclasses.dataclass
class ModelSpec:
    """One row (two for DCN: DCN and DCN-F) of a suite's table."""

    name: str
    kind: str  # one of KINDS
    config: dict = dataclasses.field(default_factory=dict)  # model config (CMMLConfig / DCNConfig / MAMLConfig fields)
    training: dict = dataclasses.field(default_factory=dict)  # TrainingConfig fields (epochs, patience, ema_decay)
    finetuned: str | None = None  # dcn: also report the fine-tuned DCN (DCN-F) under this name
    finetune_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)  # DCN-F: SGD rates, chosen on meta_valid
    candidates: tuple[dict, ...] = ()  # other model configs; the best on meta_valid (first seed) is kept
    selection_epochs: int | None = None  # epoch cap of the selection trainings (None: the model's own cap)
    group: str = ""  # ablation group
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model kind {self.kind!r}: use one of {', '.join(KINDS)}")

    @property
    def deterministic(self) -> bool:
        return self.kind in FLOORS

    def rows(self) -> list[str]:
        return [self.name] + ([self.finetuned] if self.finetuned else [])

    def fingerprint(self) -> str:
        """Changes whenever anything that decides this model's numbers changes (for --resume).

        CMML's catalog relevance head (``catalog_*`` keys) is left out: its inputs are held fixed and
        its variables come after the rating model's, so the rating model, and every figure of a suite's
        table, is the same with or without it (tests/test_models_cmml.py checks it)."""

        def rating_model(config):
            if self.kind != "cmml" or not isinstance(config, Mapping):
                return config
            return {k: v for k, v in config.items() if not k.startswith("catalog_")}

        candidates = [rating_model(c) for c in self.candidates]
        parts = [
            self.kind,
            rating_model(self.config),
            self.training,
            self.finetuned,
            list(self.finetune_grid),
            candidates,
        ]
        if self.selection_epochs is not None:
            parts.append(self.selection_epochs)
        payload = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclasses.dataclass
class Suite:
    """A table: data (a pipeline configuration), protocol, models."""

    name: str
    title: str
    setting: str  # 'user' or 'scenario'
    config_file: str | None  # pipeline YAML merged over the defaults (None: defaults only)
    overrides: dict  # pipeline config overrides (data, taskgen ...)
    models: list[ModelSpec]
    cache: str | None = None  # cache folder name under --cache-dir (default: the suite name)
    # batch_tasks, query_size | support/query positives, steps_per_epoch
    episodes: dict = dataclasses.field(default_factory=dict)
    check: str | None = None  # 'users-v1': verify the protocol check value of the reference figures file
    official: bool = False  # show the reference file's official-code figures next to the table
    notes: tuple[str, ...] = ()
    extra: Suite | None = None  # a second table run in the same suite (ablations: the scenario-setting rows)

    @property
    def columns(self) -> tuple[str, ...]:
        return USER_COLUMNS if self.setting == "user" else SCENARIO_COLUMNS

    def pipeline_config(self, beam: Mapping[str, Any] | None = None) -> PipelineConfig:
        """The suite's pipeline configuration, with ``beam`` as its Beam settings when given."""
        return load_pipeline_config(self.config_file, {**self.overrides, **({"beam": dict(beam)} if beam else {})})

    @property
    def rating_range(self) -> tuple[float, float] | None:
        """The user setting's rating scale (the pipeline config's ``evaluation.rating_range``); None for scenarios."""
        if self.setting != "user":
            return None
        low, high = self.pipeline_config().evaluation["rating_range"]
        return float(low), float(high)


def load_pipeline_config(config_file: str | None, overrides: Mapping[str, Any] | None) -> PipelineConfig:
    """A pipeline configuration: ``config_file`` (under pipeline/configs/ unless absolute) over the defaults,
    then ``overrides``."""
    path = None
    if config_file:
        path = Path(config_file)
        path = path if path.is_absolute() else CONFIG_DIR / path
    return load_config(path, dict(overrides or {}))


# --- where the datasets are -----------------------------------------------------------------------------------
def default_data_root() -> Path:
    """$CMML_SHARED_DATA when set, else the folder ``cmml data fetch`` fills (:func:`cmml.data.data_home`)."""
    if os.environ.get(DATA_ROOT_VARIABLE):
        return Path(os.environ[DATA_ROOT_VARIABLE])
    from cmml.data import data_home

    return data_home()


def missing_dataset(path: str | os.PathLike) -> str:
    """Why a suite's dataset folder is missing and how to get it."""
    path = Path(path)
    if path.name in FETCHABLE:
        how = f"get it with `cmml data fetch {path.name} --dest {path.parent}`, or pass --data-root DIR"
    else:
        how = "a research subset that cannot be downloaded: pass --data-root DIR"
    return f"dataset not found: {path} ({how}, the folder holding {path.name}/, or set {DATA_ROOT_VARIABLE})"


def check_data(suite: Suite) -> None:
    """Raises :class:`ExperimentError` (saying how to get it) when a dataset of the suite is not on disk."""
    for table in (suite, suite.extra):
        for path in table.overrides.get("data", []) if table else []:
            if not Path(path).exists():
                raise ExperimentError(missing_dataset(path))


# --- reading the YAML files -------------------------------------------------------------------------------------
def check_keys(values: Any, known: Any, where: str, required: tuple[str, ...] = ()) -> dict:
    """``values`` as a mapping with only ``known`` keys and every ``required`` one; ``where`` names file and key."""
    if not isinstance(values, Mapping):
        raise ExperimentError(f"{where}: expected a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ExperimentError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")
    missing = [k for k in required if k not in values]
    if missing:
        raise ExperimentError(f"{where}: missing key(s) {', '.join(missing)}")
    return dict(values)


@functools.cache
def _pipeline_values(file: str) -> dict:
    return load_pipeline_config(file, None).to_dict()


def pipeline_section(reference: str, where: str) -> dict:
    """``file.yaml#section.key``: that part of a pipeline configuration (merged over the defaults)."""
    file, _, section = reference.partition("#")
    if not file or not section:
        raise ExperimentError(f"{where}: 'from: {reference}' must read <pipeline config file>#<section>")
    try:
        value: Any = _pipeline_values(file)
    except ConfigError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    for key in section.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise ExperimentError(f"{where}: {file} has no section {section!r}")
        value = value[key]
    if not isinstance(value, Mapping):
        raise ExperimentError(f"{where}: {file}#{section} is not a mapping")
    return copy.deepcopy(dict(value))


def resolve(values: Any, where: str) -> dict:
    """A config mapping with its ``from`` / ``only`` reference replaced by the pipeline section it names."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ExperimentError(f"{where}: expected a mapping, got {type(values).__name__}")
    out = copy.deepcopy(dict(values))
    reference, only = out.pop("from", None), out.pop("only", None)
    if reference is None:
        if only is not None:
            raise ExperimentError(f"{where}: 'only' needs 'from'")
        return out
    base = pipeline_section(str(reference), where)
    if only is not None:
        absent = [k for k in only if k not in base]
        if absent:
            raise ExperimentError(f"{where}: {reference} has no key(s) {', '.join(absent)}")
        base = {k: base[k] for k in only}
    base.update(out)
    return base


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec))
SUITE_KEYS = tuple(f.name for f in dataclasses.fields(Suite) if f.name != "name")


def _model(values: Any, where: str) -> ModelSpec:
    spec = check_keys(values, MODEL_KEYS, where, required=("name", "kind"))
    if spec["kind"] not in KINDS:
        raise ExperimentError(f"{where}.kind: unknown model kind {spec['kind']!r}; use one of {', '.join(KINDS)}")
    for key in ("config", "training"):
        spec[key] = resolve(spec.get(key), f"{where}.{key}")
    candidates = spec.get("candidates") or ()
    if not isinstance(candidates, list | tuple):
        raise ExperimentError(f"{where}.candidates: expected a list of model configs")
    spec["candidates"] = tuple(resolve(c, f"{where}.candidates[{i}]") for i, c in enumerate(candidates))
    if "finetune_grid" in spec:
        spec["finetune_grid"] = tuple(spec["finetune_grid"])
    return ModelSpec(**spec)


def _suite(name: str, values: Any, where: str, data_root: Path) -> Suite:
    spec = check_keys(values, SUITE_KEYS, where, required=("title", "setting", "models"))
    if spec["setting"] not in SETTINGS:
        raise ExperimentError(f"{where}.setting: {spec['setting']!r} is not one of {', '.join(SETTINGS)}")
    if spec.get("check") not in (None, *CHECKS):
        raise ExperimentError(f"{where}.check: {spec['check']!r} is not one of {', '.join(CHECKS)}")
    overrides = copy.deepcopy(dict(spec.get("overrides") or {}))
    if "data" in overrides:  # dataset folders under the data root
        names = overrides["data"] if isinstance(overrides["data"], list) else [overrides["data"]]
        overrides["data"] = [str(data_root / str(d)) for d in names]
    models = spec["models"]
    if not isinstance(models, list) or not models:
        raise ExperimentError(f"{where}.models: expected a non-empty list of model rows")
    extra = spec.get("extra")
    return Suite(
        name=name,
        title=spec["title"],
        setting=spec["setting"],
        config_file=spec.get("config_file"),
        overrides=overrides,
        models=[_model(m, f"{where}.models[{i}]") for i, m in enumerate(models)],
        cache=spec.get("cache"),
        episodes=copy.deepcopy(dict(spec.get("episodes") or {})),
        check=spec.get("check"),
        official=bool(spec.get("official", False)),
        notes=tuple(spec.get("notes") or ()),
        extra=None if extra is None else _suite(name, extra, f"{where}.extra", data_root),
    )


def load_suites(data_root: str | os.PathLike | None = None, path: str | os.PathLike = SUITES_FILE) -> dict[str, Suite]:
    """The suites of ``path`` on the datasets under ``data_root`` (default :func:`default_data_root`),
    in the file's order (the order of ``--suite all``)."""
    values = check_keys(read_yaml(path, ExperimentError), ("constants", "suites"), str(path), required=("suites",))
    suites = values["suites"]
    if not isinstance(suites, Mapping) or not suites:
        raise ExperimentError(f"{path}: suites: expected a mapping of suite names to suites")
    root = Path(data_root) if data_root is not None else default_data_root()
    return {str(name): _suite(str(name), s, f"{path}: suites.{name}", root) for name, s in suites.items()}
