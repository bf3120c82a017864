"""Pipeline configuration: defaults, merging order, the scenario section, errors."""

from __future__ import annotations

import pytest

from cmml.pipeline.config import CONFIG_DIR, ConfigError, load_config


def test_defaults_are_the_best_measured_configuration_and_the_papers_is_a_file():
    config = load_config()
    assert config.setting == "user" and config.data == ["synthetic"]
    assert (config.model["encoder"], config.model["hybrid"], config.model["modulation"]) == ("mean", "mlp", "film")
    assert config.model["item_bias"] and config.model["support_bias"] and config.model["residual_labels"]
    assert config.model["learning_rate"] == pytest.approx(1e-3) and config.model["hidden"] == [64, 64, 64]
    assert config.training["episodes_per_task"] == 1
    users_v1 = load_config(CONFIG_DIR / "users-v1.yaml")
    assert {k: v for k, v in users_v1.model.items() if k != "features"} == {
        k: v for k, v in config.model.items() if k != "features"
    }
    assert users_v1.model["features"] == [f for f in config.model["features"] if f != "year"]
    paper = load_config(CONFIG_DIR / "paper.yaml")
    assert (paper.model["encoder"], paper.model["hybrid"], paper.model["embedding_dim"]) == ("gru", "dot", 32)
    assert paper.model["learning_rate"] == pytest.approx(1e-4) and not paper.model["support_bias"]
    assert not paper.model["item_bias"] and not paper.model["residual_labels"]


def test_scenario_section_applies_only_to_scenario_settings_and_files_still_win(tmp_path):
    scenario = load_config(overrides={"setting": "scenario"})
    assert scenario.model["learning_rate"] == pytest.approx(1e-3) and scenario.training["episodes_per_task"] == 8
    assert scenario.baseline["training"]["episodes_per_task"] == 8 and scenario.model["encoder"] == "gru"
    assert not scenario.model["support_bias"]  # a rating offset has no meaning for clicks
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


def test_small_local_inputs_run_beam_in_memory(tmp_path):
    from cmml.pipeline.pipeline import beam_pipeline_args

    log = tmp_path / "log.csv"
    log.write_text("uid,iid,rating\n1,2,4\n")
    small = load_config(overrides={"data": str(log), "columns": "user=uid,item=iid,label=rating"})
    assert beam_pipeline_args(small)[-1] == "--direct_running_mode=in_memory"
    assert "--direct_running_mode=multi_processing" in beam_pipeline_args(small, local=False)  # e.g. Kubeflow
    never = load_config(overrides={"data": str(log), "beam": {"in_memory_below_mb": 0}})
    assert beam_pipeline_args(never) == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    tiny = load_config(overrides={"data": str(log), "beam": {"in_memory_below_mb": 1e-6}})  # 1 byte: the log is larger
    assert "--direct_running_mode=in_memory" not in beam_pipeline_args(tiny)


def test_a_csv_log_in_the_user_setting_must_keep_to_the_rating_scale(tmp_path):
    """evaluation.rating_range is the declared label range of a CSV log's ratings (user setting only)."""
    from cmml.pipeline.config import data_sources

    log = tmp_path / "log.csv"
    log.write_text("uid,iid,rating\n1,2,4\n")
    columns = "user=uid,item=iid,label=rating"
    ratings = load_config(overrides={"data": str(log), "columns": columns, "evaluation": {"rating_range": [0, 10]}})
    assert data_sources(ratings).label_range == (0.0, 10.0)
    clicks = load_config(overrides={"data": str(log), "columns": columns, "setting": "scenario"})
    assert data_sources(clicks).label_range is None
