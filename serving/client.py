"""Clients of TF Serving's API (the real server or the test double): gRPC and REST.

    client = GrpcClient("localhost:8500", "cmml")          # or RestClient("http://localhost:8501", "cmml")
    result = client.predict(inputs, signature_name="serving_default")
    ranking = rank_items(result.outputs["scores"][0], item_ids, mask=inputs["query_mask"][0])

Both clients have the same methods — :meth:`predict`, :meth:`metadata`, :meth:`status` — and
raise :class:`~cmml.serving.protocol.ServingError` (with the gRPC status code) on failure.
:class:`ContextCache` is the two-stage serving path: encode a task's support set once, score
many candidate sets against the cached context, fold new interactions in with ``update_context``.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import json
import threading
import urllib.parse
from typing import Any, Hashable, Mapping, Sequence

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from cmml.serving.protocol import (
    ServingError,
    code_from_http,
    inputs_to_json,
    ndarray_to_tensor_proto,
    parse_predict_response,
    tensor_proto_to_ndarray,
)
from cmml.serving.signatures import DEFAULT_SIGNATURE, SignatureInfo, signatures_from_map

_NO_LIMIT = 1 << 62  # responses come from the server we asked; no element cap on decoding them


@dataclasses.dataclass
class Prediction:
    """Outputs of one Predict call; ``version`` is the served version (gRPC reports it, REST does not)."""

    outputs: dict[str, np.ndarray]
    signature_name: str
    version: int | None = None


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: str  # AVAILABLE, LOADING, END ...
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class RankedItem:
    item: Any
    score: float


def rank_items(
    scores: np.ndarray, items: Sequence[Any] | None = None, mask: np.ndarray | None = None, top_k: int | None = None
) -> list[RankedItem]:
    """Candidates by decreasing score (stable for ties); padded candidates (mask 0) are left out.
    ``items`` labels the candidates (default: their positions)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = list(items) if items is not None else list(range(len(scores)))
    if len(labels) > len(scores):
        raise ValueError(f"{len(labels)} item labels for {len(scores)} scores")
    valid = np.arange(len(scores)) < len(labels)
    if mask is not None:
        valid &= np.asarray(mask).reshape(-1)[: len(scores)] > 0
    order = [int(k) for k in np.argsort(-scores, kind="stable") if valid[k]]
    if top_k is not None:
        order = order[:top_k]
    return [RankedItem(labels[k], float(scores[k])) for k in order]


