"""The Evaluator's executor: both Trainer outputs scored on TaskGen's meta-test episodes, then blessing."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

import cmml  # noqa: F401
from cmml.components.common import ArtifactDict
from cmml.components.evaluator.blessing import decide_blessing, report_markdown
from cmml.models import evaluation

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


def _ids_scorer(model_uri: str):
    """A numpy scorer over episode batches from a Trainer output's ids model."""
    import tensorflow as tf

    from cmml.models.export import load_ids_model

    serve = load_ids_model(model_uri).signatures["serving_default"]
    names = set(serve.structured_input_signature[1])

    def score(batch: Mapping[str, Any]):
        return serve(**{k: tf.constant(v) for k, v in batch.items() if k in names})["scores"].numpy()

    return score


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: dict[str, Any]) -> None:
        from cmml.models.training import TaskData

        self._log_startup(input_dict, output_dict, exec_properties)
        setting = exec_properties["setting"]
        rules = json.loads(exec_properties.get("config") or "{}")
        tasks = TaskData(artifact_utils.get_single_instance(input_dict["examples"]).uri, setting)
        clip = tuple(rules["rating_range"]) if (setting == "user" and rules.get("rating_range")) else None
        results = {}
        for name, key in (("candidate", "model"), ("baseline", "baseline_model")):
            model = artifact_utils.get_single_instance(input_dict[key])
            summary, _ = evaluation.evaluate_episodes(_ids_scorer(model.uri), tasks.test_batches(), setting, clip)
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
