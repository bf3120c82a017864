"""REST side of the test double: TF Serving's ``/v1/models`` API over HTTP/1.1.

* ``GET  /v1/models/<name>[/versions/<v>]`` — model status (GetModelStatusResponse as JSON);
* ``GET  /v1/models/<name>[/versions/<v>]/metadata`` — signature defs;
* ``POST /v1/models/<name>[/versions/<v>]:predict`` — ``signature_name`` + ``instances`` (row
  format, answered with ``predictions``) or ``inputs`` (columnar, answered with ``outputs``).

Errors are ``{"error": "<message>"}`` with the HTTP status of the gRPC code (INVALID_ARGUMENT → 400,
NOT_FOUND → 404 ...). Request bodies need a Content-Length within the size limit.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format

from cmml.serving.errors import Limits, ServingError, invalid
from cmml.serving.grpc_service import metadata_response, status_response
from cmml.serving.json_codec import format_predict_response, parse_predict_body
from cmml.serving.model_store import ModelManager
from cmml.serving.signatures import DEFAULT_SIGNATURE, signature_or_error

log = logging.getLogger("cmml.serving.double")

# TF Serving's routes (http_rest_api_util.cc): case-insensitive, matched against the path with its query
# string, so a trailing "/" is malformed and "?x=1" becomes part of the model name (or makes the path malformed)
_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?", re.IGNORECASE)
_POST = re.compile(_MODEL + r":(?P<method>predict|classify|regress)", re.IGNORECASE)
_MAX_VERSION = 2**63 - 1


def _json_body(obj: Any) -> bytes:
    # NaN / Infinity tokens are part of TF Serving's JSON (see "JSON conformance" in its REST docs)
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode("utf-8")


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


class RestServer(ThreadingHTTPServer):
    """One thread per connection; at most ``num_threads`` requests run a model at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        manager: ModelManager,
        limits: Limits = Limits(),
        num_threads: int = 8,
        timeout_seconds: float = 30.0,
    ):
        self.manager = manager
        self.limits = limits
        self.slots = threading.BoundedSemaphore(num_threads)
        self.timeout_seconds = timeout_seconds
        super().__init__(address, RestHandler)


class RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "cmml-serving-test-double"  # not TensorFlow Serving
    server: RestServer

    def setup(self) -> None:
        self.timeout = self.server.timeout_seconds  # idle connections cannot pin a thread forever
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base-class signature)
        log.debug("test double REST %s - %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors from the base class (bad request line, unsupported method) as JSON."""
        self.close_connection = True
        self._reply(code, {"error": message or explain or f"HTTP {code}"})

    def _reply(self, status: int, payload: dict) -> None:
        body = _json_body(payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client went away; nothing to answer
            self.close_connection = True

    def _fail(self, error: ServingError) -> None:
        self._reply(error.http_status, {"error": error.message})

    def _dispatch(self, work) -> None:
        try:
            status, payload = work()
        except (ConnectionError, TimeoutError):  # the client stalled or went away mid-body
            self.close_connection = True
            return
        except ServingError as exc:
            self._fail(exc)
            return
        except Exception as exc:  # keep the server up whatever a request does
            log.exception("test double: REST %s %s failed unexpectedly", self.command, self.path)
            self._fail(ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
            return
        self._reply(status, payload)

    # --- GET: status and metadata ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch(self._get)

    def _get(self) -> tuple[int, dict]:
        match = _GET.fullmatch(self.path)
        _check_prefix(self.path)
        if match is None:
            raise invalid(f"Malformed request: GET {self.path[:200]}")
        name, version, label = match["name"], _version(match["version"]), match["label"] or ""
        manager = self.server.manager
        if match["metadata"]:
            model = manager.resolve(name, version, label)
            response = metadata_response(name, model.version, model.signature_defs)
            # TF Serving writes the Any as the SignatureDefMap itself: {"signature_def": {"signature_def": {...}}}
            return 200, {
                "model_spec": _proto_json(response.model_spec),
                "metadata": {"signature_def": _proto_json(model.signature_defs)},
            }
        # TF Serving's status request reads no label (get_model_status_impl.cc): every version, as without one
        return 200, _proto_json(status_response(manager, name, version))

    # --- POST: predict ---------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _post(self) -> tuple[int, dict]:
        body = self._read_body()  # always drain the body first so the connection stays in sync
        match = _POST.fullmatch(self.path)
        _check_prefix(self.path)
        if match is None:
            raise invalid(f"Malformed request: POST {self.path[:200]}")
        if match["method"].lower() != "predict":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f":{match['method']} is not implemented by the cmml test double (use :predict)",
            )
        model = self.server.manager.resolve(match["name"], _version(match["version"]), match["label"] or "")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise invalid(f"request body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(request, dict):
            raise invalid("request body must be a JSON object")
        signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        sig = signature_or_error(model.signatures, signature_name)
        inputs, row_format = parse_predict_body(request, sig.input_dtypes(), self.server.limits.max_tensor_elements)
        if not self.server.slots.acquire(timeout=self.server.timeout_seconds):
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE, "the test double is overloaded: no free REST worker, try again"
            )
        try:
            outputs = model.predict(sig.name, inputs)
        finally:
            self.server.slots.release()
        return 200, format_predict_response(outputs, row_format)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise invalid("chunked request bodies are not supported by the test double: send Content-Length")
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise invalid(f"invalid Content-Length {length_text!r}")
        if length > self.server.limits.max_request_bytes:
            self.close_connection = True  # the unread body would otherwise be parsed as the next request
            raise invalid(f"request body of {length} bytes is over the limit of {self.server.limits.max_request_bytes}")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self.close_connection = True
            raise invalid(f"request body ended after {len(body)} of {length} bytes")
        return body


def _check_prefix(path: str) -> None:
    """Only /v1/... reaches the API handler (TF Serving answers other paths with 404)."""
    if not path.lower().startswith("/v1/"):
        raise ServingError(
            grpc.StatusCode.NOT_FOUND, f"no API at {path[:200]}: TF Serving's REST API lives under /v1/models"
        )


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _MAX_VERSION:
        raise invalid(f"Failed to convert version: {text[:30]} to numeric")
    return value
