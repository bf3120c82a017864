"""REST side of the test double: TF Serving's ``/v1/models`` API over HTTP/1.1.

* ``GET  /v1/models/<name>[/versions/<v>|/labels/<l>]`` — model status (GetModelStatusResponse as JSON);
* ``GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata`` — signature defs;
* ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict`` — ``signature_name`` + ``instances`` (row
  format, answered with ``predictions``) or ``inputs`` (columnar, answered with ``outputs``);
* ``OPTIONS /v1/...`` — a CORS preflight.

Errors are ``{"error": "<message>"}`` with the HTTP status of the gRPC code (INVALID_ARGUMENT → 400,
NOT_FOUND → 404 ...). The transport follows TF Serving 2.16.1's HTTP server (libevent 2.1.8 under
``util/net_http``; commit 0d726954): bodies by ``Content-Length`` or ``Transfer-Encoding: chunked``, with no
size cap; ``Content-Encoding: gzip`` bodies inflated (up to 100 MiB); what libevent itself refuses (a
corrupt chunked body, a bad ``Content-Length``, an unknown method) answered with libevent's HTML error page.
"""

from __future__ import annotations

import http
import json
import logging
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format

from cmml.serving.errors import Limits, ServingError, invalid
from cmml.serving.grpc_service import metadata_response, status_response
from cmml.serving.json_codec import format_predict_response, parse_predict_body
from cmml.serving.model_store import ServerCore
from cmml.serving.signatures import DEFAULT_SIGNATURE, signature_or_error

log = logging.getLogger("cmml.serving.double")

# TF Serving's routes (http_rest_api_util.cc): case-insensitive, matched against the path with its query
# string, so a trailing "/" is malformed and "?x=1" becomes part of the model name (or makes the path malformed)
_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?", re.IGNORECASE)
_POST = re.compile(_MODEL + r":(?P<method>predict|classify|regress)", re.IGNORECASE)
_API = re.compile(r"/v1/.*", re.IGNORECASE)  # kHTTPRestApiHandlerPathRegex: the dispatcher takes these paths
_ORIGIN = re.compile(r"https?://")  # http_server.cc: RE2::PartialMatch(origin_header, "https?://")
_MAX_VERSION = 2**63 - 1
GZIP_MAX_BYTES = 100 * 1024 * 1024  # net_http ZLib::kMaxUncompressedBytes
IDLE_TIMEOUT_SECONDS = 50.0  # libevent 2.1.8 HTTP_READ_TIMEOUT / HTTP_WRITE_TIMEOUT (http-internal.h)
# http_rest_api_util.cc AddCORSHeaders, on every API response with --rest_api_enable_cors_support
CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
LIBEVENT_CONTENT_TYPE = "text/html; charset=ISO-8859-1"  # evhttp's default for a response without one
_READ_PIECE = 1 << 20
_BODY_METHODS = ("POST", "PUT", "PATCH")  # libevent 2.1.8 evhttp_method_may_have_body: it reads no other body


def _json_body(obj: Any) -> bytes:
    # NaN / Infinity tokens are part of TF Serving's JSON (see "JSON conformance" in its REST docs)
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode("utf-8")


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def libevent_error_page(status: int) -> bytes:
    """``evhttp_send_error``'s page (libevent 2.1.8 http.c)."""
    reason = http.HTTPStatus(status).phrase
    return (
        f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n".encode()
    )


def gunzip(data: bytes, max_bytes: int = GZIP_MAX_BYTES) -> bytes:
    """A ``Content-Encoding: gzip`` body as TF Serving inflates it (``ZLib::UncompressGzipAndAllocate``): one
    gzip member whose trailer's length (ISIZE) is at most ``max_bytes`` and whose data inflates to exactly
    that length, CRC checked, nothing after the trailer. Anything else inflates to nothing, and an empty body
    is what the API handler then sees (``JSON Parse error: The document is empty``)."""
    claimed = int.from_bytes(data[-4:], "little") if len(data) > 4 else 0
    if claimed > max_bytes:
        return b""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer, checked by zlib
    try:
        out = inflater.decompress(data, claimed + 1)
    except zlib.error:
        return b""
    if not inflater.eof or inflater.unused_data or len(out) != claimed:
        return b""
    return out


