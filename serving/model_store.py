"""Loading SavedModel versions and swapping to new ones while requests are in flight.

:class:`LoadedModel` is one version: its SignatureDef map (read from ``saved_model.pb``, as TF
Serving reports it) and its callable signatures (plain ``tf.saved_model.load``: any SavedModel
with signatures works). :class:`ModelManager` polls a model's base path and serves the versions
its version policy picks (by default the newest). :class:`ServerCore` holds every model of the
server and their version labels. A request takes a reference to a :class:`LoadedModel` once, so a
swap never changes the model under a running request, and an old version is released only when
the last request holding it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from cmml.serving import layout, warmup
from cmml.serving.batching import BatchingOptions, BatchingSession, SharedBatchScheduler
from cmml.serving.config import VersionPolicy
from cmml.serving.errors import Limits, ServingError, code_from_int, invalid
from cmml.serving.signatures import (
    DEFAULT_SIGNATURE,
    SignatureInfo,
    read_meta_graph,
    signature_or_error,
    signatures_from_map,
    validate_inputs,
)

log = logging.getLogger("cmml.serving.double")
State = get_model_status_pb2.ModelVersionStatus.State


def kernel_message(exc: Exception) -> str:
    """TensorFlow's own message of a failed graph run, as TF Serving returns it: the kernel's text and its
    node (``indices[0,1] = 99 is not in [0, 10)\n\t [[{{node ...}}]]``), without what eager Python adds
    around it (``Graph execution error:``, ``Detected at node ... defined at``, its stack and ``[Op:...]``)."""
    lines = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
    out, skipping = [], False
    for line in lines:
        if not out and (line.strip() in ("", "Graph execution error:")):
            continue
        if line.startswith("Detected at node "):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "<stack traces unavailable>")) or not line.strip()):
            continue
        skipping = False
        out.append(line)
    text = "\n".join(out).strip() or type(exc).__name__
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", text)


DEADLINE_EXCEEDED = "Timed out waiting for notification"  # TensorFlow's DirectSession::WaitForNotification


class LoadedModel:
    """One loaded version. Thread-safe: TensorFlow functions may be called concurrently.

    With ``batching`` (a scheduler and TF Serving's BatchingParameters) requests of a signature are merged
    along axis 0 as TF Serving's BatchingSession merges them; warm-up records go through it too, as in TF
    Serving (the batching session wraps the session before warm-up runs).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        version: int,
        limits: Limits = Limits(),
        batching: tuple[SharedBatchScheduler, BatchingOptions] | None = None,
    ):
        import tensorflow as tf

        self.path = Path(path)
        self.version = version
        self.limits = limits
        self.warmup_records = 0  # how many warm-up records were replayed before it served
        meta = read_meta_graph(self.path)
        self.signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=meta.signature_def)
        self.signatures: dict[str, SignatureInfo] = signatures_from_map(self.signature_defs)
        self._tf = tf
        self._loaded = tf.saved_model.load(str(self.path), tags=list(meta.meta_info_def.tags) or None)
        self._functions = {
            name: self._loaded.signatures[name] for name in self.signatures if name in self._loaded.signatures
        }
        missing = sorted(set(self.signatures) - set(self._functions))
        if missing:
            raise ValueError(f"{self.path}: signature(s) {missing} are in the SignatureDef map but not loadable")
        self.batching: BatchingSession | None = None
        if batching is not None:
            scheduler, options = batching
            names = {
                name: (
                    {a: t.name for a, t in self.signature_defs.signature_def[name].inputs.items()},
                    {a: t.name for a, t in self.signature_defs.signature_def[name].outputs.items()},
                )
                for name in self.signatures
            }
            self.batching = BatchingSession(scheduler, options, names, self._run)

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Validates ``inputs`` against the signature, runs it, returns the (filtered) outputs.

        ``timeout`` (seconds; None: none) is the run's deadline, TF Serving's ``RunOptions.timeout_in_ms``: the
        gRPC deadline or ``--rest_api_timeout_in_ms``. Raises ServingError: INVALID_ARGUMENT for a request that
        does not fit the signature or that the graph rejects (TensorFlow's own code otherwise),
        DEADLINE_EXCEEDED past the timeout; the servers answer anything else with INTERNAL.
        """
        sig = signature_or_error(self.signatures, signature_name, grpc_style=True)
        seen = set()
        for alias in output_filter:  # TF Serving's PreProcessPrediction, in order
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            if alias not in sig.outputs:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(sig.outputs))}}}."
                )
            seen.add(alias)
        validate_inputs(sig, inputs, self.limits)
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = list(output_filter) or list(sig.outputs)
        if self.batching is not None and self.batching.batches(sig.name, wanted):
            outputs = self.batching.run(sig.name, inputs, deadline)
        else:
            outputs = self._run(sig.name, inputs, deadline)
        return {k: outputs[k] for k in wanted}

    def _run(self, signature: str, inputs: Mapping[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        """Every output of a signature. Past ``deadline`` the answer is DEADLINE_EXCEEDED, as from TensorFlow's
        session (which cancels the step; the double lets the call finish and then discards it)."""
        tf = self._tf
        try:
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            result = self._functions[signature](**tensors)
            outputs = {k: v.numpy() for k, v in result.items()}
        except tf.errors.OpError as exc:
            # the graph's own checks (e.g. an id outside an embedding table): TensorFlow's message, as TF Serving
            raise ServingError(code_from_int(exc.error_code), kernel_message(exc)) from None
        except (ValueError, TypeError) as exc:  # argument conversion by the function wrapper
            raise invalid(f"signature '{signature}': {exc}") from None
        except MemoryError:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"signature '{signature}': out of memory") from None
        if deadline is not None and time.monotonic() > deadline:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
        return outputs

    def predict_request(self, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
        """Runs a PredictRequest (decoded with the size limits); used for warm-up replay."""
        return self.predict(
            request.model_spec.signature_name or DEFAULT_SIGNATURE,
            warmup.request_inputs(request, self.limits),
            list(request.output_filter),
        )


@dataclasses.dataclass
class VersionStatus:
    """What GetModelStatus reports for one version."""

    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class ModelManager:
    """Serves the versions a policy picks under ``model_base_path`` and follows new ones.

    Args:
      model_name: the name clients put in ``model_spec.name``.
      model_base_path: ``<base>/<model_name>``, holding numeric version folders.
      poll_seconds: how often to look for new versions (TF Serving's
        ``--file_system_poll_wait_seconds``); 0 disables polling (call :meth:`refresh`).
      replay_warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves;
        a failing record fails the load, as in TF Serving.
      policy: which versions to serve (``model_version_policy``; default: the latest one).
      batching: TF Serving's request batching for every version (``--enable_batching``).
    """

    def __init__(
        self,
        model_name: str,
        model_base_path: str | os.PathLike,
        poll_seconds: float = 1.0,
        limits: Limits = Limits(),
        replay_warmup: bool = True,
        policy: VersionPolicy = VersionPolicy(),
        batching: tuple[SharedBatchScheduler, BatchingOptions] | None = None,
    ):
        if not model_name:
            raise ValueError("model_name must not be empty")
        self.model_name = model_name
        self.base_path = Path(model_base_path)
        self.poll_seconds = poll_seconds
        self.limits = limits
        self.replay_warmup = replay_warmup
        self.policy = policy
        self.batching = batching
        self._loaded: dict[int, LoadedModel] = {}
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, float] = {}  # version -> mtime of its saved_model.pb when it failed
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    # --- versions -----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """One poll, then TF Serving's AvailabilityPreservingPolicy until nothing is left to do: unload a
        version the policy no longer wants once a wanted one serves (or none is wanted, or two unwanted ones
        serve), load the highest wanted version not loaded yet. A version that fails to load is reported in the
        status and retried only when its files change."""
        with self._refresh_lock:
            on_disk = layout.list_versions(self.base_path)
            aspired = self.policy.aspired(on_disk)
            while True:
                loaded = dict(self._loaded)
                unaspired = sorted(v for v in loaded if v not in aspired)
                serving_aspired = any(v in aspired for v in loaded)
                if unaspired and (not aspired or serving_aspired or len(unaspired) > 1):
                    self._unload(unaspired[0])
                    continue
                new = sorted(
                    (v for v in aspired if v not in loaded and self._failed.get(v) != _mtime(on_disk[v])),
                    reverse=True,
                )
                if not new:
                    return
                self._load(new[0], on_disk[new[0]])

    def _load(self, version: int, path: Path) -> None:
        with self._lock:
            self._status[version] = VersionStatus(version, State.LOADING)
        started = time.perf_counter()
        try:
            model = LoadedModel(path, version, self.limits, self.batching)
            replayed = model.warmup_records = (
                warmup.replay_warmup(model.path, model.predict_request) if self.replay_warmup else 0
            )
        except Exception as exc:  # a broken version must never take the server down
            code = exc.code if isinstance(exc, ServingError) else grpc.StatusCode.UNKNOWN
            message = exc.message if isinstance(exc, ServingError) else str(exc).strip()
            message = message.splitlines()[0] if message else type(exc).__name__
            log.error(
                "test double: version %d of '%s' failed to load, still serving %s: %s",
                version,
                self.model_name,
                sorted(self._loaded) or "nothing",
                message,
            )
            with self._lock:
                self._failed[version] = _mtime(path)
                self._status[version] = VersionStatus(version, State.END, code, message)
            return
        with self._lock:
            if self._loaded and version > max(self._loaded):
                self.swaps += 1
            self._loaded[version] = model  # in-flight requests keep the object they already hold
            self._status[version] = VersionStatus(version, State.AVAILABLE)
        self._failed.pop(version, None)
        log.info(
            "test double: serving '%s' version %d from %s (loaded in %.1f s, %d warm-up record(s) replayed)",
            self.model_name,
            version,
            model.path,
            time.perf_counter() - started,
            replayed,
        )

    def _unload(self, version: int) -> None:
        with self._lock:
            self._loaded.pop(version, None)
            self._status[version] = VersionStatus(version, State.END)
        log.info("test double: unloaded '%s' version %d", self.model_name, version)

    def start(self) -> None:
        """Loads the versions to serve now and, with ``poll_seconds > 0``, keeps polling in a thread."""
        self.refresh()
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="version-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # e.g. the base path vanished mid-listing; try again next poll
                log.exception("test double: polling %s failed", self.base_path)

    # --- requests -------------------------------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        """The latest loaded version (what a request without a version gets)."""
        loaded = self._loaded
        return loaded[max(loaded)] if loaded else None

    @property
    def available(self) -> set[int]:
        return set(self._loaded)

    def failures(self) -> list[VersionStatus]:
        """Versions that ended with an error."""
        with self._lock:
            return [s for s in self._status.values() if s.error_code != grpc.StatusCode.OK]

    def get(self, version: int | None) -> LoadedModel:
        """``ServableRequest::Latest`` (the highest loaded version) or ``Specific``; NOT_FOUND otherwise."""
        loaded = self._loaded
        if version is None:
            if loaded:
                return loaded[max(loaded)]
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({self.model_name})")
        if version in loaded:
            return loaded[version]
        raise ServingError(
            grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({self.model_name}, {version})"
        )

    def resolve(self, name: str, version: int | None = None, label: str = "") -> LoadedModel:
        """The servable for a ModelSpec when this manager is the whole server (no labels: a label is
        INVALID_ARGUMENT, as in a TF Serving without a model config file)."""
        return ServerCore([self]).resolve(name, version, label)

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        if name != self.model_name:  # also an empty name, as TF Serving's get_model_status_impl.cc
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        with self._lock:
            table = dict(self._status)
        if version is not None:
            if version not in table:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [table[version]]
        if not table:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return [table[v] for v in sorted(table, reverse=True)]


class ServerCore:
    """The models of a server (TF Serving's ``ServerCore``): a manager per model and their version labels.

    ``allow_version_labels_for_unavailable_models`` is TF Serving's flag of that name: without it a label
    must name an AVAILABLE version when the labels are set (:func:`cmml.serving.config.check_labels`).
    """

    def __init__(self, managers: Sequence[ModelManager], labels: Mapping[str, Mapping[str, int]] | None = None):
        self.managers = {m.model_name: m for m in managers}
        self.labels = {name: dict(v) for name, v in (labels or {}).items()}

    def start(self) -> None:
        for manager in self.managers.values():
            manager.start()

    def stop(self) -> None:
        for manager in self.managers.values():
            manager.stop()

    def startup_error(self) -> ServingError | None:
        """TF Serving waits for every model's first versions to load and refuses to start when one fails
        (``ConnectSourcesWithFastInitialLoad``): the error it exits with, or None. (A model with no version on
        disk yet does not count: TF Serving would wait for one; the double serves NOT_FOUND meanwhile.)"""
        failed = []
        for name, manager in self.managers.items():
            if not manager.available:
                failed += [(name, s) for s in sorted(manager.failures(), key=lambda s: s.version)]
        if not failed:
            return None
        # load_servables_fast.cc: "{" + per servable "{" + ServableId::DebugString() ("{name: n version: v}")
        # + " due to error: " + status + "}, " + "}"
        parts = "".join(
            "{" + f"{{name: {name} version: {s.version}}} due to error: {s.error_code.name}: {s.error_message}" + "}, "
            for name, s in failed
        )
        return ServingError(
            grpc.StatusCode.UNKNOWN, f"{len(failed)} servable(s) did not become available: " + "{" + parts + "}"
        )

    def resolve(self, name: str, version: int | None = None, label: str = "") -> LoadedModel:
        """The servable for a ModelSpec, or TF Serving's error (``ServerCore::ServableRequestFromModelSpec``):
        INVALID_ARGUMENT without a name or for a label the model does not have, NOT_FOUND for an unknown model
        or a version that is not loaded (a label resolves to a version first)."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        if label:
            version = self.labels.get(name, {}).get(label)
            if version is None:
                raise invalid(f"Unrecognized servable version label: {label}")
        manager = self.managers.get(name)
        if manager is None:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}")
        return manager.get(version)

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus (a label is not read, as in TF Serving's get_model_status_impl.cc)."""
        manager = self.managers.get(name)
        if manager is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return manager.statuses(name, version)


def _mtime(version_dir: Path) -> float:
    for name in layout.SAVED_MODEL_FILES:
        path = version_dir / name
        if path.is_file():
            return path.stat().st_mtime
    return 0.0
