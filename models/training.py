"""The one training API: build a model from a config, draw episodes, fit with early stopping.

Every trained model of the project goes through :func:`train`: the TFX Trainer's ``run_fn``
(``cmml.components.trainer``), the experiment runner and its sweeps, and the interpretability
studies. The same records, configuration and seed therefore give the same weights everywhere.

* :class:`TrainingConfig` — how long and how to train, and the sizes of the episodes drawn
  (the ``training:`` section of a pipeline config);
* :class:`TaskData` — TaskGen's records: feature specs, fresh training episodes per epoch, the
  fixed meta_valid episodes that early stopping scores, and the meta_test batches;
* :func:`build_model` — CMML, DCN or MAML (MeLU / MetaCS-DNN) from a config mapping;
* :func:`fit_episodic` — the training loop: one optimiser step per batch of tasks, an exponential
  moving average of the weights, validation after every epoch (held-out *meta-train* tasks,
  never meta-test ones), the best averaged weights kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.models import episodes, evaluation
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig, ConfigMixin
from cmml.models.dcn import DCNConfig, DCNModel
from cmml.models.maml import MAMLConfig, MAMLModel
from cmml.schemas.episodes import FeatureSpec, load_feature_specs

DatasetFactory = Callable[[int], tf.data.Dataset]  # epoch -> episodes of that epoch
Log = Callable[[str], None]
MODELS = {"cmml": (CMMLModel, CMMLConfig), "dcn": (DCNModel, DCNConfig), "maml": (MAMLModel, MAMLConfig)}
EPOCH_LINE = "  epoch "  # how fit_episodic's per-epoch lines start (the pipeline runner relays them)


def _quiet(_: str) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class TrainingConfig(ConfigMixin):
    """How long and how to train, and what an episode is. ``ema_decay = 0`` turns averaging off.

    Episodes (see :func:`cmml.models.episodes.training_episodes`): ``batch_tasks`` tasks per step;
    each epoch draws ``episodes_per_task`` fresh episodes of every meta-train task, or exactly
    ``steps_per_epoch`` batches when that is set. User setting: ``query_size`` query rows, at most
    ``max_support`` support rows. Scenario setting: ``support_positives`` / ``query_positives``
    positives, each paired with a sampled negative.
    """

    WHAT = "training"

    epochs: int = 40
    patience: int = 6  # epochs without validation improvement before stopping
    ema_decay: float = 0.98
    min_delta: float = 1e-4
    seed: int = 0
    batch_tasks: int = 32
    episodes_per_task: int = 1
    steps_per_epoch: int | None = None
    query_size: int = 10
    max_support: int | None = None
    support_positives: int = 64
    query_positives: int = 128

    def __post_init__(self):
        if self.epochs < 1 or self.patience < 1:
            raise ValueError("TrainingConfig: epochs and patience must be at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainingConfig.ema_decay = {self.ema_decay} must be in [0, 1)")
        sizes = [self.batch_tasks, self.episodes_per_task, self.query_size]
        if min(sizes + ([] if self.steps_per_epoch is None else [self.steps_per_epoch])) < 1:
            raise ValueError(
                "TrainingConfig: batch_tasks, episodes_per_task, steps_per_epoch and query_size must be >= 1"
            )


EPISODE_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(TrainingConfig)
    if f.name not in ("epochs", "patience", "ema_decay", "min_delta", "seed")
)


class TaskData:
    """A TaskGen output folder as training, validation and test episodes (one setting)."""

    def __init__(self, root: str, setting: str, specs: Sequence[FeatureSpec] | None = None):
        if setting not in evaluation.PRIMARY:
            raise ValueError(f"setting must be 'user' or 'scenario', not {setting!r}")
        self.root, self.setting = root, setting
        self.specs = list(specs) if specs is not None else load_feature_specs(root)
        self._valid: tf.data.Dataset | None = None

    def training(self, config: TrainingConfig, seed: int) -> DatasetFactory:
        """epoch -> that epoch's fresh episodes (seeded by ``seed`` and the epoch number)."""
        if self.setting == "user":
            sizes = {"query_size": config.query_size, "max_support": config.max_support}
        else:
            sizes = {"support_positives": config.support_positives, "query_positives": config.query_positives}
        steps = config.steps_per_epoch

        def draw(epoch: int) -> tf.data.Dataset:
            ds = episodes.training_episodes(
                self.root,
                self.specs,
                setting=self.setting,
                batch_size=config.batch_tasks,
                seed=seed * 100_003 + epoch,
                repeat=True if steps else config.episodes_per_task,
                **sizes,
            )
            return ds.take(steps) if steps else ds

        return draw

    @property
    def valid(self) -> tf.data.Dataset:
        """The fixed meta_valid episodes (read once, then cached)."""
        if self._valid is None:
            self._valid = episodes.evaluation_episodes(
                self.root, self.specs, setting=self.setting, split="meta_valid", batch_size=256
            ).cache()
        return self._valid

    def test_batches(self, batch_size: int = 128):
        """The fixed meta_test episodes as numpy batches (the Evaluator's numbers)."""
        return episodes.evaluation_episodes(
            self.root, self.specs, setting=self.setting, split="meta_test", batch_size=batch_size
        ).as_numpy_iterator()

    def validator(self, rating_range: Sequence[float] | None) -> Callable[[tf.keras.Model], float]:
        """Model -> validation score on meta_valid, lower is better (MAE, or minus Recall@20)."""
        metric, lower = evaluation.PRIMARY[self.setting]
        clip = tuple(rating_range) if (rating_range and self.setting == "user") else None
        valid = self.valid

        def score(model: tf.keras.Model) -> float:
            summary, _ = evaluation.evaluate_episodes(
                numpy_scorer(model), valid.as_numpy_iterator(), self.setting, clip
            )
            return summary[metric] if lower else -summary[metric]

        return score


