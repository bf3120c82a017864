"""The validation gate's executor: fails the run, with a readable report, when validation found problems."""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from cmml.components.common import ArtifactDict
from cmml.components.validation.report import anomaly_lines, load_anomalies, summarize
from cmml.errors import CmmlError

REPORT_TEXT = "report.txt"
REPORT_JSON = "report.json"


class DataValidationError(CmmlError):
    """The data does not conform to the schema (message: the readable anomaly summary)."""


class GateExecutor(base_executor.BaseExecutor):
    """Fails the run with a readable summary when validation found problems."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: dict[str, Any]) -> None:
        report = artifact_utils.get_single_instance(output_dict["report"])
        ignore = json.loads(exec_properties.get("ignore_features") or "[]")
        max_rejected = exec_properties.get("max_rejected_fraction")
        by_split = {}
        for key in ("anomalies", "entity_anomalies"):
            for artifact in input_dict.get(key) or []:
                for split in artifact_utils.decode_split_names(artifact.split_names):
                    by_split[split] = load_anomalies(artifact.uri, split)
        problems = anomaly_lines(by_split, ignore)
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