class _ProtocolError(Exception):
    """A request libevent refuses before TF Serving sees it: answered with its HTML page, then closed."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _strtoll(text: bytes, base: int) -> tuple[int, int]:
    """C's ``strtoll`` as libevent calls it: leading blanks, a sign, ``0x`` for base 16, then digits. Returns
    (value, index just past the digits); index 0 when nothing was converted."""
    i, n = 0, len(text)
    while i < n and text[i] in b" \t\n\v\f\r":
        i += 1
    sign = 1
    if i < n and text[i] in b"+-":
        sign = -1 if text[i] == ord("-") else 1
        i += 1
    digits = b"0123456789abcdefABCDEF" if base == 16 else b"0123456789"
    if base == 16 and text[i : i + 2].lower() == b"0x" and i + 2 < n and text[i + 2] in digits:
        i += 2
    start = i
    while i < n and text[i] in digits:
        i += 1
    if i == start:
        return 0, 0
    value = sign * int(text[start:i], base)
    return max(min(value, 2**63 - 1), -(2**63)), i


class RestServer(ThreadingHTTPServer):
    """One thread per connection; at most ``num_threads`` requests are processed at once (TF Serving's
    ``--rest_api_num_threads`` executor: the others wait their turn). ``run_timeout`` (seconds, None: none)
    is ``--rest_api_timeout_in_ms``: the deadline of a request's model run."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        core: ServerCore,
        limits: Limits = Limits(),
        num_threads: int = 8,
        run_timeout: float | None = 30.0,
        cors: bool = False,
    ):
        self.core = core
        self.limits = limits
        self.slots = threading.BoundedSemaphore(num_threads)
        self.run_timeout = run_timeout
        self.cors = cors
        super().__init__(address, RestHandler)


class RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "cmml-serving-test-double"  # not TensorFlow Serving
    server: RestServer

    def setup(self) -> None:
        self.timeout = IDLE_TIMEOUT_SECONDS  # libevent's connection timeout; idle clients cannot pin a thread
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base-class signature)
        log.debug("test double REST %s - %s", self.address_string(), format % args)

    # --- writing --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if self.command != "HEAD":  # a HEAD response carries neither body nor length (evhttp)
                self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the client went away; nothing to answer
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What libevent answers itself (a bad request line, an unknown method such as TRACE): its HTML page."""
        self.close_connection = True
        self._send(code, libevent_error_page(code), (("Content-Type", "text/html"),))

    def _reply_api(self, status: int, body: bytes, content_type: str | None) -> None:
        headers = (("Content-Type", content_type or LIBEVENT_CONTENT_TYPE),)
        if self.server.cors:
            headers += CORS_HEADERS
        self._send(status, body, headers)

    # --- reading --------------------------------------------------------------------------------------------
    def _read_exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left > 0:
            piece = self.rfile.read(min(left, _READ_PIECE))  # a huge Content-Length must not allocate upfront
            if not piece:
                raise ConnectionError(f"request body ended after {n - left} of {n} bytes")
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)

    def _read_line(self) -> bytes:
        line = self.rfile.readline(1 << 16)
        if not line:
            raise ConnectionError("the connection closed inside a chunked body")
        if not line.endswith(b"\n"):
            raise _ProtocolError(413)  # a chunk-size line longer than anything valid
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    def _read_chunked(self) -> bytes:
        """``evhttp_handle_chunked_read``: hex sizes on their own line (blank lines skipped), an extension or any
        other text after the number is corrupt, which libevent reports as DATA_TOO_LONG (413); a 0 size ends
        the body, then trailer lines until a blank one."""
        parts = []
        while True:
            line = self._read_line()
            if not line:
                continue
            size, end = _strtoll(line, 16)
            if (end < len(line) and line[end : end + 1] != b" ") or size < 0:
                raise _ProtocolError(413)
            if size == 0:
                break
            parts.append(self._read_exactly(size))
        while True:  # evhttp_read_trailer: header lines ("name: value", or a continuation) until a blank line
            line = self._read_line()
            if not line:
                return b"".join(parts)
            if b":" not in line and line[:1] not in (b" ", b"\t"):
                raise _ProtocolError(413)

    def _read_body(self) -> bytes:
        """The body as libevent reads it (``evhttp_get_body``), then inflated when gzip-encoded
        (``EvHTTPRequest::ReadRequestBytes``)."""
        coding = (self.headers.get("Transfer-Encoding") or "").strip()
        if coding.lower() == "chunked":
            body = self._read_chunked()
        else:
            text = self.headers.get("Content-Length")
            if text is None:
                return b""  # no length and not chunked: a request without a body
            length, end = _strtoll(text.strip().encode(), 10)
            if not text.strip() or end != len(text.strip()) or length < 0:
                raise _ProtocolError(400)
            body = self._read_exactly(length)
        if body and "gzip" in (self.headers.get("Content-Encoding") or ""):
            body = gunzip(body)
        return body

    # --- dispatch -------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def _handle(self) -> None:
        if self.command not in _BODY_METHODS and (
            self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0").strip() not in ("", "0")
        ):
            # libevent leaves such a body unread, to be parsed as the next request; close after answering instead
            self.close_connection = True
        try:
            body = self._read_body() if self.command in _BODY_METHODS else b""
        except _ProtocolError as exc:
            self.send_error(exc.status)
            return
        except (ConnectionError, TimeoutError, OSError):  # the client stalled or went away mid-body
            self.close_connection = True
            return
        if not _API.fullmatch(self.path):  # no handler for the path (TF Serving: libevent's 404 page)
            self._send_json(
                404, {"error": f"no API at {self.path[:200]}: TF Serving's REST API lives under /v1/models"}
            )
            return
        with self.server.slots:
            if self.command == "OPTIONS":
                self._reply_api(*self._preflight(), None)
                return
            try:
                status, payload = self._process(body)
            except ServingError as exc:
                status, payload = exc.http_status, {"error": exc.message}
            except Exception as exc:  # keep the server up whatever a request does
                log.exception("test double: REST %s %s failed unexpectedly", self.command, self.path)
                status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply_api(status, _json_body(payload), "application/json")

    def _send_json(self, status: int, payload: dict) -> None:
        self._send(status, _json_body(payload), (("Content-Type", "application/json"),))

    def _preflight(self) -> tuple[int, bytes]:
        """http_server.cc: an OPTIONS request is OK (200, empty) when its ``Origin`` holds ``http://`` or
        ``https://``, else FAILED_PRECONDITION (400, empty body: the API handler never runs)."""
        if _ORIGIN.search(self.headers.get("Origin") or ""):
            return 200, b""
        log.debug("test double REST: Origin header is missing in CORS preflight")
        return 400, b""

    def _process(self, body: bytes) -> tuple[int, dict]:
        """``HttpRestApiHandler::ProcessRequest``: GET and POST on a route, anything else malformed."""
        if self.command == "POST":
            match = _POST.fullmatch(self.path)
            if match is not None:
                return self._post(match, body)
        elif self.command == "GET":
            match = _GET.fullmatch(self.path)
            if match is not None:
                return self._get(match)
        raise invalid(f"Malformed request: {self.command} {self.path[:200]}")

    # --- GET: status and metadata ---------------------------------------------------------------------------
    def _get(self, match: re.Match) -> tuple[int, dict]:
        name, version, label = match["name"], _version(match["version"]), match["label"] or ""
        core = self.server.core
        if match["metadata"]:
            model = core.resolve(name, version, label)
            response = metadata_response(name, model.version, model.signature_defs)
            # TF Serving writes the Any as the SignatureDefMap itself: {"signature_def": {"signature_def": {...}}}
            return 200, {
                "model_spec": _proto_json(response.model_spec),
                "metadata": {"signature_def": _proto_json(model.signature_defs)},
            }
        # TF Serving's status request reads no label (get_model_status_impl.cc): every version, as without one
        return 200, _proto_json(status_response(core, name, version))

    # --- POST: predict ---------------------------------------------------------------------------------------
    def _post(self, match: re.Match, body: bytes) -> tuple[int, dict]:
        if match["method"].lower() != "predict":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f":{match['method']} is not implemented by the cmml test double (use :predict)",
            )
        version = _version(match["version"])
        # FillPredictRequestFromJson: the body is parsed before the model is looked up (json_tensor.cc)
        if not body:
            raise invalid("JSON Parse error: The document is empty")
        try:
            request = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise invalid(f"request body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(request, dict):
            raise invalid("request body must be a JSON object")
        signature_name = request.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        model = self.server.core.resolve(match["name"], version, match["label"] or "")
        sig = signature_or_error(model.signatures, signature_name)
        inputs, row_format = parse_predict_body(request, sig.input_dtypes(), self.server.limits.max_tensor_elements)
        outputs = model.predict(sig.name, inputs, (), self.server.run_timeout)
        return 200, format_predict_response(outputs, row_format)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _MAX_VERSION:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return value
