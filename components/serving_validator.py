"""ServingValidator: InfraValidator's job without Docker.

Copies the Trainer's serving model into ``<infra_blessing>/stamped_model`` (the layout TFX's Pusher
pushes from), builds canned requests from real raw interactions (ExampleGen's examples grouped by
user: the support set and the last ``query`` rows as candidates), writes them as TF Serving warm-up
records (``assets.extra/tf_serving_warmup_requests``) and then serves them:

* with ``tensorflow_model_server`` when it is on PATH (the real server replays the warm-up records
  at load, then answers Predict over gRPC), or
* otherwise by loading the SavedModel in a fresh Python process in which this package cannot be
  imported, calling every signature, and checking shapes, finiteness and that the signatures agree
  with each other (two-stage = one call; ``update_context`` = ``encode_context``; raw tf.Examples =
  raw tensors).

The output is a standard ``InfraBlessing`` (``blessed``, ``has_model``), so the stock Pusher pushes
the stamped model, warm-up included, only when it passed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, List, Mapping

import numpy as np
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter
from tfx.utils import path_utils

from cmml.data import records as R

REPORT_FILE = "serving_validation.json"

# Runs in a fresh interpreter: `cmml` cannot be imported there, Keras 2 is not selected.
CHECK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["cmml"] = None
    import numpy as np, tensorflow as tf
    model_dir, inputs_path, report_path = sys.argv[1:4]
    data = dict(np.load(inputs_path, allow_pickle=False))
    fns = tf.saved_model.load(model_dir).signatures
    report = {"signatures": sorted(fns.keys()), "checks": []}
    def call(name, **inputs):
        spec = fns[name].structured_input_signature[1]
        return {k: v.numpy() for k, v in fns[name](**{k: tf.constant(v, spec[k].dtype) for k, v in inputs.items()}).items()}
    def check(ok, message):
        report["checks"].append(message)
        if not ok:
            raise SystemExit("check failed: " + message)
    pick = lambda prefix: {k: v for k, v in data.items() if k.startswith(prefix) and not k.endswith("_examples")}
    scores = call("serving_default", **pick("support_"), **pick("query_"))["scores"]
    b, q = data["query_mask"].shape
    check(scores.shape == (b, q), f"serving_default scores {scores.shape} for {b} tasks x {q} candidates")
    check(bool(np.isfinite(scores).all()), "serving_default scores are finite")
    if "encode_context" in fns:
        enc = call("encode_context", **pick("support_"))
        two_stage = call("score", context=enc["context"], **pick("query_"))["scores"]
        check(np.allclose(two_stage, scores, atol=1e-4), "encode_context + score equals serving_default")
        new = {"new_" + k[len("support_"):]: v for k, v in pick("support_").items()}
        upd = call("update_context", state=np.zeros_like(enc["state"]), **new)
        check(np.allclose(upd["context"], enc["context"], atol=1e-4), "update_context from an empty state equals encode_context")
    if "serve_tf_examples" in fns and "support_examples" in data:
        ex = call("serve_tf_examples", support_examples=data["support_examples"], query_examples=data["query_examples"])["scores"]
        check(np.allclose(ex * data["query_mask"], scores * data["query_mask"], atol=1e-4), "serve_tf_examples equals serving_default on the same rows")
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    """
)


def _dense_rows(values: list, dtype, width: int | None = None) -> np.ndarray:
    """A list of per-row value lists -> [rows] (scalars) or [rows, width] padded arrays."""
    pad = b"" if dtype == object else 0
    if width is None:
        return np.array([v[0] if v else pad for v in values], dtype=dtype)
    out = np.full((len(values), max(width, 1)), pad, dtype=dtype)
    for i, v in enumerate(values):
        out[i, : len(v)] = v[:width]
    return out


def canned_episodes(
    examples_uri: str,
    input_specs: Mapping[str, Any],
    tasks: int = 4,
    support: int = 32,
    query: int = 10,
    max_rows: int = 20_000,
) -> dict[str, np.ndarray]:
    """Raw request inputs built from ExampleGen's examples: users with enough rows become tasks.

    ``input_specs``: the serving signature's inputs (name -> TensorSpec). Returns the
    ``support_*``/``query_*`` arrays, masks, support labels, and ``support_examples`` /
    ``query_examples`` (the same rows as serialized tf.Examples).
    """
    import tensorflow as tf

    features = sorted({k[len("support_") :] for k in input_specs if k.startswith("support_")} - {"label", "mask"})
    files = sorted(glob.glob(os.path.join(examples_uri, "Split-*", "*")))
    if not files:
        raise FileNotFoundError(f"no examples under {examples_uri}")
    rows: dict[str, list] = {}
    parse = {name: tf.io.VarLenFeature(input_specs[f"support_{name}"].dtype) for name in features}
    parse.update({R.USER_ID: tf.io.VarLenFeature(tf.string), R.LABEL: tf.io.VarLenFeature(tf.float32)})
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP").take(max_rows).batch(2048):
        parsed = tf.io.parse_example(serialized, parse)
        dense = {
            k: tf.sparse.to_dense(v, default_value=b"" if v.dtype == tf.string else 0).numpy()
            for k, v in parsed.items()
        }
        for i, ex in enumerate(serialized.numpy()):
            user = dense[R.USER_ID][i][0]
            row = {
                name: [x for x in dense[name][i] if (x != b"" if isinstance(x, bytes) else x != 0)] for name in features
            }
            row[R.LABEL] = float(dense[R.LABEL][i][0])
            row["example"] = ex
            rows.setdefault(user, []).append(row)
    users = [u for u, r in rows.items() if len(r) >= query + 3][:tasks]
    if not users:
        raise ValueError(f"no user with at least {query + 3} interactions in the first {max_rows} examples")
    out: dict[str, np.ndarray] = {}
    for part, size in (("support", support), ("query", query)):
        pieces = [(rows[u][:-query][:size] if part == "support" else rows[u][-query:]) for u in users]
        mask = np.zeros((len(users), size), np.float32)
        for t, p in enumerate(pieces):
            mask[t, : len(p)] = 1.0
        for name in features:
            spec = input_specs[f"{part}_{name}"]
            dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
            width = None if spec.shape.rank == 2 else max(1, max(len(r[name]) for p in pieces for r in p))
            padded = [[r[name] for r in p] + [[]] * (size - len(p)) for p in pieces]
            out[f"{part}_{name}"] = np.stack([_dense_rows(v, dtype, width) for v in padded])
        out[f"{part}_mask"] = mask
        out[f"{part}_examples"] = np.array(
            [[r["example"] for r in p] + [b""] * (size - len(p)) for p in pieces], dtype=object
        )
        if part == "support":
            out["support_label"] = np.array(
                [[r[R.LABEL] for r in p] + [0.0] * (size - len(p)) for p in pieces], np.float32
            )
    return out


