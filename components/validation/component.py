"""The validation gate (:class:`ValidationGate`), its spec and artifact, and the validation components of
the interactions and the entity tables wired together (:func:`validation_components`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from tfx import types
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from cmml.components.validation.executor import GateExecutor
from cmml.schemas import schema_path

DEFAULT_MAX_REJECTED_FRACTION = 0.1


class ValidationReport(types.Artifact):
    """Outcome of the validation gate (``report.txt`` / ``report.json``)."""

    TYPE_NAME = "cmml.ValidationReport"


class ValidationGateSpec(ComponentSpec):
    PARAMETERS = {
        "max_rejected_fraction": ExecutionParameter(type=float, optional=True),
        "ignore_features": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        "entity_anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
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
        entity_anomalies: types.BaseChannel | None = None,
    ):
        """
        Args:
          anomalies: ExampleValidator's ``anomalies`` of the interactions.
          examples: LogExampleGen's ``examples`` (its row counts); optional.
          entity_anomalies: ExampleValidator's ``anomalies`` of the user and item tables; optional.
          max_rejected_fraction: fail when more than this share of the rows was malformed
            (None: never fail on the dead-letter rate).
          ignore_features: features whose anomalies are reported by TFDV but do not stop the run.
        """
        super().__init__(
            spec=ValidationGateSpec(
                anomalies=anomalies,
                entity_anomalies=entity_anomalies,
                examples=examples,
                max_rejected_fraction=max_rejected_fraction,
                ignore_features=json.dumps(list(ignore_features)),
                report=types.Channel(type=ValidationReport),
            )
        )


@dataclasses.dataclass
class Validation:
    """The validation components of the interactions and of the entity tables, wired to one gate."""

    statistics: StatisticsGen
    schema: ImportSchemaGen
    validator: ExampleValidator
    entity_statistics: StatisticsGen
    entity_schema: ImportSchemaGen
    entity_validator: ExampleValidator
    gate: ValidationGate

    @property
    def components(self) -> list:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


def validation_components(
    examples: types.BaseChannel,
    entities: types.BaseChannel,
    max_rejected_fraction: float | None = DEFAULT_MAX_REJECTED_FRACTION,
) -> Validation:
    """StatisticsGen, ImportSchemaGen (curated schema) and ExampleValidator for LogExampleGen's two
    outputs (``schemas/example.pbtxt``, ``schemas/entity.pbtxt``), and the gate over both.

    Pass ``entity_schema.outputs['schema']`` to Transform and call ``transform.add_upstream_node(gate)``.
    """
    parts = {}
    for prefix, channel, schema_name in (("", examples, "example"), ("entity_", entities, "entity")):
        what = "Entity" if prefix else ""
        statistics = StatisticsGen(examples=channel).with_id(f"{what}StatisticsGen")
        schema = ImportSchemaGen(schema_file=str(schema_path(schema_name))).with_id(f"{what}ImportSchemaGen")
        validator = ExampleValidator(
            statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
        ).with_id(f"{what}ExampleValidator")
        parts.update({f"{prefix}statistics": statistics, f"{prefix}schema": schema, f"{prefix}validator": validator})
    gate = ValidationGate(
        anomalies=parts["validator"].outputs["anomalies"],
        entity_anomalies=parts["entity_validator"].outputs["anomalies"],
        examples=examples,
        max_rejected_fraction=max_rejected_fraction,
    )
    return Validation(**parts, gate=gate)
