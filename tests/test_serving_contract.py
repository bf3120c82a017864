"""TF Serving's contract where the double used to differ (issue 15, point 4's items 6-8): gzip and chunked
REST bodies, CORS preflight, request batching with and without ``pad_variable_length_inputs``, model config
files (several models, version policies, labels), start-up refusals, size caps and the REST run deadline.

Expected codes and texts come from TF Serving 2.16.1's source (tag 2.16.1, commit 0d726954), named at each
case; libevent 2.1.8 (the HTTP server TF Serving 2.16.1 builds, workspace.bzl) for the transport; TensorFlow's
shared_batch_scheduler.h and direct_session.cc for the scheduler's and the session's texts.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_service_pb2_grpc

import cmml  # noqa: F401
from cmml.models.testing import random_episodes
from cmml.serving import cli
from cmml.serving.batching import BatchingOptions, merge_inputs
from cmml.serving.config import VersionPolicy
from cmml.serving.errors import ServingError
from cmml.serving.grpc_client import GrpcClient
from cmml.serving.json_codec import inputs_to_json
from cmml.serving.layout import install_version
from cmml.serving.model_store import ModelManager
from cmml.serving.rest_client import RestClient
from cmml.serving.server import ServingDouble
from cmml.serving.signatures import read_meta_graph
from cmml.serving.tensors import ndarray_to_tensor_proto
from cmml.serving.testing import DoubleProcess, export_cmml_model, serving_inputs
from cmml.serving.warmup import write_warmup_requests

ATOL = 1e-5
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small CMML model (no warm-up records, so that batched loads do not wait on batch timeouts) installed
    as version 1 of ``models/cmml``, and the in-memory model to compute expectations with."""
    root = tmp_path_factory.mktemp("contract")
    episodes = random_episodes(tasks=2, support=5, query=4, seed=7)
    model, path = export_cmml_model(root / "export", seed=3, episodes=episodes)
    install_version(path, root / "models" / "cmml", version=1)
    return root, model, path, episodes


def _scores(model, inputs: dict) -> np.ndarray:
    return model({k: tf.constant(v) for k, v in inputs.items()}).numpy()


def _body(inputs: dict, signature: str = "serving_default") -> bytes:
    return json.dumps({"signature_name": signature, **inputs_to_json(inputs)}).encode()


def _http(port: int, raw: bytes, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (chunked bodies, odd methods), its response read by http.client."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in sizes:
        out += f"{size:x}\r\n".encode() + body[pos : pos + size] + b"\r\n"
        pos += size
    assert pos == len(body)
    return out + b"0\r\n\r\n"


# --- REST transport (item 6) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rest_double(exported):
    root = exported[0]
    with ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0, cors=True) as double:
        yield double


def test_gzip_request_bodies_are_inflated(exported, rest_double):
    """evhttp_request.cc: a ``Content-Encoding`` holding "gzip" (StrContains) makes ReadRequestBytes inflate the
    whole body before the API handler sees it."""
    _, model, _, episodes = exported
    inputs = serving_inputs(episodes, "serving_default")
    body = _body(inputs)
    for encoding in ("gzip", "x-gzip"):
        status, _, payload = _http(
            rest_double.rest_port,
            _request(
                "POST",
                "/v1/models/cmml:predict",
                {"Content-Encoding": encoding, "Content-Length": str(len(gzip.compress(body)))},
                gzip.compress(body),
            ),
        )
        assert status == 200, payload
        np.testing.assert_allclose(json.loads(payload)["outputs"], _scores(model, inputs), atol=ATOL)


def test_a_body_that_does_not_inflate_reaches_the_handler_empty(exported, rest_double):
    """gzip_zlib.cc UncompressGzipAndAllocate fails (no gzip data, a trailer length over kMaxUncompressedBytes =
    100 MiB, data after the member) -> ReadRequestBytes returns nothing -> json_tensor.cc ParseJson:
    INVALID_ARGUMENT "JSON Parse error: The document is empty" (HTTP 400, http_server.cc ToHTTPStatusCode)."""
    body = _body(serving_inputs(exported[3], "serving_default"))
    member = gzip.compress(body)
    too_large = member[:-4] + (100 * 1024 * 1024 + 1).to_bytes(4, "little")
    for what, data in [
        ("plain JSON", body),
        ("trailer over 100 MiB", too_large),
        ("two members", member + member),
        ("truncated", member[:-3]),
    ]:
        status, headers, payload = _http(
            rest_double.rest_port,
            _request(
                "POST", "/v1/models/cmml:predict", {"Content-Encoding": "gzip", "Content-Length": str(len(data))}, data
            ),
        )
        assert (status, json.loads(payload)) == (400, {"error": "JSON Parse error: The document is empty"}), what
    # an empty body needs no encoding to get the same answer
    status, _, payload = _http(
        rest_double.rest_port, _request("POST", "/v1/models/cmml:predict", {"Content-Length": "0"})
    )
    assert (status, json.loads(payload)["error"]) == (400, "JSON Parse error: The document is empty")


