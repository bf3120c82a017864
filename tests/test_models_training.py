"""Episodic training loop: weight averaging, early stopping, best weights kept."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models.testing import DEFAULT_SPECS, random_episodes
from cmml.models.training import EPOCH_LINE, TrainingConfig, WeightAverage, build_model, fit_episodic, validation_score

MEAN_TINY = {"encoder": "mean", "embedding_dim": 8, "learning_rate": 1e-2}


def test_weight_average_is_an_exponential_moving_average_and_swaps_back():
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    avg = WeightAverage(model, decay=0.5)
    start = [v.numpy().copy() for v in model.trainable_variables]
    for v in model.trainable_variables:
        v.assign(v + 1.0)
    avg.update()
    for s, w0 in zip(avg.shadow, start):
        np.testing.assert_allclose(s.numpy(), w0 + 0.5, rtol=1e-6)  # 0.5 * w0 + 0.5 * (w0 + 1)
    live = [v.numpy().copy() for v in model.trainable_variables]
    avg.swap()
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), start[0] + 0.5, rtol=1e-6)
    avg.swap()
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), live[0], rtol=1e-6)


def _data(seed, n=4):
    eps = [random_episodes(tasks=16, seed=seed + k) for k in range(n)]
    merged = {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}
    return tf.data.Dataset.from_tensor_slices(merged).batch(16)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_fit_episodic_keeps_the_best_validation_weights(ema):
    model = build_model("cmml", DEFAULT_SPECS, "user", MEAN_TINY)
    train = _data(0)
    valid = _data(100, n=1)
    before = validation_score(model, valid)
    lines = []
    summary = fit_episodic(
        model, lambda epoch: train, valid, TrainingConfig(epochs=8, patience=2, ema_decay=ema), log=lines.append
    )
    assert summary["epochs_run"] == len(lines) <= 8
    best = min(h["valid"] for h in summary["history"])
    assert summary["best_validation"] == pytest.approx(best)
    assert validation_score(model, valid) == pytest.approx(best, abs=1e-5)  # best weights restored
    assert best < before


def test_epoch_lines_give_elapsed_time_and_the_most_the_rest_can_take():
    model = build_model("cmml", DEFAULT_SPECS, "user", MEAN_TINY)
    train = _data(0)
    scores = iter([0.9, 0.8, 0.85, 0.86])  # improves, then two epochs without improvement: patience 2 stops
    lines = []
    fit_episodic(
        model, lambda epoch: train, lambda m: next(scores), TrainingConfig(epochs=10, patience=2), log=lines.append
    )
    assert len(lines) == 4 and all(line.startswith(EPOCH_LINE) for line in lines)
    assert re.search(
        r"epoch +1/10: train loss [\d.]+, validation 0\.9000 \* \(\d+ s elapsed, at most [\d.]+ (s|min) left\)$",
        lines[0],
    )
    assert "validation 0.8000 *" in lines[1] and "validation 0.8500   (" in lines[2]
    assert lines[3].endswith(", done)")  # patience exhausted: nothing left


def test_fit_episodic_accepts_a_validation_callable():
    model = build_model("cmml", DEFAULT_SPECS, "user", MEAN_TINY)
    train, valid = _data(0), _data(100, n=1)
    calls = []

    def score(m):
        calls.append(1)
        return validation_score(m, valid)

    summary = fit_episodic(model, lambda epoch: train, score, TrainingConfig(epochs=3, patience=5), log=lambda _: None)
    assert len(calls) == summary["epochs_run"] == 3
    assert validation_score(model, valid) == pytest.approx(summary["best_validation"], abs=1e-5)


def test_training_config_errors():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainingConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="unknown training config key"):
        TrainingConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="batch_tasks"):
        TrainingConfig(batch_tasks=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainingConfig(steps_per_epoch=0)
