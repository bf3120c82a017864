"""Evaluator: per-task metrics of the candidate and the baseline on meta-test tasks, and blessing.

TFMA evaluates example by example; the CMML protocols score *tasks* (a user's query ratings, a
scenario user's ranking of all candidate items), so this component computes SPEC §3's metrics
itself (``cmml.models.evaluation``) on TaskGen's fixed meta-test episodes, for both Trainer
outputs (their ``Format-Ids`` models), and blesses the candidate only if it beats the baseline on
the primary metric (MAE for users, Recall@20 for scenarios) by ``min_improvement`` and meets every
absolute threshold.

Outputs: ``evaluation`` (``metrics.json``, ``report.md``) and a standard ``ModelBlessing`` whose
``blessed`` property the stock Pusher reads.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

import cmml  # noqa: F401
from cmml.models import evaluation

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


class EvaluationReport(types.Artifact):
    """Metrics of the candidate and the baseline on meta-test tasks (``metrics.json``, ``report.md``)."""

    TYPE_NAME = "cmml.TaskEvaluation"


def _ids_scorer(model_uri: str):
    """A numpy scorer over episode batches from a Trainer output's ids model."""
    import tensorflow as tf

    from cmml.models.export import load_ids_model

    serve = load_ids_model(model_uri).signatures["serving_default"]
    names = set(serve.structured_input_signature[1])

    def score(batch: Mapping[str, Any]):
        return serve(**{k: tf.constant(v) for k, v in batch.items() if k in names})["scores"].numpy()

    return score


def decide_blessing(
    candidate: Mapping[str, float], baseline: Mapping[str, float], setting: str, rules: Mapping[str, Any]
) -> tuple[bool, list[str]]:
    """(blessed, reasons). Reasons name every rule and its figures, passed or failed."""
    metric, lower = evaluation.PRIMARY[setting]
    margin = float(rules.get("min_improvement", 0.0))
    c, b = candidate[metric], baseline[metric]
    gain = (b - c) if lower else (c - b)
    reasons = [
        f"{metric}: candidate {c:.4f} vs baseline {b:.4f} ({'better' if gain > 0 else 'not better'} by {gain:+.4f}, needs > {margin:g})"
    ]
    ok = gain > margin
    for name, bound in (rules.get("thresholds") or {}).items():
        if name not in candidate:
            raise ValueError(f"threshold on unknown metric {name!r}; metrics are {sorted(candidate)}")
        value = candidate[name]
        passed = value <= bound if evaluation.lower_is_better(name) else value >= bound
        reasons.append(
            f"{name}: {value:.4f} {'<=' if evaluation.lower_is_better(name) else '>='} {bound} {'passed' if passed else 'FAILED'}"
        )
        ok = ok and passed
    return ok, reasons


def report_markdown(results: Mapping[str, Mapping[str, float]], setting: str, blessed: bool, reasons: List[str]) -> str:
    names = evaluation.metric_names(setting)
    lines = [
        f"# Evaluation on meta-test tasks ({setting} setting)",
        "",
        "| model | tasks | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for model, values in results.items():
        lines.append(f"| {model} | {values['tasks']} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |")
    lines += ["", f"**{'BLESSED' if blessed else 'NOT BLESSED'}**", ""] + [f"- {r}" for r in reasons]
    return "\n".join(lines) + "\n"


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        from cmml.models import episodes
        from cmml.schemas.episodes import load_feature_specs

        self._log_startup(input_dict, output_dict, exec_properties)
        setting = exec_properties["setting"]
        rules = json.loads(exec_properties.get("config") or "{}")
        tasks = artifact_utils.get_single_instance(input_dict["examples"])
        specs = load_feature_specs(tasks.uri)
        clip = tuple(rules["rating_range"]) if (setting == "user" and rules.get("rating_range")) else None
        results = {}
        for name, key in (("candidate", "model"), ("baseline", "baseline_model")):
            model = artifact_utils.get_single_instance(input_dict[key])
            batches = episodes.evaluation_episodes(tasks.uri, specs, setting=setting, split="meta_test", batch_size=128)
            summary, _ = evaluation.evaluate_episodes(
                _ids_scorer(model.uri), batches.as_numpy_iterator(), setting, clip
            )
            results[name] = summary
            logging.info("Evaluator: %s %s", name, summary)
        blessed, reasons = decide_blessing(results["candidate"], results["baseline"], setting, rules)

        report = artifact_utils.get_single_instance(output_dict["evaluation"])
        os.makedirs(report.uri, exist_ok=True)
        payload = {
            "setting": setting,
            "primary_metric": evaluation.PRIMARY[setting][0],
            "blessed": blessed,
            "reasons": reasons,
            "metrics": results,
        }
        with open(os.path.join(report.uri, METRICS_FILE), "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1)
        with open(os.path.join(report.uri, REPORT_FILE), "w", encoding="utf-8") as f:
            f.write(report_markdown(results, setting, blessed, reasons))
        for name, values in results.items():
            for metric, value in values.items():
                report.set_float_custom_property(f"{name}_{metric.replace('@', '_at_')}", float(value))

        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        os.makedirs(blessing.uri, exist_ok=True)
        with open(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w", encoding="utf-8") as f:
            f.write("\n".join(reasons) + "\n")
        blessing.set_int_custom_property("blessed", int(blessed))
        candidate = artifact_utils.get_single_instance(input_dict["model"])
        blessing.set_string_custom_property("current_model", candidate.uri)
        blessing.set_int_custom_property("current_model_id", candidate.id)
        logging.info("Evaluator: %s — %s", "BLESSED" if blessed else "NOT BLESSED", "; ".join(reasons))


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
    """Per-task evaluation of candidate versus baseline on TaskGen's meta-test tasks, with blessing."""

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
          config: ``rating_range``, ``min_improvement``, ``thresholds`` (see pipeline/configs/default.yaml).
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
