"""Helpers for tests and benchmarks of the serving path: the test double in its own process,
resident memory, and small exported CMML models.

The double runs in a child process (``python -m cmml.serving.cli serve``) so that a crash is seen
as a dead process and its memory can be measured on its own.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cmml.serving.ports import free_port

READY_MARK = "TEST DOUBLE (not TensorFlow Serving)"


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class DoubleProcess:
    """The test double in a child process, on free loopback ports.

    Usage: ``with DoubleProcess(base_path, "cmml") as double: GrpcClient(double.grpc_target, "cmml")``.
    The child's stderr (its log) is kept in :attr:`log_lines`.
    """

    def __init__(
        self,
        model_base_path: str | os.PathLike,
        model_name: str,
        poll_seconds: float = 1.0,
        extra_args: Sequence[str] = (),
        start_timeout: float = 180.0,
        env: Mapping[str, str] | None = None,
    ):
        self.model_base_path = Path(model_base_path)
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen | None = None
        self.grpc_port = self.rest_port = 0
        self.ready_line = ""
        self.log_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def start(self) -> DoubleProcess:
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = [
            sys.executable,
            "-m",
            "cmml.serving.cli",
            "serve",
            "--model_base_path",
            str(self.model_base_path.absolute()),  # TF Serving takes absolute base paths only
            "--model_name",
            self.model_name,
            "--port",
            str(self.grpc_port),
            "--rest_api_port",
            str(self.rest_port),
            "--file_system_poll_wait_seconds",
            str(self.poll_seconds),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if not self.alive():
                    break
                continue
            if line is None:
                break
            if READY_MARK in line:
                self.ready_line = line.strip()
                return self
        self.stop()
        raise RuntimeError(
            f"test double did not start within {self.start_timeout:.0f} s; log:\n" + "\n".join(self.log_lines[-30:])
        )

    def _pump(self, stream, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self._lines.put(line)
            else:
                self.log_lines.append(line.rstrip("\n"))
        if is_stdout:
            self._lines.put(None)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def wait_for_version(self, client, version: int, timeout: float = 120.0) -> None:
        """Blocks until ``client.status()`` reports ``version`` AVAILABLE."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if any(s.version == version and s.state == "AVAILABLE" for s in client.status()):
                    return
            except Exception:  # not loaded yet
                pass
            if not self.alive():
                raise RuntimeError("test double exited; log:\n" + "\n".join(self.log_lines[-30:]))
            time.sleep(0.1)
        raise TimeoutError(
            f"version {version} not AVAILABLE after {timeout} s; log:\n" + "\n".join(self.log_lines[-30:])
        )

    def __enter__(self) -> DoubleProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def export_cmml_model(
    export_dir: str | os.PathLike,
    specs=None,
    config=None,
    seed: int = 0,
    episodes: Mapping[str, np.ndarray] | None = None,
):
    """Builds a CMML model with random weights (seeded), exports it, returns ``(model, path)``."""
    import tensorflow as tf

    import cmml  # noqa: F401
    from cmml.models.cmml import CMMLModel
    from cmml.models.config import CMMLConfig
    from cmml.models.export import export_saved_model
    from cmml.models.testing import DEFAULT_SPECS, random_episodes

    tf.keras.utils.set_random_seed(seed)
    model = CMMLModel(specs or DEFAULT_SPECS, config or CMMLConfig(embedding_dim=8))
    batch = (
        episodes
        if episodes is not None
        else random_episodes(specs or DEFAULT_SPECS, tasks=2, support=5, query=4, seed=seed)
    )
    model({k: tf.constant(v) for k, v in batch.items()})  # build the weights
    return model, export_saved_model(model, export_dir)


def hash_ids(raw: Mapping[str, object], specs=None) -> dict:
    """A stand-in for the tf.Transform graph (stock ops only): raw strings -> ids, index 0 for ''
    (padding), else a hash bucket in 1..vocab-1. ``preprocess`` of a raw-feature test export."""
    import tensorflow as tf

    from cmml.models.testing import DEFAULT_SPECS

    out = {}
    for spec in specs or DEFAULT_SPECS:
        value = raw[spec.name]
        ids = tf.strings.to_hash_bucket_fast(value, spec.vocab_size - 1) + 1
        out[spec.name] = tf.where(tf.equal(value, ""), tf.zeros_like(ids), ids)
    return out


def serving_inputs(
    episodes: Mapping[str, np.ndarray],
    signature: str,
    context: np.ndarray | None = None,
    state: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The inputs of one CMML signature from an episode batch (``new_*`` = the support set)."""
    support = {k: v for k, v in episodes.items() if k.startswith("support_")}
    query = {k: v for k, v in episodes.items() if k.startswith("query_") and k != "query_label"}
    if signature == "serving_default":
        return {**support, **query}
    if signature == "encode_context":
        return support
    if signature == "score":
        return {"context": context, **query}
    if signature == "update_context":
        return {"state": state, **{"new_" + k[len("support_") :]: v for k, v in support.items()}}
    raise ValueError(f"unknown CMML signature {signature!r}")
