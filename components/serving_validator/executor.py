"""The ServingValidator's executor: stamp the model, write warm-up records, serve canned requests."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from cmml.components.common import ArtifactDict
from cmml.components.serving_validator.canned import canned_episodes
from cmml.components.serving_validator.checks import check_in_fresh_process, check_with_model_server
from cmml.serving.signatures import DEFAULT_SIGNATURE, RAW_SIGNATURE, signature_def_map, signatures_from_map

REPORT_FILE = "serving_validation.json"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: dict[str, Any]) -> None:
        from cmml.serving.warmup import canned_requests, write_warmup_requests

        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        entities = artifact_utils.get_single_instance(input_dict["entities"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        stamped = path_utils.stamped_model_path(blessing.uri)
        shutil.copytree(path_utils.serving_model_path(model.uri), stamped, dirs_exist_ok=True)

        signatures = signatures_from_map(signature_def_map(stamped))
        # raw rows as episode tensors (items by id and serve_tf_examples take their ids and examples)
        raw = signatures.get(RAW_SIGNATURE) or signatures[DEFAULT_SIGNATURE]
        inputs = canned_episodes(examples.uri, entities.uri, raw.inputs)
        requests = []  # warm-up: the first tasks, one request per signature each (TF Serving loads them all)
        for k in range(min(int(exec_properties.get("warmup_requests") or 0), len(inputs["query_mask"]))):
            requests += canned_requests(stamped, {name: value[k : k + 1] for name, value in inputs.items()})
        if requests:
            write_warmup_requests(stamped, requests)

        binary = shutil.which("tensorflow_model_server")
        try:
            report = (
                check_with_model_server(stamped, inputs, binary) if binary else check_in_fresh_process(stamped, inputs)
            )
            passed, report["warmup_requests"] = True, len(requests)
        except Exception as exc:  # a failed check is a verdict, not a crash of the pipeline
            passed, report = False, {"error": str(exc)}
            logging.error("ServingValidator: %s", exc)
        report["blessed"] = passed
        with open(os.path.join(blessing.uri, REPORT_FILE), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        blessing.set_int_custom_property("blessed", int(passed))
        blessing.set_int_custom_property("has_model", int(passed))
        logging.info("ServingValidator: %s — %s", "passed" if passed else "FAILED", report)