_SCORERS: dict[int, list] = {}  # id(model) -> [model, its traced function or None]


def numpy_scorer(model: tf.keras.Model) -> Callable[[Mapping[str, Any]], Any]:
    """Episode batch -> numpy scores, through one traced function per model.

    The function is traced once, for any batch and padding size (every dimension left open), at
    the first call. Only the latest model's function is kept across calls (with the model itself,
    so that its id cannot be reused by another model while cached): validation asks for it every epoch.
    """
    entry = _SCORERS.get(id(model))
    if entry is None:
        _SCORERS.clear()
        entry = _SCORERS[id(model)] = [model, None]

    def score(features: Mapping[str, Any]):
        if entry[1] is None:
            spec = {k: tf.TensorSpec([None] * np.ndim(v), np.asarray(v).dtype) for k, v in features.items()}
            entry[1] = tf.function(lambda f: model(f, training=False), autograph=False).get_concrete_function(spec)
        return entry[1](features).numpy()

    return score


def available_features(model: Mapping[str, Any], specs: Sequence[FeatureSpec], log: Log = _quiet) -> dict[str, Any]:
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
        raise ValueError(
            f"none of the config features {list(out['features'])} is in these records (they have {sorted(names)})"
        )
    out["features"] = kept
    return out


def build_model(
    kind: str, specs: Sequence[FeatureSpec], setting: str, model: Mapping[str, Any], log: Log = _quiet
) -> tf.keras.Model:
    """A compiled model of ``kind`` ('cmml', 'dcn' or 'maml') on ``specs``; the head follows the setting.

    The config's ``features`` are reduced to those the specs have (:func:`available_features`).
    """
    values = {**available_features(model, specs, log), "head": "rating" if setting == "user" else "ctr"}
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}: use one of {', '.join(MODELS)}")
    Model, Config = MODELS[kind]
    net = Model(specs, Config.from_dict(values))
    net.compile(optimizer=tf.keras.optimizers.Adam(net.config.learning_rate))  # MAML: the outer loop's
    return net


