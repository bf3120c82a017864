"""TaskGen: the custom TFX component that turns interactions into per-task TFRecords.

Inputs: LogExampleGen's interaction ``examples``, and Transform's ``transformed_examples`` (the
transformed user and item tables, splits ``users`` and ``items``) and ``transform_graph``. Output:
an ``Examples`` artifact whose splits are ``meta_train``, ``meta_valid`` and ``meta_test`` and
whose records are one tf.Example per task (layout and record format: ``schemas/task_records.md``),
so the stock TFX Trainer consumes it with ``TrainArgs(splits=['meta_train'])``.

Wiring::

    transform = make_transform(example_gen.outputs["entities"], validation.entity_schema.outputs["schema"])
    task_gen = TaskGen(
        example_gen.outputs["examples"],
        transform.outputs["transformed_examples"],
        transform.outputs["transform_graph"],
        config=TaskGenConfig.users_v1(),
    )
"""

from __future__ import annotations

import json

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.executor import Executor


class TaskGenSpec(ComponentSpec):
    PARAMETERS = {
        "config": ExecutionParameter(type=str),
        "transform_config": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "entities": ChannelParameter(type=standard_artifacts.Examples),
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {"tasks": ChannelParameter(type=standard_artifacts.Examples)}


class TaskGen(base_beam_component.BaseBeamComponent):
    """Groups interactions into per-task TFRecords (user or scenario tasks) with the transformed features.

    Example::

        task_gen = TaskGen(
            examples=example_gen.outputs["examples"],
            entities=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            config=TaskGenConfig.users_v1(),
        )
    """

    SPEC_CLASS = TaskGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        entities: types.BaseChannel,
        transform_graph: types.BaseChannel,
        config: TaskGenConfig | dict | None = None,
        transform_config: dict | None = None,
    ):
        """
        Args:
          examples: LogExampleGen's ``examples`` (the interactions).
          entities: Transform's ``transformed_examples`` of LogExampleGen's ``entities``.
          transform_graph: Transform's ``transform_graph`` (vocabulary sizes and names).
          config: a :class:`TaskGenConfig` (or its fields as a dict); default TaskGenConfig().
          transform_config: the ``custom_config`` given to Transform (feature overrides), if any.
        """
        if not isinstance(config, TaskGenConfig):
            config = TaskGenConfig.from_dict(config)
        super().__init__(
            spec=TaskGenSpec(
                examples=examples,
                entities=entities,
                transform_graph=transform_graph,
                config=config.to_json(),
                transform_config=json.dumps(transform_config or {}, sort_keys=True),
                tasks=types.Channel(type=standard_artifacts.Examples),
            )
        )
