"""Pipeline configuration: defaults, merging order, the scenario section, errors."""

from __future__ import annotations

import pytest

from cmml.pipeline.config import ConfigError, load_config


def test_defaults_are_the_papers():
    config = load_config()
    assert config.setting == "user" and config.data == ["synthetic"]
    assert (config.model["encoder"], config.model["hybrid"], config.model["modulation"]) == ("gru", "dot", "film")
    assert config.model["learning_rate"] == pytest.approx(1e-4) and config.model["hidden"] == [64, 64, 64]
    assert config.training["episodes_per_task"] == 1


def test_scenario_section_applies_only_to_scenario_settings_and_files_still_win(tmp_path):
    scenario = load_config(overrides={"setting": "scenario"})
    assert scenario.model["learning_rate"] == pytest.approx(1e-3) and scenario.training["episodes_per_task"] == 8
    assert scenario.baseline["training"]["episodes_per_task"] == 8 and scenario.model["encoder"] == "gru"
    multi = load_config(overrides={"setting": "multi-domain", "data": ["a", "b"]})
    assert multi.model["learning_rate"] == pytest.approx(1e-3)
    path = tmp_path / "mine.yaml"
    path.write_text("setting: scenario\nmodel:\n  learning_rate: 5.0e-4\n")
    mine = load_config(path)
    assert mine.model["learning_rate"] == pytest.approx(5e-4) and mine.training["episodes_per_task"] == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"trainer": {}}, "unknown configuration section"),
        ({"setting": "items"}, "setting 'items'"),
        ({"setting": "multi-domain"}, "needs two or more datasets"),
        ({"data": ["a", "b"]}, "only multi-domain combines"),
        ({"model": {"encoder": "transformer"}}, "model:"),
        ({"scenario": {"taskgen": {}}}, "only model, training and baseline"),
    ],
)
def test_invalid_configurations_are_rejected_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_a_missing_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
