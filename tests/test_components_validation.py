"""Validation: the curated schema, and a gate that stops the run with a readable anomaly summary."""

from __future__ import annotations

import os
import re

import apache_beam as beam
import pytest

from cmml.components.validation.component import ValidationReport, validation_components
from cmml.components.validation.executor import REPORT_TEXT, DataValidationError, GateExecutor
from cmml.data import records as R
from cmml.schemas import load_schema, schema_path

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _context():
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    # a pipeline factory instead of beam args: TFX would otherwise build an sdist of itself per executor
    return BaseBeamExecutor.Context(make_beam_pipeline_fn=lambda: beam.Pipeline(argv=IN_MEMORY))


def test_example_schema_covers_the_canonical_records():
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = load_schema("example")
    names = [f.name for f in schema.feature]
    assert names == list(R.INTERACTION_SCHEMA.names) + ["domain"]  # side features: schemas/entity.pbtxt
    feature = {f.name: f for f in schema.feature}
    assert feature["label"].float_domain.max == 5.0 and feature["label"].presence.min_fraction == 1.0
    for name in (R.USER_ID, R.ITEM_ID):
        assert feature[name].type == schema_pb2.BYTES and feature[name].presence.min_fraction == 1.0
    assert list(feature["label"].not_in_environment) == ["SERVING"]


def _write_examples(folder, rows):
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, "data.gz"), options="GZIP") as w:
        for row in rows:
            e = tf.train.Example()
            for k, v in row.items():
                f = e.features.feature[k]
                if isinstance(v, bytes):
                    f.bytes_list.value.append(v)
                elif isinstance(v, float):
                    f.float_list.value.append(v)
                else:
                    f.int64_list.value.append(v)
            w.write(e.SerializeToString())


def _validate(tmp_path, rows):
    """StatisticsGen -> ExampleValidator (curated schema), executors run directly; returns (examples, anomalies)."""
    import shutil

    from tfx.components.example_validator import executor as validator_executor
    from tfx.components.statistics_gen import executor as stats_executor
    from tfx.types import artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train"])
    _write_examples(tmp_path / "examples" / "Split-train", rows)
    stats = standard_artifacts.ExampleStatistics()
    stats.uri = str(tmp_path / "stats")
    stats_executor.Executor(_context()).Do({"examples": [examples]}, {"statistics": [stats]}, {})
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    os.makedirs(schema.uri)
    shutil.copy(schema_path("example"), os.path.join(schema.uri, "schema.pbtxt"))
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    validator_executor.Executor().Do({"statistics": [stats], "schema": [schema]}, {"anomalies": [anomalies]}, {})
    return examples, anomalies


def _gate(tmp_path, examples, anomalies, examples_props=None):
    for k, v in (examples_props or {}).items():
        examples.set_string_custom_property(k, v) if isinstance(v, str) else examples.set_int_custom_property(k, v)
    report = ValidationReport()
    report.uri = str(tmp_path / "report")
    GateExecutor().Do(
        {"anomalies": [anomalies], "examples": [examples]},
        {"report": [report]},
        {"max_rejected_fraction": 0.1, "ignore_features": "[]"},
    )
    return report


def test_gate_reports_type_change_missing_feature_and_range(tmp_path):
    rows = [
        {"user_id": 7, "item_id": b"10", "label": 4.0},
        {"user_id": 8, "item_id": b"11", "label": 9.0},
        {"user_id": 9, "item_id": b"12"},
    ]
    examples, anomalies = _validate(tmp_path, rows)
    with pytest.raises(DataValidationError) as err:
        _gate(tmp_path, examples, anomalies)
    text = str(err.value)
    lines = text.splitlines()
    assert lines[0] == "Data validation failed: 4 problems."
    # id type change, rating out of range, required feature missing in a row (+ its shape anomaly)
    assert "  split 'train', feature 'user_id': Unexpected data type. Expected data of type: BYTES but got INT" in lines
    assert any(
        l.startswith("  split 'train', feature 'label': Out-of-range values. Unexpectedly high value: 9>5")
        for l in lines
    )
    assert any(
        l.startswith("  split 'train', feature 'label': Column dropped.") and "actual = 0.666667" in l for l in lines
    )
    report = (tmp_path / "report" / REPORT_TEXT).read_text()
    assert report.strip() == text


def test_gate_passes_clean_data_and_checks_dead_letter_rate(tmp_path):
    rows = [
        {"user_id": b"1", "item_id": b"10", "label": 4.0, "timestamp": 5},
        {"user_id": b"2", "item_id": b"10", "label": 2.0},
    ]
    examples, anomalies = _validate(tmp_path, rows)
    report = _gate(tmp_path / "clean", examples, anomalies, {"rows_in": 100, "rows_rejected": 5})
    assert (tmp_path / "clean" / "report" / REPORT_TEXT).read_text().startswith("Data validation passed")
    assert report.mlmd_artifact.custom_properties["passed"].int_value == 1
    with pytest.raises(DataValidationError, match=r"30 of 100 rows \(30.0%\) were malformed"):
        _gate(
            tmp_path / "dirty",
            examples,
            anomalies,
            {"rows_in": 100, "rows_rejected": 30, "dead_letter_uri": "/x/dead_letter"},
        )


@pytest.mark.parametrize("broken", ["interactions", "items"])
def test_schema_violation_stops_the_pipeline(tmp_path, broken):
    """LogExampleGen on a CSV log without a label range lets rating 9 through (or an item table a year 3000);
    the gate stops the run on the interactions' anomaly as on the entity table's."""
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from cmml.components.example_gen.component import LogExampleGen
    from cmml.components.example_gen.sources import Source
    from cmml.components.transform import make_transform

    log = tmp_path / "ratings.csv"
    rows = "".join(f"u{i % 7},i{i % 11},{1 + i % 5}\n" for i in range(60))
    log.write_text("uid,iid,stars\n" + rows + ("u1,i3,9\n" if broken == "interactions" else ""))
    items = tmp_path / "items.csv"
    items.write_text(
        "item_id,year\n" + "".join(f"i{k},{3000 if broken == 'items' and k == 3 else 1990}\n" for k in range(11))
    )
    gen = LogExampleGen(Source(str(log), columns="user=uid,item=iid,label=stars", items_path=str(items)))
    validation = validation_components(gen.outputs["examples"], gen.outputs["entities"])
    transform = make_transform(gen.outputs["entities"], validation.entity_schema.outputs["schema"])
    transform.add_upstream_node(validation.gate)
    p = tfx_pipeline.Pipeline(
        pipeline_name="gate",
        pipeline_root=str(tmp_path / "root"),
        components=[gen, *validation.components, transform],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.sqlite")),
        beam_pipeline_args=IN_MEMORY,
    )
    with pytest.raises(DataValidationError) as err:
        LocalDagRunner().run(p)
    lines = str(err.value).splitlines()
    assert lines[0] == "Data validation failed: 1 problem." and len(lines) == 2
    expected = (
        r"  split '(train|eval)', feature 'label': Out-of-range values. Unexpectedly high value: 9>5.*"
        if broken == "interactions"
        else r"  split 'items', feature 'year': Out-of-range values. Unexpectedly large value: 3000.*"
    )
    assert re.fullmatch(expected, lines[1]), lines[1]
    assert not (tmp_path / "root" / "Transform").exists()  # nothing ran after the gate
