"""Episodic training with early stopping on validation tasks and an exponential moving average
of the weights. Shared by the TFX Trainer's ``run_fn`` and the experiment runner.

Every epoch draws fresh episodes (the dataset factory is called with the epoch number), takes
one optimiser step per batch of tasks, and scores the validation tasks — held-out *meta-train*
tasks, never meta-test ones — with the averaged weights. The best averaged weights are kept.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

import cmml  # noqa: F401
import tensorflow as tf

DatasetFactory = Callable[[int], tf.data.Dataset]  # epoch -> episodes of that epoch


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How long and how to train. ``ema_decay = 0`` turns weight averaging off."""

    epochs: int = 40
    patience: int = 6  # epochs without validation improvement before stopping
    ema_decay: float = 0.98
    min_delta: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.patience < 1:
            raise ValueError("TrainingConfig: epochs and patience must be at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainingConfig.ema_decay = {self.ema_decay} must be in [0, 1)")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


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


def validation_score(model: tf.keras.Model, valid: tf.data.Dataset) -> float:
    """Lower is better: query MAE for the rating head, the pairwise hinge loss for CTR."""
    logs = model.evaluate(valid, verbose=0, return_dict=True)
    return float(logs["mae"] if "mae" in logs else logs["loss"])


def fit_episodic(
    model: tf.keras.Model,
    train: DatasetFactory,
    valid: tf.data.Dataset | Callable[[tf.keras.Model], float],
    config: TrainingConfig = TrainingConfig(),
    log: Callable[[str], None] = print,
    tensorboard_dir: str | None = None,
) -> dict[str, Any]:
    """Trains a compiled model; leaves the best (averaged) weights in it.

    ``valid`` is a dataset of validation episodes (scored by :func:`validation_score`) or a
    callable model → score; lower is better either way.

    Returns a summary: best epoch, best validation score, epochs run, seconds, per-epoch history.
    """
    tf.keras.utils.set_random_seed(config.seed)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    callbacks: list[tf.keras.callbacks.Callback] = [_AverageCallback(average)] if average else []
    writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None
    best, best_weights, best_epoch, waited = math.inf, None, -1, 0
    history = []
    start = time.time()
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
        entry = {"epoch": epoch, "train_loss": float(logs["loss"][-1]), "valid": score, "seconds": time.time() - start}
        history.append(entry)
        log(f"  epoch {epoch + 1:3d}: train loss {entry['train_loss']:.4f}, validation {score:.4f}{' *' if best_epoch == epoch else ''} ({entry['seconds']:.0f} s)")
        if writer is not None:
            with writer.as_default(step=epoch):
                tf.summary.scalar("train_loss", entry["train_loss"])
                tf.summary.scalar("validation", score)
        if waited >= config.patience:
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return {
        "best_epoch": best_epoch + 1,
        "best_validation": best,
        "epochs_run": len(history),
        "seconds": time.time() - start,
        "history": history,
    }
