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


@pytest.mark.parametrize(
    "model_config, size, trains",
    [
        ({"catalog_weight": 1.0}, 50_000, False),  # the head alone: its dot product is the index
        ({"catalog_weight": 1.0, "catalog_rating_weight": 0.5}, 50_000, True),  # the rating network per item
        ({}, 50_000, True),
        ({}, 500, False),  # below retrieval.min_catalog_size
    ],
)
def test_the_retrieval_stage_is_trained_only_where_recommend_runs_the_rating_network(
    monkeypatch, model_config, size, trains
):
    from types import SimpleNamespace

    from cmml.components import trainer
    from cmml.models import retrieval

    model = build_model("cmml", DEFAULT_SPECS, "user", {"embedding_dim": 8, **model_config})
    monkeypatch.setattr(retrieval, "catalog_size", lambda root: size)
    calls = []
    monkeypatch.setattr(
        retrieval, "train_retrieval", lambda *args, **kwargs: calls.append(args) or SimpleNamespace(summary={"n": 1})
    )
    trained = SimpleNamespace(model=model, summary={})
    said = []
    stage = trainer._retrieval_stage(trained, SimpleNamespace(root="unused"), {"retrieval": {}}, said.append)
    assert (stage is not None) == trains and len(calls) == int(trains)
    assert trained.summary.get("retrieval") == ({"n": 1} if trains else None)
    if not trains:
        assert "no retrieval stage" in said[0] or "below retrieval.min_catalog_size" in said[0]
