"""Client of TF Serving's REST API (the real server or the test double).

    client = RestClient("http://localhost:8501", "cmml")
    result = client.predict(inputs, signature_name="serving_default")

Same methods as :class:`~cmml.serving.grpc_client.GrpcClient` — :meth:`~RestClient.predict`,
:meth:`~RestClient.metadata`, :meth:`~RestClient.status` — and failures raise
:class:`~cmml.serving.errors.ServingError` with the gRPC status code an HTTP status maps to.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any, Mapping

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from cmml.serving.errors import ServingError, code_from_http
from cmml.serving.json_codec import inputs_to_json, parse_predict_response
from cmml.serving.results import Prediction, VersionState
from cmml.serving.signatures import DEFAULT_SIGNATURE, SignatureInfo, signatures_from_map


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
