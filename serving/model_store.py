"""Loading SavedModel versions and swapping to new ones while requests are in flight.

:class:`LoadedModel` is one version: its SignatureDef map (read from ``saved_model.pb``, as TF
Serving reports it) and its callable signatures (plain ``tf.saved_model.load``: any SavedModel
with signatures works). :class:`ModelManager` polls the model base path and serves the newest
numeric version. A request takes a reference to the current :class:`LoadedModel` once, so a swap
never changes the model under a running request, and the old version is released only when the
last request holding it returns.
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


class LoadedModel:
    """One loaded version. Thread-safe: TensorFlow functions may be called concurrently."""

    def __init__(self, path: str | os.PathLike, version: int, limits: Limits = Limits()):
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

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Validates ``inputs`` against the signature, runs it, returns the (filtered) outputs.

        Raises ServingError: INVALID_ARGUMENT for a request that does not fit the signature or that
        the graph rejects (TensorFlow's own code otherwise); the servers answer anything else with INTERNAL.
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
        tf = self._tf
        try:
            tensors = {k: tf.constant(v) for k, v in inputs.items()}
            result = self._functions[sig.name](**tensors)
            wanted = output_filter or list(sig.outputs)
            return {k: result[k].numpy() for k in wanted}
        except tf.errors.OpError as exc:
            # the graph's own checks (e.g. an id outside an embedding table): TensorFlow's message, as TF Serving
            raise ServingError(code_from_int(exc.error_code), kernel_message(exc)) from None
        except (ValueError, TypeError) as exc:  # argument conversion by the function wrapper
            raise invalid(f"signature '{sig.name}': {exc}") from None
        except MemoryError:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"signature '{sig.name}': out of memory") from None

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
    """Serves the newest numeric version under ``model_base_path`` and follows new versions.

    Args:
      model_name: the name clients put in ``model_spec.name``.
      model_base_path: ``<base>/<model_name>``, holding numeric version folders.
      poll_seconds: how often to look for new versions (TF Serving's
        ``--file_system_poll_wait_seconds``); 0 disables polling (call :meth:`refresh`).
      replay_warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves;
        a failing record fails the load, as in TF Serving.
    """

    def __init__(
        self,
        model_name: str,
        model_base_path: str | os.PathLike,
        poll_seconds: float = 1.0,
        limits: Limits = Limits(),
        replay_warmup: bool = True,
    ):
        if not model_name:
            raise ValueError("model_name must not be empty")
        self.model_name = model_name
        self.base_path = Path(model_base_path)
        self.poll_seconds = poll_seconds
        self.limits = limits
        self.replay_warmup = replay_warmup
        self._current: LoadedModel | None = None
        self._status: dict[int, VersionStatus] = {}
        self._failed: dict[int, float] = {}  # version -> mtime of its saved_model.pb when it failed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    # --- versions -----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """One poll: loads the newest version if it is not the one being served. A version that
        fails to load is reported in the status and retried only when its files change."""
        versions = layout.list_versions(self.base_path)
        current = self._current
        if not versions:
            if current is not None:
                log.warning(
                    "test double: no version left under %s; unloading version %d", self.base_path, current.version
                )
                with self._lock:
                    self._current = None
                    self._status[current.version] = VersionStatus(current.version, State.END)
            return
        newest = max(versions)
        if current is not None and current.version == newest:
            return
        stamp = _mtime(versions[newest])
        if self._failed.get(newest) == stamp:
            return
        with self._lock:
            self._status[newest] = VersionStatus(newest, State.LOADING)
        started = time.perf_counter()
        try:
            model = LoadedModel(versions[newest], newest, self.limits)
            replayed = model.warmup_records = (
                warmup.replay_warmup(model.path, model.predict_request) if self.replay_warmup else 0
            )
        except Exception as exc:  # a broken version must never take the server down
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.error(
                "test double: version %d of '%s' failed to load, still serving %s: %s",
                newest,
                self.model_name,
                current.version if current else "nothing",
                message,
            )
            with self._lock:
                self._failed[newest] = stamp
                self._status[newest] = VersionStatus(newest, State.END, grpc.StatusCode.UNKNOWN, message)
            return
        with self._lock:
            self._current = model  # in-flight requests keep the object they already hold
            self._status[newest] = VersionStatus(newest, State.AVAILABLE)
            if current is not None:
                self._status[current.version] = VersionStatus(current.version, State.END)
                self.swaps += 1
        self._failed.pop(newest, None)
        log.info(
            "test double: serving '%s' version %d from %s (loaded in %.1f s, %d warm-up record(s) replayed)",
            self.model_name,
            newest,
            model.path,
            time.perf_counter() - started,
            replayed,
        )

    def start(self) -> None:
        """Loads the newest version now and, with ``poll_seconds > 0``, keeps polling in a thread."""
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
        return self._current

    def resolve(self, name: str, version: int | None = None, label: str = "") -> LoadedModel:
        """The servable for a ModelSpec, or TF Serving's error: NOT_FOUND for an unknown model or version,
        INVALID_ARGUMENT for a label (labels come from a model config file, which the double does not read)."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        if label:
            raise invalid(f"Unrecognized servable version label: {label}")
        model = self._current
        if name != self.model_name or model is None:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}")
        if version is not None and version != model.version:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})"
            )
        return model

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


def _mtime(version_dir: Path) -> float:
    for name in layout.SAVED_MODEL_FILES:
        path = version_dir / name
        if path.is_file():
            return path.stat().st_mtime
    return 0.0