def test_chunked_request_bodies(exported, rest_double):
    """libevent 2.1.8 evhttp_get_body: ``Transfer-Encoding: chunked`` (case-insensitive) bodies are read chunk by
    chunk (blank lines skipped, trailer headers allowed); a size line with anything but the hex number
    (an extension, text) is DATA_CORRUPTED, failed as EVREQ_HTTP_DATA_TOO_LONG: 413 with libevent's page."""
    _, model, _, episodes = exported
    inputs = serving_inputs(episodes, "serving_default")
    body = _body(inputs)
    third = len(body) // 3
    good = _chunked(body, [third, third, len(body) - 2 * third])
    for te, data in [
        ("chunked", good),
        ("Chunked", good.replace(b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n")),
    ]:
        status, _, payload = _http(
            rest_double.rest_port, _request("POST", "/v1/models/cmml:predict", {"Transfer-Encoding": te}, data)
        )
        assert status == 200, payload
        np.testing.assert_allclose(json.loads(payload)["outputs"], _scores(model, inputs), atol=ATOL)
    # gzip inside chunks
    packed = gzip.compress(body)
    status, _, payload = _http(
        rest_double.rest_port,
        _request(
            "POST",
            "/v1/models/cmml:predict",
            {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
            _chunked(packed, [10, len(packed) - 10]),
        ),
    )
    assert status == 200, payload
    for corrupt in (
        f"{len(body):x};name=value\r\n".encode() + body + b"\r\n0\r\n\r\n",  # chunk extension
        b"zz\r\n" + body + b"\r\n0\r\n\r\n",
    ):
        status, headers, payload = _http(
            rest_double.rest_port,
            _request("POST", "/v1/models/cmml:predict", {"Transfer-Encoding": "chunked"}, corrupt),
        )
        assert status == 413 and headers["connection"] == "close"
        assert b"<TITLE>413 Request Entity Too Large</TITLE>" in payload


def test_cors_preflight_and_headers(exported, rest_double):
    """http_server.cc: OPTIONS on an API path is OK (200, empty body) when Origin partially matches
    "https?://", else FAILED_PRECONDITION "Origin header is missing in CORS preflight" (400, empty body: the
    handler never runs); with --rest_api_enable_cors_support every API response gets AddCORSHeaders'
    three headers (http_rest_api_util.cc)."""
    cors = {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST, GET",
        "access-control-allow-headers": "Content-Type",
    }
    port = rest_double.rest_port
    for origin in ("http://example.com", "https://app.example.com:8443", "null, http://x"):
        status, headers, payload = _http(
            port, _request("OPTIONS", "/v1/models/cmml:predict", {"Origin": origin}), "OPTIONS"
        )
        assert (status, payload) == (200, b"") and cors.items() <= headers.items()
    for headers_sent in ({}, {"Origin": "example.com"}):
        status, headers, payload = _http(port, _request("OPTIONS", "/v1/models/cmml", headers_sent), "OPTIONS")
        assert (status, payload) == (400, b"") and cors.items() <= headers.items()
    status, _, _ = _http(port, _request("OPTIONS", "/elsewhere", {"Origin": "http://x"}), "OPTIONS")
    assert status == 404  # not an API path: no handler
    status, headers, _ = _http(port, _request("GET", "/v1/models/cmml", {}), "GET")
    assert status == 200 and cors.items() <= headers.items() and headers["content-type"] == "application/json"
    # without the flag, no CORS headers
    with ServingDouble(exported[0] / "models" / "cmml", "cmml", poll_seconds=0) as plain:
        status, headers, _ = _http(plain.rest_port, _request("GET", "/v1/models/cmml", {}), "GET")
        assert status == 200 and not {k for k in headers if k.startswith("access-control")}


def test_other_methods_and_malformed_transport(exported, rest_double):
    """http_rest_api_handler.cc ProcessRequest: an API path with a method other than GET / POST keeps the status
    it starts with, INVALID_ARGUMENT "Malformed request: <method> <path>"; libevent answers methods it does not
    allow (TRACE, CONNECT) with 501 and an illegal Content-Length with 400 (EVREQ_HTTP_INVALID_HEADER)."""
    port = rest_double.rest_port
    for method, body in (("PUT", b"{}"), ("PATCH", b"{}"), ("DELETE", b""), ("DELETE", b"{}")):
        status, headers, payload = _http(
            port, _request(method, "/v1/models/cmml:predict", {"Content-Length": str(len(body))}, body), method
        )
        assert (status, json.loads(payload)) == (400, {"error": f"Malformed request: {method} /v1/models/cmml:predict"})
        # libevent reads no DELETE body (evhttp_method_may_have_body): the double closes rather than misparse it
        assert (headers.get("connection") == "close") == (method == "DELETE" and bool(body))
    status, _, payload = _http(port, _request("TRACE", "/v1/models/cmml", {}), "TRACE")
    assert status == 501 and b"<TITLE>501 Not Implemented</TITLE>" in payload
    status, headers, payload = _http(port, _request("POST", "/v1/models/cmml:predict", {"Content-Length": "12x"}))
    assert status == 400 and b"<TITLE>400 Bad Request</TITLE>" in payload and headers["connection"] == "close"
    # paths are case-insensitive, predict included (kPredictionApiGegex has (?i))
    inputs = serving_inputs(exported[3], "serving_default")
    status, _, payload = _http(
        port, _request("POST", "/V1/MODELS/cmml:PREDICT", {"Content-Length": str(len(_body(inputs)))}, _body(inputs))
    )
    assert status == 200, payload


# --- limits and the REST deadline (item 8) ---------------------------------------------------------------------
def test_message_and_body_caps_are_tf_servings(exported, rest_double):
    """server.cc: builder.SetMaxMessageSize(kint32max), so a 65 MiB Predict is decoded (and refused for its dtype,
    not its size); libevent's max_body_size is unlimited, so a 70 MiB REST body is read. A declared shape too
    large to allocate is TensorFlow's GetInputValues "tensor parsing error: <alias>" (INVALID_ARGUMENT)."""
    _, _, _, episodes = exported
    inputs = serving_inputs(episodes, "serving_default")
    channel = grpc.insecure_channel(
        f"127.0.0.1:{rest_double.grpc_port}", options=[("grpc.max_send_message_length", -1)]
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cmml"
    for name, value in {**inputs, "query_mask": np.zeros((1, 17 << 20), np.float64)}.items():
        request.inputs[name].CopyFrom(ndarray_to_tensor_proto(value))
    assert request.ByteSize() > 65 << 20
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=120)
    assert err.value.code() == INVALID and "expects DT_FLOAT but DT_DOUBLE" in err.value.details()
    huge = predict_pb2.PredictRequest()
    huge.model_spec.name = "cmml"
    huge.inputs["query_item_id"].dtype = tf.int64.as_datatype_enum
    for d in (1 << 20, 1 << 20):
        huge.inputs["query_item_id"].tensor_shape.dim.add(size=d)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(huge, timeout=60)
    assert (err.value.code(), err.value.details()) == (INVALID, "tensor parsing error: query_item_id")
    channel.close()
    padded = b" " * (70 << 20) + _body(inputs)
    status, _, payload = _http(
        rest_double.rest_port,
        _request("POST", "/v1/models/cmml:predict", {"Content-Length": str(len(padded))}, padded),
    )
    assert status == 200, payload[:200]


def test_rest_api_timeout_is_the_deadline_of_the_model_run(exported):
    """http_rest_api_handler.cc: --rest_api_timeout_in_ms becomes RunOptions.timeout_in_ms of the session run;
    past it TensorFlow's DirectSession answers DEADLINE_EXCEEDED "Timed out waiting for notification", which
    http_server.cc maps to 504. 0 means no timeout."""
    root, model, _, _ = exported
    big = random_episodes(tasks=2, support=40, query=3000, seed=9)
    inputs = serving_inputs(big, "serving_default")
    for timeout, want in ((0.0005, 504), (0, 200)):
        with (
            ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0, rest_api_timeout_seconds=timeout) as d,
            RestClient(f"http://127.0.0.1:{d.rest_port}", "cmml", timeout=60) as rest,
        ):
            if want == 504:
                with pytest.raises(ServingError) as err:
                    rest.request("POST", "/v1/models/cmml:predict", _body(inputs))
                assert (err.value.http_status, err.value.message) == (504, "Timed out waiting for notification")
            else:
                out = rest.request("POST", "/v1/models/cmml:predict", _body(inputs))
                np.testing.assert_allclose(out["outputs"], _scores(model, inputs), atol=1e-4)


# --- batching (item 7) -----------------------------------------------------------------------------------------
def _pad_like_tf_serving(tensor: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """batching_util.cc PadTensor, written out for the expectation: pad at the end of every non-batch
    dimension with the tensor's first element."""
    widths = [(0, 0)] + [(0, want - have) for want, have in zip(dims[1:], tensor.shape[1:])]
    return np.pad(tensor, widths, mode="constant", constant_values=tensor.reshape(-1)[0])


def _concurrently(calls) -> list:
    with futures.ThreadPoolExecutor(len(calls)) as pool:
        jobs = [pool.submit(call) for call in calls]
        return [job.exception() or job.result() for job in jobs]


def _one_task(seed: int, support: int, query: int) -> dict:
    """One task, every row real (mask 1): padding then adds rows the model reads."""
    episodes = random_episodes(tasks=1, support=support, query=query, seed=seed, ragged=False)
    return serving_inputs(episodes, "serving_default")


def test_batching_pads_variable_length_inputs_with_their_first_element(exported):
    """batching_session.cc MergeInputTensors + batching_util.cc: with pad_variable_length_inputs two requests
    whose support (S) and query (Q) lengths differ run as one batch, every tensor padded to the batch's largest
    dimensions with its own first element; each request gets its rows of the outputs, at the padded width."""
    root, model, _, _ = exported
    a, b = _one_task(21, support=6, query=5), _one_task(22, support=3, query=2)
    options = BatchingOptions(
        max_batch_size=2, batch_timeout_micros=10_000_000, num_batch_threads=1, pad_variable_length_inputs=True
    )
    with (
        ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0, batching=options) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "cmml", timeout=60) as client,
    ):
        got = _concurrently([lambda: client.predict(a).outputs["scores"], lambda: client.predict(b).outputs["scores"]])
    dims = {k: tuple(max(x, y) for x, y in zip(a[k].shape, b[k].shape)) for k in a}
    for request, scores in zip((a, b), got):
        assert not isinstance(scores, Exception), scores
        padded = {k: _pad_like_tf_serving(v, dims[k]) for k, v in request.items()}
        assert scores.shape == (1, 5)  # the batch's query width, not the request's
        np.testing.assert_allclose(scores, _scores(model, padded), atol=ATOL)
    # the short request's extra candidates are made of first elements (item id of its first candidate, mask 1,
    # genres all equal to the first genre id): scored like real rows, not masked out
    assert b["query_mask"][0, 0] == 1.0 and np.isfinite(got[1][0, 2:]).all()


@pytest.fixture(scope="module")
def strict_batching(exported):
    """Batching without padding; one queue slot; a 3 s batch timeout; REST runs time out after 0.5 s."""
    options = BatchingOptions(
        max_batch_size=2, batch_timeout_micros=3_000_000, max_enqueued_batches=1, num_batch_threads=1
    )
    double = ServingDouble(
        exported[0] / "models" / "cmml", "cmml", poll_seconds=0, batching=options, rest_api_timeout_seconds=0.5
    ).start()
    try:
        yield double
    finally:
        double.stop()


def test_without_padding_different_lengths_fail_the_whole_batch(exported, strict_batching):
    """batching_session.cc MergeInputTensors: FAILED_PRECONDITION for every task of the batch, naming the graph
    tensor (not the alias) whose non-batch dimensions differ. This model's [-1, -1] inputs are such inputs."""
    a, b = _one_task(31, support=5, query=4), _one_task(32, support=3, query=4)
    with GrpcClient(f"127.0.0.1:{strict_batching.grpc_port}", "cmml", timeout=60) as client:
        results = _concurrently([lambda: client.predict(a), lambda: client.predict(b)])
    meta = read_meta_graph(exported[2]).signature_def["serving_default"]
    differing = {meta.inputs[k].name for k in a if a[k].shape[1:] != b[k].shape[1:]}
    pattern = re.compile(
        r"Tensors with name '(?P<name>[^']+)' from different tasks have different shapes and padding is turned "
        r"off\. Set pad_variable_length_inputs to true, or ensure that all tensors with the same name have equal "
        r"dimensions starting with the first dim\."
    )
    for result in results:
        assert isinstance(result, ServingError) and result.code == PRECONDITION, result
        match = pattern.fullmatch(result.message)
        assert match and match["name"] in differing, result.message
    # equal lengths merge fine
    c = _one_task(33, support=5, query=4)
    with GrpcClient(f"127.0.0.1:{strict_batching.grpc_port}", "cmml", timeout=60) as client:
        results = _concurrently([lambda: client.predict(a), lambda: client.predict(c)])
    for request, result in zip((a, c), results):
        np.testing.assert_allclose(result.outputs["scores"], _scores(exported[1], request), atol=ATOL)


def test_batch_scheduler_refusals(exported, strict_batching):
    """shared_batch_scheduler.h Queue::Schedule: a request larger than max_batch_size is INVALID_ARGUMENT; one
    that does not fit the open batch when max_enqueued_batches batches exist is UNAVAILABLE. batching_session.cc
    ProcessBatch: a batch whose every task outlived its deadline in the queue is RESOURCE_EXHAUSTED (REST 429)."""
    port = strict_batching.grpc_port
    three = serving_inputs(random_episodes(tasks=3, support=4, query=4, seed=41), "serving_default")
    with GrpcClient(f"127.0.0.1:{port}", "cmml", timeout=60) as client:
        with pytest.raises(ServingError) as err:
            client.predict(three)
        assert (err.value.code, err.value.message) == (INVALID, "Task size 3 is larger than maximum input batch size 2")
        one = _one_task(42, 4, 4)
        two = serving_inputs(random_episodes(tasks=2, support=4, query=4, seed=43), "serving_default")
        waiting = futures.ThreadPoolExecutor(1).submit(client.predict, one)  # sits in the open batch for 3 s
        time.sleep(0.5)
        with pytest.raises(ServingError) as err:
            client.predict(two)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert err.value.message == (
            "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
            "and max_enqueued_batches is 1"
        )
        np.testing.assert_allclose(waiting.result().outputs["scores"], _scores(exported[1], one), atol=ATOL)
    with RestClient(f"http://127.0.0.1:{strict_batching.rest_port}", "cmml", timeout=60) as rest:
        with pytest.raises(ServingError) as err:
            rest.request("POST", "/v1/models/cmml:predict", _body(one))
        assert (err.value.http_status, err.value.message) == (
            429,
            "Run() timeout exceeded while waiting in batching queue",
        )


def test_an_output_filter_that_leaves_outputs_out_bypasses_the_queue(exported, strict_batching):
    """batching_session.cc InternalRun: a run whose tensors match no signature's (here: one output of two) is
    run on its own ("Bypassing batcher"): a request that would not fit the full queue still runs."""
    one = serving_inputs(random_episodes(tasks=1, support=4, query=4, seed=51), "encode_context")
    two = serving_inputs(random_episodes(tasks=2, support=4, query=4, seed=52), "encode_context")
    model = exported[1]
    with GrpcClient(f"127.0.0.1:{strict_batching.grpc_port}", "cmml", timeout=60) as client:
        waiting = futures.ThreadPoolExecutor(1).submit(client.predict, one, "encode_context")  # fills the queue
        time.sleep(0.5)
        with pytest.raises(ServingError) as err:  # both outputs: through the full queue
            client.predict(two, "encode_context")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        context = client.predict(two, "encode_context", output_filter=["context"]).outputs["context"]
        np.testing.assert_allclose(
            context, model.encode_context({k: tf.constant(v) for k, v in two.items()}).numpy(), atol=ATOL
        )
        assert sorted(waiting.result().outputs) == ["context", "state"]


def test_allowed_batch_sizes_pad_the_batch_and_must_end_at_max_batch_size(exported):
    """MergeInputTensors pads a batch up to the next allowed size with copies of the last task's first row, and
    SplitOutputTensors drops them; bundle_factory_util.cc WrapSessionForBatching refuses a last allowed size
    other than max_batch_size, which fails the load, and a server whose models all fail does not start
    (load_servables_fast.cc)."""
    root, model, _, episodes = exported
    merged, padded = merge_inputs(
        [{"x": np.array([[1, 2]])}, {"x": np.array([[3, 4], [5, 6]])}], {"x": "x:0"}, allowed_batch_sizes=(2, 6)
    )
    assert padded == 6 and merged["x"].tolist() == [[1, 2], [3, 4], [5, 6], [3, 4], [3, 4], [3, 4]]
    inputs = serving_inputs(random_episodes(tasks=3, support=4, query=4, seed=61), "serving_default")
    options = BatchingOptions(max_batch_size=4, allowed_batch_sizes=(4,), num_batch_threads=1)
    with (
        ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0, batching=options) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "cmml") as client,
    ):
        np.testing.assert_allclose(client.predict(inputs).outputs["scores"], _scores(model, inputs), atol=ATOL)
    wrong = BatchingOptions(max_batch_size=16, allowed_batch_sizes=(4, 8))
    with pytest.raises(ServingError) as err:
        ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0, batching=wrong).start()
    assert (err.value.code, err.value.message) == (
        grpc.StatusCode.UNKNOWN,
        "1 servable(s) did not become available: {{{name: cmml version: 1} due to error: INVALID_ARGUMENT: "
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; expected 16}, }",
    )


