"""TFX Trainer module: episodic training of CMML (or of the blessing baseline) from TaskGen's records.

Used as ``Trainer(run_fn="cmml.components.trainer.run_fn", examples=task_gen.outputs["tasks"], ...)``
with ``custom_config`` = ``{"kind": "cmml" | "dcn", "setting": "user" | "scenario", "model": {...},
"training": {...}, "rating_range": [lo, hi] | None}``.

Exports, inside the Model artifact:

* ``Format-Serving/`` (``fn_args.serving_model_dir``): the model with the tf.Transform graph in
  front, so serving takes raw features: signatures ``serving_default``, ``encode_context``,
  ``score``, ``update_context`` (CMML) and ``serve_tf_examples`` (serialized raw tf.Examples);
* ``Format-Ids/``: the same model on transformed ids, which the Evaluator scores on TaskGen's
  episodes;
* ``training_summary.json`` (best epoch, validation curve) next to them.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import cmml  # noqa: F401
import tensorflow as tf
from absl import logging

from cmml.components import episodes_data
from cmml.models import evaluation
from cmml.models.cmml import CMMLModel, build_cmml
from cmml.models.config import CMMLConfig
from cmml.models.training import TrainingConfig, fit_episodic
from cmml.schemas.episodes import FeatureSpec, load_feature_specs

IDS_DIR = "Format-Ids"
SUMMARY_FILE = "training_summary.json"
EPISODE_KEYS = ("batch_tasks", "episodes_per_task", "support_positives", "query_positives", "query_size", "max_support")


def task_root(file_pattern: str) -> str:
    """TaskGen's output folder from a split pattern ``<root>/Split-<split>/*``."""
    return os.path.dirname(os.path.dirname(file_pattern.rstrip("/")))


def available_features(model: Mapping[str, Any], specs: Sequence[FeatureSpec], log=logging.warning) -> dict[str, Any]:
    """The model config with its ``features`` list reduced to the features the records have.

    One config serves several datasets (ML-100K has no directors or actors); the features left
    out are logged, and a list that leaves nothing is an error.
    """
    out = dict(model)
    if out.get("features") is None:
        return out
    names = [s.name for s in specs]
    kept = [f for f in out["features"] if f in names]
    missing = [f for f in out["features"] if f not in names]
    if missing:
        log(f"config features {missing} are not in these records (they have {sorted(names)}); training without them")
    if not kept:
        raise ValueError(f"none of the config features {list(out['features'])} is in these records (they have {sorted(names)})")
    out["features"] = kept
    return out


def build_model(kind: str, specs: Sequence[FeatureSpec], setting: str, model: Mapping[str, Any]) -> tf.keras.Model:
    head = "rating" if setting == "user" else "ctr"
    model = available_features(model, specs)
    if kind == "cmml":
        return build_cmml(specs, CMMLConfig.from_dict({**model, "head": head}))
    if kind == "dcn":
        from cmml.models.dcn import DCNConfig, build_dcn

        return build_dcn(specs, DCNConfig.from_dict({**model, "head": head}))
    raise ValueError(f"unknown model kind {kind!r}: use 'cmml' or 'dcn'")


def episode_sources(root: str, specs: Sequence[FeatureSpec], setting: str, training: Mapping[str, Any], seed: int):
    """(epoch -> training episodes, fixed validation batches) from TaskGen's output."""
    batch = int(training.get("batch_tasks", 32))
    passes = int(training.get("episodes_per_task", 1))  # passes over the meta-train tasks per epoch, fresh draws each
    extra = {"support_positives": int(training.get("support_positives", 64)), "query_positives": int(training.get("query_positives", 128))}
    if setting == "user":
        extra = {"query_size": int(training.get("query_size", 10)), "max_support": training.get("max_support")}

    def train(epoch: int) -> tf.data.Dataset:
        return episodes_data.training_episodes(root, specs, setting=setting, batch_size=batch, seed=seed * 100_003 + epoch, repeat=passes, **extra)

    valid = episodes_data.evaluation_episodes(root, specs, setting=setting, split="meta_valid", batch_size=256).cache()
    return train, valid


def validator(setting: str, valid: tf.data.Dataset, rating_range):
    """Model -> validation score, lower is better (MAE, or minus Recall@20 for scenarios)."""
    metric, lower = evaluation.PRIMARY[setting]
    clip = tuple(rating_range) if (rating_range and setting == "user") else None

    # one traced function per model across epochs, not one per call; only the latest model's is kept
    # (with the model itself, so that its id cannot be reused by another model while cached)
    traced: dict[int, tuple[tf.keras.Model, Any]] = {}

    def score(model: tf.keras.Model) -> float:
        if id(model) not in traced:
            traced.clear()
            traced[id(model)] = (model, tf.function(lambda f: model(f, training=False), reduce_retracing=True))
        predict = traced[id(model)][1]
        summary, _ = evaluation.evaluate_episodes(lambda f: predict(f).numpy(), valid.as_numpy_iterator(), setting, clip)
        return summary[metric] if lower else -summary[metric]

    return score


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    config = dict(fn_args.custom_config or {})
    kind, setting = config.get("kind", "cmml"), config.get("setting", "user")
    training = dict(config.get("training") or {})
    root = task_root(fn_args.train_files[0])
    specs = load_feature_specs(root)
    model = build_model(kind, specs, setting, config.get("model") or {})
    fit_config = TrainingConfig.from_dict({k: v for k, v in training.items() if k not in EPISODE_KEYS})
    train, valid = episode_sources(root, specs, setting, training, fit_config.seed)
    logging.info("Training %s (%s setting) on %s", kind, setting, root)
    summary = fit_episodic(
        model, train, validator(setting, valid, config.get("rating_range")), fit_config,
        log=logging.info, tensorboard_dir=os.path.join(fn_args.model_run_dir, "logs"),
    )  # fmt: skip
    summary.update({"kind": kind, "setting": setting, "primary_metric": evaluation.PRIMARY[setting][0]})
    export_models(model, fn_args.serving_model_dir, fn_args.transform_output)
    model_root = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    for folder in (model_root, fn_args.model_run_dir):
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, SUMMARY_FILE), "w") as f:
            f.write(json.dumps(summary, indent=1, default=float))


def export_models(model: tf.keras.Model, serving_dir: str, transform_output: str | None) -> None:
    """Writes the raw-feature serving model and the ids model (see the module docstring)."""
    from cmml.components.serving_features import raw_serving_inputs
    from cmml.models.export import export_saved_model

    model_root = os.path.dirname(serving_dir.rstrip("/"))
    export_saved_model(model, os.path.join(model_root, IDS_DIR))
    if transform_output:
        raw = raw_serving_inputs(transform_output, model)
        export_saved_model(model, serving_dir, preprocess=raw.preprocess, raw_specs=raw.specs, example_spec=raw.example_spec)
    else:
        export_saved_model(model, serving_dir)


def load_ids_model(model_uri: str):
    """The ids model of a Trainer output (signatures on transformed ids)."""
    return tf.saved_model.load(os.path.join(model_uri, IDS_DIR))


def is_cmml(model: tf.keras.Model) -> bool:
    return isinstance(model, CMMLModel)