class GrpcClient:
    """PredictionService / ModelService client over one gRPC channel (thread-safe).

    Args:
      target: ``host:port`` of TF Serving's gRPC port.
      model_name: the model to call.
      timeout: seconds per call.
    """

    def __init__(self, target: str, model_name: str, timeout: float = 10.0, max_message_bytes: int = 256 << 20):
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, spec, version: int | None, signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        if signature_name is not None:
            spec.signature_name = signature_name

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ServingError(exc.code(), exc.details() or "") from None

    def predict_request(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(value if hasattr(value, "tensor_shape") else ndarray_to_tensor_proto(value))
        request.output_filter.extend(output_filter)
        return request

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        """Calls ``signature_name`` with numpy arrays (or TensorProtos)."""
        response = self._call(
            self._predict.Predict, self.predict_request(inputs, signature_name, version, output_filter)
        )
        return self._prediction(response, signature_name)

    def predict_raw(self, request: predict_pb2.PredictRequest) -> Prediction:
        """Sends a prepared PredictRequest as is (e.g. a warm-up record)."""
        response = self._call(self._predict.Predict, request)
        return self._prediction(response, request.model_spec.signature_name or DEFAULT_SIGNATURE)

    @staticmethod
    def _prediction(response: predict_pb2.PredictResponse, signature_name: str) -> Prediction:
        # copies: decoded tensor_content is a read-only view of the response buffer
        outputs = {k: np.array(tensor_proto_to_ndarray(v, k, _NO_LIMIT)) for k, v in response.outputs.items()}
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return Prediction(outputs, response.model_spec.signature_name or signature_name, version)

    def metadata(self, version: int | None = None) -> tuple[int, dict[str, SignatureInfo]]:
        """(served version, callable signatures) from GetModelMetadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version)
        response = self._call(self._predict.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(defs):
            raise ServingError(grpc.StatusCode.INTERNAL, "metadata 'signature_def' is not a SignatureDefMap")
        return response.model_spec.version.value, signatures_from_map(defs)

    def status(self, version: int | None = None) -> list[VersionState]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version)
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionState(
                int(s.version),
                state_name(s.state),
                error_codes_pb2.Code.Name(s.status.error_code),
                s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RestClient:
    """TF Serving REST API client with one keep-alive connection per thread.

    Args:
      base_url: ``http://host:port`` of TF Serving's REST port.
      model_name: the model to call.
      row_format: send ``instances`` (row format) instead of ``inputs`` (columnar).
    """

    def __init__(self, base_url: str, model_name: str, timeout: float = 10.0, row_format: bool = False):
        parsed = urllib.parse.urlsplit(base_url if "://" in base_url else "http://" + base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"REST base URL must look like http://host:port, not {base_url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.model_name = model_name
        self.timeout = timeout
        self.row_format = row_format
        self._local = threading.local()
        self._signatures: dict[str, SignatureInfo] = {}

    def _path(self, version: int | None, suffix: str = "") -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        return path + suffix

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """One HTTP exchange; returns the decoded JSON or raises ServingError for an error status."""
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                status = response.status
                if response.will_close:
                    conn.close()
                    self._local.conn = None
                break
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:  # a kept-alive connection the server closed is retried once
                    raise ServingError(grpc.StatusCode.UNAVAILABLE, f"REST {method} {path}: {exc}") from None
            except TimeoutError:
                conn.close()
                self._local.conn = None
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"REST {method} {path}: no answer in {self.timeout} s"
                ) from None
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            raise ServingError(code_from_http(status), f"HTTP {status}, body is not JSON: {payload[:200]!r}") from None
        if status != 200:
            message = (
                data.get("error", payload[:200].decode("utf-8", "replace"))
                if isinstance(data, dict)
                else str(data)[:200]
            )
            raise ServingError(code_from_http(status), message)
        return data

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        row_format: bool | None = None,
    ) -> Prediction:
        """Calls ``signature_name`` through ``:predict``. Outputs are cast to the signature's dtypes
        (read once from the metadata endpoint and cached)."""
        body = {
            "signature_name": signature_name,
            **inputs_to_json(
                {k: np.asarray(v) for k, v in inputs.items()}, self.row_format if row_format is None else row_format
            ),
        }
        data = self.request("POST", self._path(version, ":predict"), json.dumps(body, allow_nan=True).encode("utf-8"))
        sig = self._signature(signature_name, version)
        return Prediction(parse_predict_response(data, sig.output_dtypes() if sig else None), signature_name, None)

    def predict_json(self, body: Mapping[str, Any], version: int | None = None) -> dict:
        """Posts a ready ``:predict`` body (e.g. read from a file) and returns the decoded response."""
        return self.request("POST", self._path(version, ":predict"), json.dumps(body, allow_nan=True).encode("utf-8"))

    def _signature(self, name: str, version: int | None) -> SignatureInfo | None:
        if name not in self._signatures:
            try:
                self._signatures.update(self.metadata(version)[1])
            except ServingError:
                return None
        return self._signatures.get(name)

    def metadata(self, version: int | None = None) -> tuple[int, dict[str, SignatureInfo]]:
        data = self.request("GET", self._path(version, "/metadata"))
        try:
            defs_json = dict(data["metadata"]["signature_def"])
            defs_json.pop("@type", None)  # present when a server prints the Any with its type URL
            defs = json_format.ParseDict(
                defs_json, get_model_metadata_pb2.SignatureDefMap(), ignore_unknown_fields=True
            )
            version_served = int(data["model_spec"].get("version", 0))
        except (KeyError, TypeError, ValueError, json_format.ParseError) as exc:
            raise ServingError(grpc.StatusCode.INTERNAL, f"unexpected metadata response: {exc}") from None
        return version_served, signatures_from_map(defs)

    def status(self, version: int | None = None) -> list[VersionState]:
        data = self.request("GET", self._path(version))
        out = []
        for s in data.get("model_version_status", []):
            status = s.get("status", {})
            out.append(
                VersionState(
                    int(s["version"]),
                    s.get("state", "UNKNOWN"),
                    status.get("error_code", "OK"),
                    status.get("error_message", ""),
                )
            )
        return out

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StaleContextError(KeyError):
    """The cached context was encoded by a model version that is no longer served: re-encode."""


@dataclasses.dataclass(frozen=True)
class CachedContext:
    context: np.ndarray  # [B, C], the input of ``score``
    state: np.ndarray  # [B, S], the input of ``update_context``
    version: int | None  # model version that produced it (gRPC reports it; None over REST)


class ContextCache:
    """Two-stage serving with a cached task context (an in-process stand-in for a feature store).

    * :meth:`encode` — ``encode_context`` once per user / scenario; keeps ``context`` and ``state``;
    * :meth:`score` — ``score`` for any number of candidate sets against the cached context;
    * :meth:`update` — ``update_context`` with new interactions; replaces the cached entry.

    A context only means something to the model version that encoded it, so calls on a cached
    entry are pinned to that version (when the transport reports it, i.e. over gRPC). Once the
    server has moved to a new version, they raise :class:`StaleContextError` and drop the entry:
    encode the task again. Entries are evicted least-recently-used beyond ``max_entries``.
    Thread-safe.
    """

    def __init__(self, client: GrpcClient | RestClient, max_entries: int = 100_000):
        self.client = client
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[Hashable, CachedContext] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: Hashable, entry: CachedContext) -> None:
        """Stores an entry (e.g. one restored from a persistent feature store)."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, key: Hashable) -> CachedContext:
        with self._lock:
            if key not in self._entries:
                raise KeyError(f"no cached context for {key!r}: call encode() first")
            self._entries.move_to_end(key)
            return self._entries[key]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def _pinned(
        self, key: Hashable, entry: CachedContext, inputs: Mapping[str, np.ndarray], signature: str
    ) -> Prediction:
        try:
            return self.client.predict(inputs, signature, version=entry.version)
        except ServingError as exc:
            if entry.version is not None and exc.code == grpc.StatusCode.NOT_FOUND:
                with self._lock:
                    self._entries.pop(key, None)
                raise StaleContextError(
                    f"context of {key!r} was encoded by version {entry.version}, which is no longer served: encode again"
                ) from None
            raise

    def encode(self, key: Hashable, support: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encodes the support set (``support_*`` inputs) and caches the context. Returns it."""
        result = self.client.predict(support, "encode_context")
        self.put(key, CachedContext(result.outputs["context"], result.outputs["state"], result.version))
        return result.outputs["context"]

    def score(self, key: Hashable, query: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores candidates (``query_*`` inputs) against the cached context: ``[B, Q]``."""
        entry = self.get(key)
        return self._pinned(key, entry, {"context": entry.context, **query}, "score").outputs["scores"]

    def update(self, key: Hashable, new: Mapping[str, np.ndarray]) -> np.ndarray:
        """Folds new interactions (``new_*`` inputs) into the cached state. Returns the new context."""
        entry = self.get(key)
        result = self._pinned(key, entry, {"state": entry.state, **new}, "update_context")
        self.put(key, CachedContext(result.outputs["context"], result.outputs["state"], entry.version))
        return result.outputs["context"]
