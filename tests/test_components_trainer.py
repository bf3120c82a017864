"""Trainer module helpers that do not need a pipeline run."""

from __future__ import annotations

import pytest

import cmml  # noqa: F401
from cmml.models.testing import DEFAULT_SPECS
from cmml.models.training import available_features, build_model


def test_config_features_missing_from_the_records_are_dropped_and_reported():
    names = [s.name for s in DEFAULT_SPECS]
    messages = []
    out = available_features(
        {"features": [names[0], "directors_x", names[1]], "embedding_dim": 8}, DEFAULT_SPECS, log=messages.append
    )
    assert out == {"features": [names[0], names[1]], "embedding_dim": 8}
    assert len(messages) == 1 and "directors_x" in messages[0]
    assert available_features({"embedding_dim": 8}, DEFAULT_SPECS, log=messages.append) == {
        "embedding_dim": 8
    }  # all features
    with pytest.raises(ValueError, match="none of the config features"):
        available_features({"features": ["nope"]}, DEFAULT_SPECS, log=messages.append)


@pytest.mark.parametrize("kind", ["cmml", "dcn"])
def test_build_model_uses_only_available_features(kind):
    names = [s.name for s in DEFAULT_SPECS]
    model = build_model(kind, DEFAULT_SPECS, "user", {"features": names[:3] + ["actors_missing"], "embedding_dim": 8})
    assert [s.name for s in model.feature_specs] == names[:3]
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("xgboost", DEFAULT_SPECS, "user", {})