def describe_model(model: tf.keras.Model) -> dict[str, Any]:
    """What :func:`rebuild_model` needs to build ``model`` again: its kind, feature specs and config."""
    kinds = [kind for kind, (Model, _) in MODELS.items() if type(model) is Model]
    if not kinds:
        raise ValueError(f"{type(model).__name__} is not one of the models {sorted(MODELS)}")
    return {
        "kind": kinds[0],
        "specs": [dataclasses.asdict(s) for s in model.feature_specs],
        "config": model.config.to_dict(),
    }


def rebuild_model(description: Mapping[str, Any]) -> tf.keras.Model:
    """The model :func:`describe_model` described, its variables built (untrained: restore them next)."""
    from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, key

    Model, Config = MODELS[description["kind"]]
    specs = [FeatureSpec(**s) for s in description["specs"]]
    net = Model(specs, Config.from_dict(description["config"]))
    batch = {}  # one task, two rows per part: enough to create every variable
    for part in (SUPPORT, QUERY):
        batch[key(part, MASK)] = batch[key(part, LABEL)] = tf.ones([1, 2])
        for s in specs:
            batch[key(part, s.name)] = tf.ones([1, 2] + ([s.max_len] if s.kind == "multi" else []), tf.int64)
    net(batch, training=False)
    return net


@dataclasses.dataclass
class Trained:
    """A trained model, the model config it was built from, and the fit summary."""

    model: tf.keras.Model
    config: dict[str, Any]
    summary: dict[str, Any]


def train(
    data: TaskData,
    kind: str,
    model: Mapping[str, Any],
    training: TrainingConfig | Mapping[str, Any],
    rating_range: Sequence[float] | None = None,
    log: Log = _quiet,
    tensorboard_dir: str | None = None,
) -> Trained:
    """Builds ``kind`` from ``model`` and trains it on ``data`` (early stopping on meta_valid).

    Seeded by ``training.seed`` before the model is built, so the initial weights, the episodes
    and the result are the same on every call with the same arguments.
    """
    config = training if isinstance(training, TrainingConfig) else TrainingConfig.from_dict(training)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(config.seed)
    used = available_features(model, data.specs, log)
    net = build_model(kind, data.specs, data.setting, used)
    summary = fit_episodic(
        net, data.training(config, config.seed), data.validator(rating_range), config, log, tensorboard_dir
    )
    summary.update({"kind": kind, "setting": data.setting, "primary_metric": evaluation.PRIMARY[data.setting][0]})
    return Trained(net, used, summary)


class WeightAverage:
    """Exponential moving average of a model's trainable variables, with a swap to evaluate it."""

    def __init__(self, model: tf.keras.Model, decay: float):
        self.model, self.decay = model, decay
        self.variables = list(model.trainable_variables)
        self.shadow = [tf.Variable(v, trainable=False) for v in self.variables]

    @tf.function
    def update(self):
        for s, v in zip(self.shadow, self.variables):
            s.assign(self.decay * s + (1.0 - self.decay) * v)

    @tf.function
    def swap(self):
        """Exchanges live and averaged weights (call twice to restore)."""
        for s, v in zip(self.shadow, self.variables):
            tmp = tf.identity(v)
            v.assign(s)
            s.assign(tmp)


class _AverageCallback(tf.keras.callbacks.Callback):
    def __init__(self, average: WeightAverage):
        super().__init__()
        self.average = average

    def on_train_batch_end(self, batch, logs=None):
        self.average.update()


def _not_callback_timing(record: logging.LogRecord) -> bool:
    """Drops Keras' "Callback method `on_train_batch_end` is slow" warning: its timing charges the weight
    average with the wait for the training step it follows (the update alone takes about 2 ms)."""
    return "is slow compared to the batch time" not in record.getMessage()


