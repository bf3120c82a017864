"""The ServingValidator component and its spec (the job is described in the package docstring)."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from cmml.components.serving_validator.executor import Executor


class ServingValidatorSpec(ComponentSpec):
    PARAMETERS = {"warmup_requests": ExecutionParameter(type=int, optional=True)}
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "entities": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"blessing": ChannelParameter(type=standard_artifacts.InfraBlessing)}


class ServingValidator(base_component.BaseComponent):
    """Validates that the exported model serves: stamped model, warm-up records, canned requests served."""

    SPEC_CLASS = ServingValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        entities: types.BaseChannel,
        warmup_requests: int = 4,
    ):
        """
        Args:
          model: the Trainer's output (its serving model is validated).
          examples: LogExampleGen's interactions (canned requests are built from them) ...
          entities: ... and its user and item tables (their raw attributes).
          warmup_requests: how many canned requests become warm-up records (0: none).
        """
        super().__init__(
            spec=ServingValidatorSpec(
                model=model,
                examples=examples,
                entities=entities,
                warmup_requests=warmup_requests,
                blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            )
        )
