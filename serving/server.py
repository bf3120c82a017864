"""The PredictionService test double: TF Serving's gRPC and REST API on top of plain TensorFlow.

It is NOT TensorFlow Serving and never says it is: it exists for local development and tests on
machines where ``tensorflow_model_server`` and Docker are not available. Production serving is
the official binary or container (BUILD.md, "Deploying with TF Serving").

    cmml serve --model_base_path /models/cmml --model_name cmml --port 8500 --rest_api_port 8501
    python -m cmml.serving.cli serve ...        # the same, without the cmml command

What it does like TF Serving: serves the newest numeric version under ``--model_base_path`` (or
the models, version policies and labels of ``--model_config_file``), polls for new versions every
``--file_system_poll_wait_seconds`` and swaps without dropping requests, replays
``assets.extra/tf_serving_warmup_requests`` before a version serves, batches requests with
``--enable_batching``, implements Predict / GetModelMetadata / GetModelStatus over gRPC and the
``/v1/models`` REST API for every signature, and answers bad requests with TF Serving's codes and
messages. docs/serving.md lists where it still differs.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Sequence

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from cmml.serving.batching import BatchingOptions, SharedBatchScheduler
from cmml.serving.config import ModelConfig, check_labels
from cmml.serving.errors import Limits
from cmml.serving.grpc_service import ModelServicer, PredictionServicer
from cmml.serving.model_store import ModelManager, ServerCore
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
    """gRPC + REST test double. Use as a context manager or call start()/stop().

    Serves one model (``model_base_path`` + ``model_name``) or, with ``models``, every model of a config
    (TF Serving's ``--model_config_file``; ``model_base_path`` and ``model_name`` are then ignored).

    Args:
      model_base_path: ``<base>/<model_name>``, holding numeric version folders.
      model_name: the name clients request.
      port: gRPC port (0: any free port; see :attr:`grpc_port`).
      rest_api_port: REST port (0: any free port; None: no REST API). The gRPC port is refused, as TF
        Serving refuses it (it then serves no REST API).
      host: interface to bind; loopback by default.
      poll_seconds: version polling period (0: no polling).
      limits: size caps (:class:`~cmml.serving.errors.Limits`; TF Serving's by default).
      grpc_max_threads / max_concurrent_rpcs: gRPC worker threads and the number of RPCs admitted
        at once (beyond it gRPC answers RESOURCE_EXHAUSTED instead of queueing without bound).
      rest_api_num_threads: REST requests processed at once (the others wait).
      rest_api_timeout_seconds: deadline of a REST request's model run (TF Serving's
        ``--rest_api_timeout_in_ms``); None or <= 0: none.
      models: the models of a model config (:mod:`cmml.serving.config`).
      allow_version_labels_for_unavailable_models: TF Serving's flag; without it a config with labels is
        refused at start-up (see :func:`cmml.serving.config.check_labels`).
      batching: TF Serving's request batching (``--enable_batching``), or None.
      cors: add TF Serving's CORS headers to REST responses (``--rest_api_enable_cors_support``).
      grpc_channel_arguments: extra gRPC server arguments (``--grpc_channel_arguments``), after TF Serving's
        ``grpc.max_receive_message_length`` of ``limits.max_request_bytes`` (which gRPC then keeps: for a
        repeated key the first value wins).
    """

    def __init__(
        self,
        model_base_path: str | os.PathLike | None,
        model_name: str = "default",
        port: int = 0,
        rest_api_port: int | None = 0,
        host: str = "127.0.0.1",
        poll_seconds: float = 1.0,
        limits: Limits = Limits(),
        grpc_max_threads: int = 8,
        max_concurrent_rpcs: int = 256,
        rest_api_num_threads: int = 8,
        rest_api_timeout_seconds: float | None = 30.0,
        models: Sequence[ModelConfig] | None = None,
        allow_version_labels_for_unavailable_models: bool = False,
        batching: BatchingOptions | None = None,
        cors: bool = False,
        grpc_channel_arguments: Sequence[tuple[str, int | str]] = (),
    ):
        if models is None:
            if model_base_path is None:
                raise ValueError("give model_base_path (one model) or models (a model config)")
            models = [ModelConfig(model_name, Path(model_base_path))]
        self.models = list(models)
        self.model_base_path = self.models[0].base_path if self.models else None
        self.model_name = self.models[0].name if self.models else model_name
        self.host = host
        self.limits = limits
        self.batching = batching
        self._scheduler: SharedBatchScheduler | None = None
        if batching is not None:
            batching.check_scheduler()
            self._scheduler = SharedBatchScheduler(batching.num_batch_threads, batching.thread_pool_name)
        check_labels(self.models, {}, allow_version_labels_for_unavailable_models)
        self.core = ServerCore(
            [
                ModelManager(
                    m.name,
                    m.base_path,
                    poll_seconds=poll_seconds,
                    limits=limits,
                    policy=m.policy,
                    batching=(self._scheduler, batching) if self._scheduler is not None else None,
                )
                for m in self.models
            ],
            {m.name: m.version_labels for m in self.models},
        )
        self._requested = (port, rest_api_port)
        self._threads = (grpc_max_threads, max_concurrent_rpcs, rest_api_num_threads)
        self._rest_timeout = (
            rest_api_timeout_seconds if rest_api_timeout_seconds and rest_api_timeout_seconds > 0 else None
        )
        self._cors = cors
        self._channel_arguments = list(grpc_channel_arguments)
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port: int | None = None
        self.rest_port: int | None = None

    @property
    def manager(self) -> ModelManager:
        """The manager of the (first) model."""
        return self.core.managers[self.model_name]

    def start(self) -> ServingDouble:
        """Loads every model's versions, binds both ports and starts serving. Raises ServingError with TF
        Serving's start-up error when a model has versions and none of them loads."""
        grpc_threads, max_rpcs, rest_threads = self._threads
        port, rest_port = self._requested
        self.core.start()
        failed = self.core.startup_error()
        if failed is not None:
            self.stop()
            raise failed
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=grpc_threads, thread_name_prefix="double-grpc"),
            maximum_concurrent_rpcs=max_rpcs,
            # server.cc: SetMaxMessageSize(kint32max) first, then --grpc_channel_arguments. For a key given twice
            # gRPC keeps the first one (grpcio here; TF Serving's ServerBuilder passes them in this order too)
            options=[
                ("grpc.max_receive_message_length", self.limits.max_request_bytes),
                ("grpc.so_reuseport", 0),  # a busy port is an error, not a silently shared one (a double choice)
                *self._channel_arguments,
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self.limits), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.core), server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{port}")
        except RuntimeError as exc:
            self.stop()
            raise OSError(f"cannot bind gRPC port {self.host}:{port}: {exc}") from None
        if not bound:
            self.stop()
            raise OSError(f"cannot bind gRPC port {self.host}:{port}")
        server.start()
        self._grpc, self.grpc_port = server, bound
        if rest_port is not None and rest_port != 0 and rest_port == port:
            # server.cc: the REST API is skipped, the server keeps running
            log.error(
                "server_options.http_port cannot be same as grpc_port. Please use a different port for "
                "HTTP/REST API. Skipped exporting HTTP/REST API."
            )
        elif rest_port is not None:
            try:
                self._rest = RestServer(
                    (self.host, rest_port), self.core, self.limits, rest_threads, self._rest_timeout, self._cors
                )
            except OSError:
                self.stop()
                raise
            self.rest_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self._rest.serve_forever, kwargs={"poll_interval": 0.2}, name="double-rest", daemon=True
            )
            self._rest_thread.start()
        log.info(
            "%s: %s; gRPC on %s:%s, REST %s%s",
            BANNER,
            self._models_line(),
            self.host,
            self.grpc_port,
            f"on {self.host}:{self.rest_port}" if self.rest_port else "disabled",
            f"; batching {self.batching}" if self.batching else "",
        )
        return self

    def _models_line(self) -> str:
        parts = []
        for name, manager in self.core.managers.items():
            versions = sorted(manager.available)
            parts.append(
                f"model '{name}' version(s) {','.join(map(str, versions))} ({manager.policy.describe()})"
                if versions
                else f"model '{name}' (no version yet under {manager.base_path})"
            )
        return "; ".join(parts) or "no models (empty model config)"

    def stop(self, grace: float = 2.0) -> None:
        """Stops accepting requests, lets running ones finish (up to ``grace`` seconds), unloads."""
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        self.core.stop()
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None

    def ready_line(self) -> str:
        """One line for logs and for processes that start the double and wait for it."""
        rest = f"{self.host}:{self.rest_port}" if self.rest_port else "disabled"
        if len(self.core.managers) == 1:
            current = self.manager.current
            models = f"model={self.model_name} version={current.version if current else 'none'}"
        else:
            models = "models=" + ",".join(
                f"{name}:{m.current.version if m.current else 'none'}" for name, m in self.core.managers.items()
            )
        return f"{BANNER}: {models} grpc={self.host}:{self.grpc_port} rest={rest}"

    def __enter__(self) -> ServingDouble:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