class _ScalarInput(tf.Module):
    """A signature with a scalar input, like recommend's ``k``."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"), tf.TensorSpec([], tf.int32, "k")])
    def serve(self, x, k):
        return {"y": x * tf.cast(k, tf.float32), "total": tf.reduce_sum(x, axis=1)}


def test_a_scalar_input_cannot_be_batched_not_even_in_warmup(tmp_path):
    """batching_util.h ComputeTensorBatchSize: INVALID_ARGUMENT "Batching Run() input tensors must have at least
    one dimension". Warm-up records run through the batching session too (saved_model_bundle_source_adapter.cc:
    the bundle's session is wrapped before RunSavedModelWarmup), so such a record fails the load: with
    --enable_batching, TF Serving cannot load a model whose warm-up file holds a recommend(k) request."""
    module = _ScalarInput()
    path = tmp_path / "export"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    install_version(path, tmp_path / "models" / "g", version=1)
    x = np.ones((2, 3), np.float32)
    with (
        ServingDouble(tmp_path / "models" / "g", "g", poll_seconds=0, batching=BatchingOptions()) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "g") as client,
    ):
        with pytest.raises(ServingError) as err:
            client.predict({"x": x, "k": np.int32(2)})
        assert (err.value.code, err.value.message) == (
            INVALID,
            "Batching Run() input tensors must have at least one dimension",
        )
        # one output of two: the run bypasses the batcher
        out = client.predict({"x": x, "k": np.int32(2)}, output_filter=["y"]).outputs["y"]
        np.testing.assert_allclose(out, 2 * x)
    write_warmup_requests(path, [("serving_default", {"x": x, "k": np.array(2, np.int32)})])
    install_version(path, tmp_path / "models" / "w", version=1)
    with pytest.raises(ServingError) as err:
        ServingDouble(tmp_path / "models" / "w", "w", poll_seconds=0, batching=BatchingOptions()).start()
    assert err.value.message.endswith(
        "due to error: INVALID_ARGUMENT: Batching Run() input tensors must have at least one dimension}, }"
    )


# --- model config file, version policies, labels, start-up refusals (item 7) ------------------------------------
def _serve(argv: list[str], capsys) -> tuple[int, str]:
    """``cmml serve`` in this process, for command lines that are refused before anything is served."""
    code = cli.main(["serve", *argv])
    return code, capsys.readouterr().out.strip()


def _config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_start_up_refusals_are_tf_servings(exported, tmp_path, capsys):
    """main.cc prints "Failed to start server. Error: <status>" on stdout and returns -1; the statuses are
    server.cc BuildAndStart's, util/proto_util.h ParseProtoTextFile's and server_core.cc ReloadConfig's."""
    base = str(exported[0] / "models" / "cmml")

    def config_file(name: str, *models: str) -> str:
        text = "model_config_list { " + " ".join(f"config {{ {m} }}" for m in models) + " }"
        return f"--model_config_file={_config(tmp_path / name, text)}"

    one = f'name: "cmml" base_path: "{base}" model_platform: "tensorflow"'
    batching_file = f"--batching_parameters_file={_config(tmp_path / 'empty.config', '')}"
    cases = [
        (
            ["--port=0", f"--model_base_path={base}"],
            "INVALID_ARGUMENT: At least one of server_options.grpc_port or server_options.grpc_socket_path must be "
            "set.",
        ),
        ([], "INVALID_ARGUMENT: Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            ["--model_base_path=models/cmml", "--model_name=cmml"],
            "INVALID_ARGUMENT: Expected model cmml to have an absolute path or URI; got base_path()=models/cmml",
        ),
        (
            [f"--model_config_file={_config(tmp_path / 'bad.config', 'model_config_list { nope: 1 }')}"],
            f"INVALID_ARGUMENT: Invalid protobuf file: '{tmp_path / 'bad.config'}'",
        ),
        (
            [f"--model_config_file={tmp_path / 'missing.config'}"],
            f"NOT_FOUND: {tmp_path / 'missing.config'}; No such file or directory",
        ),
        (
            [config_file("dup.config", one, one)],
            "INVALID_ARGUMENT: Illegal to list model cmml multiple times in config list",
        ),
        (
            [config_file("rel.config", 'name: "a" base_path: "rel" model_platform: "tensorflow"')],
            "INVALID_ARGUMENT: Expected model a to have an absolute path or URI; got base_path()=rel",
        ),
        (
            [config_file("pt.config", f'name: "a" base_path: "{base}" model_platform: "pytorch"')],
            "INVALID_ARGUMENT: Model a requests unsupported platform pytorch",
        ),
        (
            [config_file("np.config", f'name: "a" base_path: "{base}"')],
            "INVALID_ARGUMENT: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is a",
        ),
        (
            [config_file("label.config", one + ' version_labels { key: "stable" value: 1 }')],
            "FAILED_PRECONDITION: Request to assign label to version 1 of model cmml, which is not currently "
            "available for inference",
        ),
        (
            [f"--model_base_path={base}", batching_file],
            "INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        ),
        (  # BatchingParameters fields are wrappers: "max_batch_size { value: 4 }"
            [
                f"--model_base_path={base}",
                "--enable_batching",
                f"--batching_parameters_file={_config(tmp_path / 'bb.config', 'max_batch_size: 4')}",
            ],
            f"INVALID_ARGUMENT: Invalid protobuf file: '{tmp_path / 'bb.config'}'",
        ),
        (
            [
                f"--model_base_path={base}",
                "--enable_batching=true",
                f"--batching_parameters_file={_config(tmp_path / 't.config', 'num_batch_threads { value: 0 }')}",
            ],
            "INVALID_ARGUMENT: num_batch_threads must be positive; was 0",
        ),
    ]
    for argv, message in cases:
        code, out = _serve(["--port=1", "--rest_api_port=0", *argv], capsys)
        assert (code, out) == (255, f"Failed to start server. Error: {message}"), argv


def test_config_file_with_policies_labels_batching_and_cors(exported, tmp_path):
    """A command line as tensorflow_model_server takes it: --model_config_file (model_server_config.proto; with
    it --model_name / --model_base_path are ignored, server.cc), version policies
    (file_system_storage_path_source.cc), labels (server_core.cc GetModelVersionForLabel, with
    --allow_version_labels_for_unavailable_models), --enable_batching with a parameters file, CORS headers
    and --grpc_channel_arguments (server.cc parseGrpcChannelArgs)."""
    _, model, path, episodes = exported
    for version in (1, 2, 3):
        install_version(path, tmp_path / "cmml", version=version)
        install_version(path, tmp_path / "other", version=version)
    config = _config(
        tmp_path / "models.config",
        f"""model_config_list {{
          config {{
            name: "cmml" base_path: "{tmp_path / "cmml"}" model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 versions: 3 }} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 3 }}
            version_labels {{ key: "future" value: 7 }}
          }}
          config {{
            name: "other" base_path: "{tmp_path / "other"}" model_platform: "tensorflow"
            model_version_policy {{ latest {{ num_versions: 2 }} }}
          }}
        }}""",
    )
    batching = _config(
        tmp_path / "batching.config",
        "max_batch_size { value: 8 } batch_timeout_micros { value: 1000 } num_batch_threads { value: 2 }\n"
        "pad_variable_length_inputs: true allowed_batch_sizes: 4 allowed_batch_sizes: 8",
    )
    args = [
        f"--model_config_file={config}",
        "--allow_version_labels_for_unavailable_models",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--rest_api_enable_cors_support=true",
        "--grpc_channel_arguments=grpc.max_send_message_length=300,grpc.http2.max_pings_without_data=0",
    ]
    inputs = serving_inputs(episodes, "serving_default")
    want = _scores(model, inputs)
    with DoubleProcess(tmp_path / "ignored", "ignored", poll_seconds=0, extra_args=args) as proc:
        assert "models=cmml:3,other:3" in proc.ready_line
        with GrpcClient(proc.grpc_target, "cmml") as cmml, GrpcClient(proc.grpc_target, "other") as other:
            assert [(s.version, s.state) for s in cmml.status()] == [(3, "AVAILABLE"), (1, "AVAILABLE")]
            assert [(s.version, s.state) for s in other.status()] == [(3, "AVAILABLE"), (2, "AVAILABLE")]
            assert cmml.predict(inputs).version == 3
            assert cmml.predict(inputs, version=1).version == 1
            for label, version in (("stable", 1), ("canary", 3)):
                request = cmml.predict_request(inputs, "serving_default")
                request.model_spec.version_label = label
                result = cmml.predict_raw(request)
                assert result.version == version
                np.testing.assert_allclose(result.outputs["scores"], want, atol=ATOL)
            for label, code, message in [
                ("future", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(cmml, 7)"),
                ("nope", INVALID, "Unrecognized servable version label: nope"),
            ]:
                request = cmml.predict_request(inputs, "serving_default")
                request.model_spec.version_label = label
                with pytest.raises(ServingError) as err:
                    cmml.predict_raw(request)
                assert (err.value.code, err.value.message) == (code, message)
            with pytest.raises(ServingError) as err:
                cmml.predict(inputs, version=2)  # on disk, not in the policy
            assert err.value.message == "Servable not found for request: Specific(cmml, 2)"
            with GrpcClient(proc.grpc_target, "ignored") as ignored, pytest.raises(ServingError) as err:
                ignored.status()
            assert err.value.message == "Could not find any versions of model ignored"
            # grpc.max_send_message_length from --grpc_channel_arguments: a 100-candidate answer is too large
            many = serving_inputs(random_episodes(tasks=2, support=3, query=100, seed=71), "serving_default")
            with pytest.raises(ServingError) as err:
                cmml.predict(many)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert re.search(r"Sent message larger than max \(\d+ vs\. 300\)", err.value.message), err.value.message
        body = _body(inputs)
        status, headers, payload = _http(
            proc.rest_port,
            _request("POST", "/v1/models/other/versions/2:predict", {"Content-Length": str(len(body))}, body),
        )
        assert status == 200 and headers["access-control-allow-origin"] == "*"
        np.testing.assert_allclose(json.loads(payload)["outputs"], want, atol=ATOL)


def test_version_policies_follow_the_disk(exported, tmp_path):
    """AvailabilityPreservingPolicy (availability_preserving_policy.cc) with the policies' aspired versions:
    latest N serves the N highest; a version leaving the policy is unloaded once a wanted one serves."""
    path = exported[2]
    base = tmp_path / "cmml"
    for version in (1, 2, 3):
        install_version(path, base, version=version)
    manager = ModelManager("cmml", base, poll_seconds=0, replay_warmup=False, policy=VersionPolicy("latest", 2))
    manager.start()
    assert manager.available == {2, 3} and manager.current.version == 3
    install_version(path, base, version=4)
    manager.refresh()
    assert manager.available == {3, 4}
    assert {s.version: s.state for s in manager.statuses("cmml")} == {
        2: State.END,
        3: State.AVAILABLE,
        4: State.AVAILABLE,
    }
    every = ModelManager("cmml", base, poll_seconds=0, replay_warmup=False, policy=VersionPolicy("all"))
    every.start()
    assert every.available == {1, 2, 3, 4}
    specific = ModelManager(
        "cmml", base, poll_seconds=0, replay_warmup=False, policy=VersionPolicy("specific", versions=frozenset({1, 9}))
    )
    specific.start()
    assert specific.available == {1}
    with pytest.raises(ServingError, match=r"Specific\(cmml, 9\)"):
        specific.get(9)


def test_rest_on_the_grpc_port_is_skipped_and_an_empty_config_serves_nothing(exported):
    """server.cc: an HTTP port equal to the gRPC port logs an error and skips the REST API (the server runs);
    server_core.cc ReloadConfig: an empty ModelServerConfig is "Taking no action for empty config"."""
    from cmml.serving.ports import free_port

    port = free_port()
    with (
        ServingDouble(exported[0] / "models" / "cmml", "cmml", port=port, rest_api_port=port, poll_seconds=0) as d,
        GrpcClient(f"127.0.0.1:{port}", "cmml") as client,
    ):
        assert d.rest_port is None and client.status()[0].state == "AVAILABLE"
    with ServingDouble(None, models=[], poll_seconds=0) as empty, GrpcClient(f"127.0.0.1:{empty.grpc_port}", "x") as c:
        with pytest.raises(ServingError) as err:
            c.status()
        assert (err.value.code, err.value.message) == (
            grpc.StatusCode.NOT_FOUND,
            "Could not find any versions of model x",
        )