def validation_score(model: tf.keras.Model, valid: tf.data.Dataset) -> float:
    """Lower is better: query MAE for the rating head, the pairwise hinge loss for CTR."""
    logs = model.evaluate(valid, verbose=0, return_dict=True)
    return float(logs["mae"] if "mae" in logs else logs["loss"])


def build_variables(model: tf.keras.Model, episodes: tf.data.Dataset) -> None:
    """Creates the model's and its optimizer's variables with one eager forward pass on a batch.

    A ``tf.function`` that creates variables on its first call is traced twice; with the variables
    in place, Keras traces the training step once (about half of the first epoch's time).
    """
    if not model.built:
        model(next(iter(episodes)), training=False)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not getattr(optimizer, "_built", False):
        optimizer.build(model.trainable_variables)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fit_episodic(
    model: tf.keras.Model,
    train: DatasetFactory,
    valid: tf.data.Dataset | Callable[[tf.keras.Model], float],
    config: TrainingConfig = TrainingConfig(),
    log: Log = print,
    tensorboard_dir: str | None = None,
) -> dict[str, Any]:
    """Trains a compiled model; leaves the best (averaged) weights in it.

    ``valid`` is a dataset of validation episodes (scored by :func:`validation_score`) or a
    callable model → score; lower is better either way. Each epoch logs one line with its
    elapsed time and how long the remaining epochs take at most (the cap; early stopping may end
    sooner).

    Returns a summary: best epoch, best validation score, epochs run, seconds, per-epoch history.
    """
    tf.keras.utils.set_random_seed(config.seed)
    build_variables(model, train(0))
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    if average:
        average.update.get_concrete_function()  # traced now, not inside the first training batches
    callbacks: list[tf.keras.callbacks.Callback] = [_AverageCallback(average)] if average else []
    writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None
    best, best_weights, best_epoch, waited = math.inf, None, -1, 0
    history = []
    start = time.time()
    tf.get_logger().addFilter(_not_callback_timing)
    try:
        for epoch in range(config.epochs):
            logs = model.fit(train(epoch), epochs=1, verbose=0, callbacks=callbacks).history
            if average:
                average.swap()
            score = float(valid(model)) if callable(valid) else validation_score(model, valid)
            if score < best - config.min_delta:
                best, best_weights, best_epoch, waited = score, model.get_weights(), epoch, 0
            else:
                waited += 1
            if average:
                average.swap()
            elapsed = time.time() - start
            entry = {"epoch": epoch, "train_loss": float(logs["loss"][-1]), "valid": score, "seconds": elapsed}
            history.append(entry)
            remaining = 0 if waited >= config.patience else config.epochs - epoch - 1
            # the first epoch carries the tracing: later epochs are estimated from the mean of the others
            per_epoch = (elapsed - history[0]["seconds"]) / epoch if epoch else elapsed
            eta = f"at most {_duration(per_epoch * remaining)} left" if remaining else "done"
            log(
                f"{EPOCH_LINE}{epoch + 1:3d}/{config.epochs}: train loss {entry['train_loss']:.4f}, "
                f"validation {score:.4f}{' *' if best_epoch == epoch else '  '} ({_duration(elapsed)} elapsed, {eta})"
            )
            if writer is not None:
                with writer.as_default(step=epoch):
                    tf.summary.scalar("train_loss", entry["train_loss"])
                    tf.summary.scalar("validation", score)
            if waited >= config.patience:
                break
    finally:
        tf.get_logger().removeFilter(_not_callback_timing)
    if best_weights is not None:
        model.set_weights(best_weights)
    return {
        "best_epoch": best_epoch + 1,
        "best_validation": best,
        "epochs_run": len(history),
        "seconds": time.time() - start,
        "history": history,
    }


def task_root(file_pattern: str) -> str:
    """TaskGen's output folder from a split pattern ``<root>/Split-<split>/*``."""
    return os.path.dirname(os.path.dirname(file_pattern.rstrip("/")))
