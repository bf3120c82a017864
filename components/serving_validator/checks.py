"""The two ways the ServingValidator serves a model: the real ``tensorflow_model_server``, or a fresh
Python process running :mod:`fresh_process <cmml.components.serving_validator.fresh_process>`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Mapping

import numpy as np

FRESH_PROCESS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fresh_process.py")
MAX_ERROR_CHARS = 4000  # TF's messages carry the failing node and the reason at the end; stack traces can be long


def npz_safe(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """np.savez without pickling: object (bytes) arrays become fixed-width bytes."""
    return {k: (v.astype(bytes) if v.dtype == object else v) for k, v in arrays.items()}


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text``, or its start and its end when it is longer than ``limit`` characters."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit // 4
    return f"{text[:head]}\n[... {len(text) - limit} characters left out ...]\n{text[-(limit - head) :]}"


def last_error(stderr: str) -> str:
    """The last traceback of a process's stderr (everything from it to the end), else all of stderr."""
    start = stderr.rfind("Traceback (most recent call last):")
    return stderr[start:] if start >= 0 else stderr


def check_in_fresh_process(model_dir: str, inputs: Mapping[str, np.ndarray], timeout: int = 600) -> dict:
    """Loads the SavedModel where this package is not importable and runs the checks."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs_path, report_path = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "report.json")
        np.savez(inputs_path, **npz_safe(inputs))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": tmp}
        proc = subprocess.run(
            [sys.executable, FRESH_PROCESS_SCRIPT, model_dir, inputs_path, report_path],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=timeout,
        )
        report = None
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as f:
                report = json.load(f)
        if proc.returncode != 0:
            error = (report or {}).get("error") or last_error(proc.stderr) or f"exit code {proc.returncode}"
            raise RuntimeError(f"serving check failed in a fresh process: {bounded(error)}")
    report["server"] = "fresh Python process (no tensorflow_model_server on PATH)"
    return report


def check_with_model_server(model_dir: str, inputs: Mapping[str, np.ndarray], binary: str) -> dict:
    """Serves the model with the real tensorflow_model_server and calls Predict over gRPC."""
    from cmml.serving.errors import ServingError
    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.ports import free_port
    from cmml.serving.signatures import DEFAULT_SIGNATURE
    from cmml.serving.warmup import signature_inputs

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
                        server.terminate()  # reading the stderr of a live server would block
                        _, err = server.communicate(timeout=30)
                        raise RuntimeError(
                            f"tensorflow_model_server did not load the model: {bounded(last_error(err.decode()))}"
                        )
                    time.sleep(0.5)
                _, signatures = client.metadata()
                request = signature_inputs(signatures[DEFAULT_SIGNATURE], inputs)
                scores = client.predict(request, DEFAULT_SIGNATURE).outputs["scores"]
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