def _npz_safe(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """np.savez without pickling: object (bytes) arrays become fixed-width bytes."""
    return {k: (v.astype(bytes) if v.dtype == object else v) for k, v in arrays.items()}


def check_in_fresh_process(model_dir: str, inputs: Mapping[str, np.ndarray], timeout: int = 600) -> dict:
    """Loads the SavedModel where this package is not importable and runs the checks."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "inputs.npz"), **_npz_safe(inputs))
        script = os.path.join(tmp, "check.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(CHECK_SCRIPT)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": tmp}
        proc = subprocess.run(
            [sys.executable, script, model_dir, os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "report.json")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"serving check failed in a fresh process: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
            )
        with open(os.path.join(tmp, "report.json"), encoding="utf-8") as f:
            report = json.load(f)
    report["server"] = "fresh Python process (no tensorflow_model_server on PATH)"
    return report


def check_with_model_server(model_dir: str, inputs: Mapping[str, np.ndarray], binary: str) -> dict:
    """Serves the model with the real tensorflow_model_server and calls Predict over gRPC."""
    import time

    from cmml.serving.client import GrpcClient
    from cmml.serving.protocol import ServingError
    from cmml.serving.testing import free_port

    with tempfile.TemporaryDirectory() as base:
        shutil.copytree(model_dir, os.path.join(base, "model", "1"))
        port = free_port()
        server = subprocess.Popen(
            [binary, f"--port={port}", "--model_name=model", f"--model_base_path={base}/model"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with GrpcClient(f"127.0.0.1:{port}", "model", timeout=30.0) as client:
                deadline = time.monotonic() + 120
                while not _available(client, ServingError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"tensorflow_model_server did not load the model: {server.stderr.read().decode()[-2000:]}"
                        )
                    time.sleep(0.5)
                request = {k: v for k, v in inputs.items() if not k.endswith("_examples")}
                scores = client.predict(request, "serving_default").outputs["scores"]
            if scores.shape != inputs["query_mask"].shape or not np.isfinite(scores).all():
                raise RuntimeError(
                    f"tensorflow_model_server returned scores {scores.shape}, finite={np.isfinite(scores).all()}"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {"server": binary, "checks": ["serving_default over gRPC: shapes and finiteness"]}


def _available(client, error_type) -> bool:
    try:
        return any(s.state == "AVAILABLE" for s in client.status())
    except error_type:
        return False


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        import tensorflow as tf

        from cmml.serving.warmup import write_warmup_requests

        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        stamped = path_utils.stamped_model_path(blessing.uri)
        shutil.copytree(path_utils.serving_model_path(model.uri), stamped, dirs_exist_ok=True)

        signature = tf.saved_model.load(stamped).signatures["serving_default"]
        inputs = canned_episodes(examples.uri, signature.structured_input_signature[1])
        requests = []
        for k in range(min(int(exec_properties.get("warmup_requests") or 0), len(inputs["query_mask"]))):
            one = {name: value[k : k + 1] for name, value in inputs.items() if not name.endswith("_examples")}
            requests.append(("serving_default", one))
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


class ServingValidatorSpec(ComponentSpec):
    PARAMETERS = {"warmup_requests": ExecutionParameter(type=int, optional=True)}
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"blessing": ChannelParameter(type=standard_artifacts.InfraBlessing)}


class ServingValidator(base_component.BaseComponent):
    """Validates that the exported model serves (see the module docstring)."""

    SPEC_CLASS = ServingValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, warmup_requests: int = 4):
        """
        Args:
          model: the Trainer's output (its serving model is validated).
          examples: ExampleGen's raw examples (canned requests are built from them).
          warmup_requests: how many canned requests become warm-up records (0: none).
        """
        super().__init__(
            spec=ServingValidatorSpec(
                model=model,
                examples=examples,
                warmup_requests=warmup_requests,
                blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            )
        )
