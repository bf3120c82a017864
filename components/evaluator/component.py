"""The Evaluator component (:class:`TaskEvaluator`), its spec and its ``EvaluationReport`` artifact."""

from __future__ import annotations

import json
from typing import Any, Mapping

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from cmml.components.evaluator.executor import Executor
from cmml.models import evaluation


class EvaluationReport(types.Artifact):
    """Metrics of the candidate and the baseline on meta-test tasks (``metrics.json``, ``report.md``)."""

    TYPE_NAME = "cmml.TaskEvaluation"


class EvaluatorSpec(ComponentSpec):
    PARAMETERS = {"setting": ExecutionParameter(type=str), "config": ExecutionParameter(type=str, optional=True)}
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=EvaluationReport),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class TaskEvaluator(base_component.BaseComponent):
    """Per-task evaluation of candidate versus baseline on TaskGen's meta-test tasks, with blessing.

    Example::

        evaluator = TaskEvaluator(
            task_gen.outputs["tasks"],
            trainer.outputs["model"],
            baseline_trainer.outputs["model"],
            "user",
            {"rating_range": [1, 5]},
        )
    """

    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: types.BaseChannel,
        setting: str,
        config: Mapping[str, Any] | None = None,
    ):
        """
        Args:
          examples: TaskGen's output (meta-test episodes).
          model / baseline_model: the two Trainers' outputs.
          setting: 'user' or 'scenario'.
          config: ``rating_range``, ``min_improvement``, ``thresholds`` (the ``evaluation`` section of the
            pipeline configuration).
        """
        if setting not in evaluation.PRIMARY:
            raise ValueError(f"setting must be 'user' or 'scenario', not {setting!r}")
        super().__init__(
            spec=EvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                setting=setting,
                config=json.dumps(dict(config or {}), sort_keys=True),
                evaluation=types.Channel(type=EvaluationReport),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
