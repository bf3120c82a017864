"""The PredictionService test double: TF Serving's gRPC and REST API on top of plain TensorFlow.

It is NOT TensorFlow Serving and never says it is: it exists for local development and tests on
machines where ``tensorflow_model_server`` and Docker are not available. Production serving is
the official binary or container (BUILD.md, "Deploying with TF Serving").

    cmml serve --model_base_path /models/cmml --model_name cmml --port 8500 --rest_api_port 8501
    python -m cmml.serving.cli serve ...        # the same, without the cmml command

What it does like TF Serving: serves the newest numeric version under ``--model_base_path``,
polls for new versions every ``--file_system_poll_wait_seconds`` and swaps without dropping
requests, replays ``assets.extra/tf_serving_warmup_requests`` before a version serves,
implements Predict / GetModelMetadata / GetModelStatus over gRPC and the ``/v1/models`` REST API
for every signature, and answers bad requests with INVALID_ARGUMENT (REST 400) and a message.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from pathlib import Path

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from cmml.serving.errors import Limits
from cmml.serving.grpc_service import ModelServicer, PredictionServicer
from cmml.serving.model_store import ModelManager
from cmml.serving.rest import RestServer

log = logging.getLogger("cmml.serving.double")
BANNER = "cmml serving TEST DOUBLE (not TensorFlow Serving)"


class _ConciseGrpcDecodeErrors(logging.Filter):
    """grpc logs a full traceback for every request it cannot deserialize (a client error, answered
    INTERNAL by grpc itself); one line is enough in the double's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "deserializ" in record.getMessage():
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"gRPC: {record.getMessage()} ({record.exc_info[1]})",
                (),
                None,
                None,
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("grpc._common").addFilter(_ConciseGrpcDecodeErrors())


class ServingDouble:
    """gRPC + REST test double for one model. Use as a context manager or call start()/stop().

    Args:
      model_base_path: ``<base>/<model_name>``, holding numeric version folders.
      model_name: the name clients request.
      port: gRPC port (0: any free port; see :attr:`grpc_port`).
      rest_api_port: REST port (0: any free port; None: no REST API).
      host: interface to bind; loopback by default.
      poll_seconds: version polling period (0: no polling).
      grpc_max_threads / max_concurrent_rpcs: gRPC worker threads and the number of RPCs admitted
        at once (beyond it gRPC answers RESOURCE_EXHAUSTED instead of queueing without bound).
      rest_api_num_threads / rest_api_timeout_seconds: concurrent REST model calls and the idle
        timeout of a REST connection.
    """

    def __init__(
        self,
        model_base_path: str | os.PathLike,
        model_name: str,
        port: int = 0,
        rest_api_port: int | None = 0,
        host: str = "127.0.0.1",
        poll_seconds: float = 1.0,
        limits: Limits = Limits(),
        grpc_max_threads: int = 8,
        max_concurrent_rpcs: int = 256,
        rest_api_num_threads: int = 8,
        rest_api_timeout_seconds: float = 30.0,
    ):
        self.model_base_path = Path(model_base_path)
        self.model_name = model_name
        self.host = host
        self.limits = limits
        self.manager = ModelManager(model_name, model_base_path, poll_seconds=poll_seconds, limits=limits)
        self._requested = (port, rest_api_port)
        self._threads = (grpc_max_threads, max_concurrent_rpcs, rest_api_num_threads, rest_api_timeout_seconds)
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    def start(self) -> ServingDouble:
        """Loads the newest version (if any), binds both ports and starts serving."""
        grpc_threads, max_rpcs, rest_threads, rest_timeout = self._threads
        port, rest_port = self._requested
        self.manager.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=grpc_threads, thread_name_prefix="double-grpc"),
            maximum_concurrent_rpcs=max_rpcs,
            options=[
                ("grpc.max_receive_message_length", self.limits.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a busy port is an error, not a silently shared one
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.limits), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{port}")
        except RuntimeError as exc:
            self.manager.stop()
            raise OSError(f"cannot bind gRPC port {self.host}:{port}: {exc}") from None
        if not bound:
            self.manager.stop()
            raise OSError(f"cannot bind gRPC port {self.host}:{port}")
        server.start()
        self._grpc, self.grpc_port = server, bound
        if rest_port is not None:
            try:
                self._rest = RestServer((self.host, rest_port), self.manager, self.limits, rest_threads, rest_timeout)
            except OSError:
                self.stop()
                raise
            self.rest_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self._rest.serve_forever, kwargs={"poll_interval": 0.2}, name="double-rest", daemon=True
            )
            self._rest_thread.start()
        current = self.manager.current
        log.info(
            "%s: model '%s' %s; gRPC on %s:%s, REST %s",
            BANNER,
            self.model_name,
            f"version {current.version}" if current else f"(no version yet under {self.model_base_path})",
            self.host,
            self.grpc_port,
            f"on {self.host}:{self.rest_port}" if self.rest_port else "disabled",
        )
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stops accepting requests, lets running ones finish (up to ``grace`` seconds), unloads."""
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        self.manager.stop()

    def ready_line(self) -> str:
        """One line for logs and for processes that start the double and wait for it."""
        current = self.manager.current
        version = current.version if current else "none"
        rest = f"{self.host}:{self.rest_port}" if self.rest_port else "disabled"
        return f"{BANNER}: model={self.model_name} version={version} grpc={self.host}:{self.grpc_port} rest={rest}"

    def __enter__(self) -> ServingDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
