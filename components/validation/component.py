"""The validation gate (:class:`ValidationGate`), its spec and artifact, and the four validation
components wired together (:func:`validation_components`)."""

from __future__ import annotations

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
