"""Data validation: StatisticsGen + ImportSchemaGen (curated schema) + ExampleValidator + a gate.

TFDV computes statistics of every split and ExampleValidator compares them with the curated
schema ``schemas/example.pbtxt`` (required features, types, value ranges, value counts). The
:class:`ValidationGate` turns its verdict into a decision: when a split has an anomaly — or when
ExampleGen sent more than ``max_rejected_fraction`` of the rows to the dead-letter output — it
writes a readable report and **fails**, so nothing downstream (Transform, TaskGen, Trainer) runs.
Make the downstream components depend on the gate with ``transform.add_upstream_node(gate)``
(:func:`validation_components` returns the four components, wired).

Report (the exception message, also logged; on success ``report.txt`` / ``report.json`` in the
gate's ``report`` artifact), e.g.::

    Data validation failed: 2 anomalies.
      split 'train', feature 'label': Out-of-range values. Unexpectedly high value: 9>5(upto six significant digits)
      split 'train', feature 'user_id': Unexpected data type. Expected data of type: BYTES but got INT
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from cmml.errors import CmmlError
from cmml.schemas import schema_path

ANOMALIES_FILE = "SchemaDiff.pb"
REPORT_TEXT = "report.txt"
REPORT_JSON = "report.json"
DEFAULT_MAX_REJECTED_FRACTION = 0.1


class DataValidationError(CmmlError):
    """The data does not conform to the schema (message: the readable anomaly summary)."""


class ValidationReport(types.Artifact):
    """Outcome of the validation gate (``report.txt`` / ``report.json``)."""

    TYPE_NAME = "cmml.ValidationReport"


def load_anomalies(anomalies_uri: str, split: str) -> anomalies_pb2.Anomalies:
    path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
    proto = anomalies_pb2.Anomalies()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def anomaly_lines(anomalies_by_split: Dict[str, anomalies_pb2.Anomalies], ignore: Sequence[str] = ()) -> List[dict]:
    """One entry per (split, feature, reason): split, feature, anomaly type, short description, details."""
    out = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        infos = sorted(anomalies.anomaly_info.items())
        if anomalies.HasField("dataset_anomaly_info"):
            infos.append(("(dataset)", anomalies.dataset_anomaly_info))
        for feature, info in infos:
            if feature in ignore:
                continue
            reasons = list(info.reason) or [info]
            for r in reasons:
                kind = anomalies_pb2.AnomalyInfo.Type.Name(r.type) if hasattr(r, "type") and r.type else "UNKNOWN_TYPE"
                out.append(
                    {
                        "split": split,
                        "feature": feature,
                        "type": kind,
                        "short": r.short_description or info.short_description,
                        "details": r.description,
                    }
                )
    return out


def summarize(problems: Sequence[dict], rejected: dict | None = None) -> str:
    if not problems:
        return "Data validation passed: no anomalies."
    lines = [f"Data validation failed: {len(problems)} problem{'s' if len(problems) != 1 else ''}."]
    for p in problems:
        where = f"split '{p['split']}', feature '{p['feature']}'" if p.get("split") else p["feature"]
        lines.append(f"  {where}: {p['short']}. {p['details']}".rstrip())
    if rejected and rejected.get("rows_rejected"):
        lines.append(
            f"  {rejected['rows_rejected']:,} malformed rows are in the dead-letter output {rejected.get('dead_letter_uri', '')}"
        )
    return "\n".join(lines)


class GateExecutor(base_executor.BaseExecutor):
    """Fails the run with a readable summary when validation found problems."""

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict["anomalies"])
        report = artifact_utils.get_single_instance(output_dict["report"])
        ignore = json.loads(exec_properties.get("ignore_features") or "[]")
        max_rejected = exec_properties.get("max_rejected_fraction")
        splits = artifact_utils.decode_split_names(anomalies.split_names)
        problems = anomaly_lines({s: load_anomalies(anomalies.uri, s) for s in splits}, ignore)
        rejected = None
        if input_dict.get("examples"):
            examples = artifact_utils.get_single_instance(input_dict["examples"])
            props = examples.mlmd_artifact.custom_properties
            if "rows_in" in props and props["rows_in"].int_value > 0:
                rows_in, bad = props["rows_in"].int_value, props["rows_rejected"].int_value
                rejected = {
                    "rows_in": rows_in,
                    "rows_rejected": bad,
                    "dead_letter_uri": props["dead_letter_uri"].string_value if "dead_letter_uri" in props else "",
                }
                if max_rejected is not None and bad / rows_in > float(max_rejected):
                    problems.append(
                        {
                            "split": "",
                            "feature": "ingestion",
                            "type": "DEAD_LETTER_RATE",
                            "short": f"{bad:,} of {rows_in:,} rows ({bad / rows_in:.1%}) were malformed",
                            "details": f"more than the allowed {float(max_rejected):.1%}; see the dead-letter output",
                        }
                    )
        text = summarize(problems, rejected if problems else None)
        os.makedirs(report.uri, exist_ok=True)
        with open(os.path.join(report.uri, REPORT_TEXT), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        with open(os.path.join(report.uri, REPORT_JSON), "w", encoding="utf-8") as f:
            json.dump({"passed": not problems, "problems": problems, "ingestion": rejected}, f, indent=1)
        report.set_int_custom_property("passed", int(not problems))
        report.set_int_custom_property("problems", len(problems))
        if problems:
            # TFX deletes a failed execution's outputs: the message (also logged) is the durable report
            logging.error("%s", text)
            raise DataValidationError(text)


class ValidationGateSpec(ComponentSpec):
    PARAMETERS = {
        "max_rejected_fraction": ExecutionParameter(type=float, optional=True),
        "ignore_features": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"report": ChannelParameter(type=ValidationReport)}


class ValidationGate(base_component.BaseComponent):
    """Stops the pipeline when ExampleValidator reported anomalies (or too many rows were rejected)."""

    SPEC_CLASS = ValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(GateExecutor)

    def __init__(
        self,
        anomalies: types.BaseChannel,
        examples: types.BaseChannel | None = None,
        max_rejected_fraction: float | None = DEFAULT_MAX_REJECTED_FRACTION,
        ignore_features: Sequence[str] = (),
    ):
        """
        Args:
          anomalies: ExampleValidator's ``anomalies``.
          examples: LogExampleGen's ``examples`` (its row counts); optional.
          max_rejected_fraction: fail when more than this share of the rows was malformed
            (None: never fail on the dead-letter rate).
          ignore_features: features whose anomalies are reported by TFDV but do not stop the run.
        """
        super().__init__(
            spec=ValidationGateSpec(
                anomalies=anomalies,
                examples=examples,
                max_rejected_fraction=max_rejected_fraction,
                ignore_features=json.dumps(list(ignore_features)),
                report=types.Channel(type=ValidationReport),
            )
        )


def validation_components(
    examples: types.BaseChannel,
    schema_file: str | None = None,
    max_rejected_fraction: float | None = DEFAULT_MAX_REJECTED_FRACTION,
):
    """StatisticsGen, ImportSchemaGen (curated schema), ExampleValidator and the gate, wired together.

    Returns ``(statistics_gen, schema_gen, example_validator, gate)``. Pass
    ``schema_gen.outputs['schema']`` to Transform and call ``transform.add_upstream_node(gate)``.
    """
    statistics_gen = StatisticsGen(examples=examples)
    schema_gen = ImportSchemaGen(schema_file=schema_file or str(schema_path("example")))
    validator = ExampleValidator(statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = ValidationGate(
        anomalies=validator.outputs["anomalies"], examples=examples, max_rejected_fraction=max_rejected_fraction
    )
    return statistics_gen, schema_gen, validator, gate
