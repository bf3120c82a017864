"""Robustness of the test double in its own process, on loopback only, with bounded request counts
and time: a fuzz run of malformed requests (no crash, every reply a proper error or a valid
result, memory stable), a concurrent load test (p50/p99, throughput), and a version hot swap under
load that must not lose a request."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import cmml  # noqa: F401
from cmml.models.testing import random_episodes
from cmml.serving.errors import ServingError
from cmml.serving.grpc_client import GrpcClient
from cmml.serving.json_codec import inputs_to_json
from cmml.serving.layout import install_version
from cmml.serving.rest_client import RestClient
from cmml.serving.tensors import ndarray_to_tensor_proto
from cmml.serving.testing import DoubleProcess, export_cmml_model, serving_inputs
from cmml.serving.warmup import canned_requests, write_warmup_requests

FUZZ_REQUESTS = 10_000
FUZZ_THREADS = 4
MAX_REQUEST_BYTES = 4 << 20  # small cap so that over-size messages are cheap to send
RSS_GROWTH_LIMIT = 64 << 20
# Valid requests 50-100 times the usual 100 candidates. A few fixed sizes: TensorFlow's oneDNN kernels
# keep per-shape state, so a new shape on every request would measure that cache filling up rather
# than a per-request leak of the double. (Far larger valid queries raise the allocator's high-water
# mark in steps of their working set, which would drown a leak in noise.)
LARGE_QUERY_SIZES = (5_000, 10_000)
LOAD_REQUESTS, LOAD_SECONDS, LOAD_THREADS = 2_000, 20.0, 4
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def report(capsys, text: str) -> None:
    with capsys.disabled():
        print("\n" + text)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    episodes = random_episodes(tasks=2, support=5, query=4, seed=5)
    model, path = export_cmml_model(root / "export", seed=2, episodes=episodes)
    write_warmup_requests(path, canned_requests(path, episodes))
    install_version(path, root / "models" / "cmml")
    expected = model({k: tf.constant(v) for k, v in episodes.items()}).numpy()
    return root, episodes, expected, path


@pytest.fixture(scope="module")
def double(setup):
    root = setup[0]
    # A fixed mmap threshold makes glibc return every large tensor buffer to the OS when it is freed,
    # so the resident size tracks live memory instead of what the allocator keeps cached.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    args = ["--max_request_bytes", str(MAX_REQUEST_BYTES)]
    with DoubleProcess(root / "models" / "cmml", "cmml", poll_seconds=0.5, extra_args=args, env=env) as proc:
        yield proc


# --- fuzzing ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    kind: str
    allowed: frozenset
    send: object  # () -> (status: grpc.StatusCode | int, payload)


def _request(inputs: dict, signature: str = "serving_default", name: str = "cmml") -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    for k, v in inputs.items():
        req.inputs[k].CopyFrom(v if isinstance(v, tensor_pb2.TensorProto) else ndarray_to_tensor_proto(v))
    return req


class Fuzzer:
    """Builds one malformed (or, rarely, valid) request per call, seeded."""

    def __init__(self, episodes: dict, expected: np.ndarray, target: str, rest_url: str, seed: int):
        self.rng = np.random.default_rng(seed)
        self.good = serving_inputs(episodes, "serving_default")
        self.expected = expected
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.raw_predict = self.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        self.rest = RestClient(rest_url, "cmml", timeout=30)

    def close(self):
        self.channel.close()
        self.rest.close()

    # gRPC -------------------------------------------------------------------------------------------------
    def _grpc(self, request, method=None):
        def send():
            try:
                response = (method or self.stub.Predict)(request, timeout=30)
            except grpc.RpcError as exc:
                return exc.code(), exc.details()
            return OK, response

        return send

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def _inputs(self):
        return {k: v.copy() for k, v in self.good.items()}

    def case(self) -> Case:
        r = self.rng.random()
        pick = self.pick
        inputs = self._inputs()
        name = pick(sorted(inputs))
        if r < 0.04:
            return Case("valid", frozenset({OK}), self._grpc(_request(inputs)))
        if r < 0.10:
            return Case(
                "unknown signature",
                frozenset({grpc.StatusCode.FAILED_PRECONDITION}),  # TF Serving's predict_util.cc
                self._grpc(
                    _request(inputs, signature=str(pick(["nope", "", "__saved_model_init_op", "x" * 500])) or "nope")
                ),
            )
        if r < 0.16:
            del inputs[name]
            return Case("missing input", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.20:
            inputs["extra_" + name] = inputs[name]
            return Case("extra input", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.30:
            dtype = pick([np.int32, np.float64, np.float16, np.uint8, np.bool_, object])
            value = inputs[name].astype(str).astype(object) if dtype is object else inputs[name].astype(dtype)
            if value.dtype == inputs[name].dtype:
                value = value.astype(np.int32)
            inputs[name] = value
            return Case("wrong dtype", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.38:
            inputs[name] = inputs[name][..., None] if self.rng.random() < 0.5 else inputs[name].reshape(-1)
            return Case("wrong rank", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.48:
            shape = list(inputs[name].shape)
            axis = int(self.rng.integers(len(shape)))
            shape[axis] = int(self.rng.integers(0, 9))
            inputs[name] = np.resize(inputs[name], shape)
            # the graph rejects most inconsistent shapes; broadcastable or empty ones are valid calls
            return Case("shape mismatch", frozenset({OK, INVALID}), self._grpc(_request(inputs)))
        if r < 0.55:
            floats = [k for k, v in inputs.items() if v.dtype == np.float32]
            k = str(pick(floats))
            inputs[k] = inputs[k].copy()
            inputs[k].flat[int(self.rng.integers(inputs[k].size))] = pick([np.nan, np.inf, -np.inf])
            return Case("non-finite floats", frozenset({OK}), self._grpc(_request(inputs)))
        if r < 0.62:
            ints = [k for k, v in inputs.items() if v.dtype == np.int64]
            k = str(pick(ints))
            inputs[k] = inputs[k] + int(pick([10**6, -(10**6), 2**62]))
            return Case("ids out of range", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.68:
            proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
            for d in pick([[10**6, 10**6], [2**40], [1, 2**31, 2**31], [-5, 3]]):
                proto.tensor_shape.dim.add(size=int(d))
            inputs[name] = proto
            return Case("huge declared shape", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.71:
            if self.rng.random() < 0.5:
                n = pick(LARGE_QUERY_SIZES)
                big = {k: v[:1] for k, v in inputs.items() if k.startswith("support_")}
                big.update(
                    {k: np.resize(v[:1], (1, n) + v.shape[2:]) for k, v in inputs.items() if k.startswith("query_")}
                )
                return Case("large valid request", frozenset({OK}), self._grpc(_request(big)))
            # close to the message cap, decoded in full, then refused (a float tensor for an id input)
            inputs["query_item_id"] = np.zeros((1, MAX_REQUEST_BYTES // 8 - 8192), np.float64)
            return Case("near-cap tensor of the wrong dtype", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.73:
            inputs[name] = np.zeros(MAX_REQUEST_BYTES // 4 + 1024, np.float32)  # over the gRPC message cap
            return Case(
                "over the size cap", frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}), self._grpc(_request(inputs))
            )
        if r < 0.80:
            proto = ndarray_to_tensor_proto(inputs[name])
            mutation = int(self.rng.integers(4))
            if mutation == 0:
                proto.tensor_content = proto.tensor_content[:-1] if proto.tensor_content else b"x"
            elif mutation == 1:
                proto.float_val.extend([1.0, 2.0])
            elif mutation == 2:
                proto.dtype = int(pick([types_pb2.DT_COMPLEX64, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, 999]))
            else:
                proto.tensor_shape.unknown_rank = True
            inputs[name] = proto
            return Case("corrupt TensorProto", frozenset({INVALID}), self._grpc(_request(inputs)))
        if r < 0.83:
            garbage = self.rng.bytes(int(self.rng.integers(1, 2000)))
            return Case(
                "garbage bytes",
                frozenset({grpc.StatusCode.INTERNAL, INVALID, grpc.StatusCode.NOT_FOUND}),
                self._grpc(garbage, self.raw_predict),
            )
        if r < 0.86:
            request = _request(inputs, name=str(pick(["other", "", "cmml "])) or "")
            if self.rng.random() < 0.5:
                request.model_spec.name = "cmml"
                request.model_spec.version.value = int(self.rng.integers(2, 10**9))
            return Case(
                "unknown model or version", frozenset({grpc.StatusCode.NOT_FOUND, INVALID}), self._grpc(request)
            )
        if r < 0.88:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=list(pick([[], ["signature_def", "x"], ["y"]]))
            )
            request.model_spec.name = "cmml"
            return Case("bad metadata request", frozenset({INVALID}), self._grpc(request, self.stub.GetModelMetadata))
        if r < 0.89:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = str(pick(["nope", ""]))
            return Case(
                "bad status request",
                frozenset({grpc.StatusCode.NOT_FOUND, INVALID}),
                self._grpc(request, self.models.GetModelStatus),
            )
        return self._rest_case()

    # REST -------------------------------------------------------------------------------------------------
    def _http(self, method: str, path: str, body: bytes | None):
        def send():
            try:
                return 200, self.rest.request(method, path, body)
            except ServingError as exc:
                return exc.http_status, exc.message

        return send

    def _rest_case(self) -> Case:
        pick = self.pick
        body = {"signature_name": "serving_default", **inputs_to_json(self.good)}
        path = "/v1/models/cmml:predict"
        r = int(self.rng.integers(11))
        if r == 0:
            return Case("rest valid", frozenset({200}), self._http("POST", path, json.dumps(body).encode()))
        if r == 1:
            text = json.dumps(body)
            cut = int(self.rng.integers(1, len(text)))
            return Case("rest truncated JSON", frozenset({400}), self._http("POST", path, text[:cut].encode()))
        if r == 2:
            return Case(
                "rest deep nesting",
                frozenset({400}),
                self._http("POST", path, ("[" * 100_000 + "]" * 100_000).encode()),
            )
        if r == 3:
            k = str(pick(sorted(body["inputs"])))
            body["inputs"][k] = pick([[[1, 2], [3]], "text", None, {"b64": "!!"}, [[2**80]], [[True, "x"]]])
            return Case("rest bad values", frozenset({400}), self._http("POST", path, json.dumps(body).encode()))
        if r == 4:
            body["instances"] = [{}]
            return Case("rest both formats", frozenset({400}), self._http("POST", path, json.dumps(body).encode()))
        if r == 5:
            body["signature_name"] = pick(["nope", 17, None])
            return Case("rest bad signature", frozenset({400}), self._http("POST", path, json.dumps(body).encode()))
        if r == 6:
            weird = str(
                pick(
                    [
                        "/v1/models/cmml/versions/99:predict",
                        "/v1/models/other:predict",
                        "/v1/models/cmml:explode",
                        "/v1/models/cmml/versions/x:predict",
                        "/nowhere",
                        "/v1/models/cmml/labels/stable:predict",
                    ]
                )
            )
            return Case("rest bad path", frozenset({400, 404}), self._http("POST", weird, json.dumps(body).encode()))
        if r == 7:
            return Case(
                "rest bad method", frozenset({400, 501}), self._http(str(pick(["PUT", "DELETE", "PATCH"])), path, b"{}")
            )
        if r == 8:
            k = str(pick([k for k, v in self.good.items() if v.dtype == np.float32]))
            text = json.dumps(body).replace(f'"{k}": [[', f'"{k}": [[NaN, ', 1)
            # NaN is legal in TF Serving's JSON; the extra value also breaks the shape, so either answer is right
            return Case("rest NaN tokens", frozenset({200, 400}), self._http("POST", path, text.encode()))
        if r == 9:
            rows = {"signature_name": "serving_default", **inputs_to_json(self.good, row_format=True)}
            rows["instances"][0].pop(str(pick(sorted(self.good))))
            return Case("rest ragged instances", frozenset({400}), self._http("POST", path, json.dumps(rows).encode()))
        junk = base64.b64encode(self.rng.bytes(int(self.rng.integers(1, 3000))))
        return Case("rest binary junk", frozenset({400}), self._http("POST", path, junk))

    def check_valid(self, kind: str, payload) -> None:
        """A successful reply must be a well-formed result of the signature."""
        if kind == "valid":
            scores = tf.make_ndarray(payload.outputs["scores"])
            np.testing.assert_allclose(scores, self.expected, atol=1e-5)
        elif kind == "rest valid":
            np.testing.assert_allclose(np.asarray(payload["outputs"], np.float32), self.expected, atol=1e-5)
        elif isinstance(payload, predict_pb2.PredictResponse):
            assert list(payload.outputs) == ["scores"] and payload.outputs["scores"].dtype == types_pb2.DT_FLOAT, kind
        else:
            assert isinstance(payload, dict) and ("outputs" in payload or "predictions" in payload), kind


def test_fuzzing_never_crashes_and_every_reply_is_an_error_or_a_result(setup, double, capsys):
    _, episodes, expected, _ = setup
    fuzzers = [
        Fuzzer(episodes, expected, double.grpc_target, double.rest_url, seed=100 + k) for k in range(FUZZ_THREADS)
    ]
    per_thread = FUZZ_REQUESTS // FUZZ_THREADS
    counts: dict[tuple[str, object], int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    rss: list[int] = []

    def run(fuzzer: Fuzzer, n: int):
        for _ in range(n):
            case = fuzzer.case()
            status, payload = case.send()
            with lock:
                counts[(case.kind, status)] = counts.get((case.kind, status), 0) + 1
            if status not in case.allowed:
                failures.append(
                    f"{case.kind}: got {status} ({str(payload)[:200]}), allowed {sorted(map(str, case.allowed))}"
                )
            elif status in (OK, 200):
                try:
                    fuzzer.check_valid(case.kind, payload)
                except AssertionError as exc:
                    failures.append(f"{case.kind}: malformed success reply: {exc}")

    rss_before = double.rss()
    started = time.perf_counter()
    chunk = per_thread // 5  # the first chunk settles allocator pools and TF's caches; RSS is sampled after each
    try:
        for k in range(5):
            n = chunk if k < 4 else per_thread - 4 * chunk
            with futures.ThreadPoolExecutor(FUZZ_THREADS) as pool:
                list(pool.map(run, fuzzers, [n] * FUZZ_THREADS))
            rss.append(double.rss())
    finally:
        for f in fuzzers:
            f.close()
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    kinds = sorted({k for k, _ in counts})
    summary = ", ".join(f"{k}: {sum(n for (kk, _), n in counts.items() if kk == k)}" for k in kinds)
    growth = rss[-1] - rss[0]
    report(
        capsys,
        f"[fuzz] {total} requests in {elapsed:.1f} s ({total / elapsed:.0f}/s) over gRPC and REST; "
        f"double RSS {rss_before / 2**20:.0f} MiB before, after each fifth: "
        f"{' / '.join(f'{r / 2**20:.0f}' for r in rss)} MiB ({growth / 2**20:+.1f} MiB after the first fifth)\n"
        f"[fuzz] cases: {summary}",
    )
    assert not failures, f"{len(failures)} bad replies, e.g.:\n" + "\n".join(failures[:15])
    assert total == FUZZ_THREADS * per_thread
    assert double.alive(), "the test double died:\n" + "\n".join(double.log_lines[-20:])
    assert all(status != grpc.StatusCode.UNKNOWN for _, status in counts), "an unhandled exception reached gRPC"
    assert growth < RSS_GROWTH_LIMIT, f"resident memory grew by {growth / 2**20:.0f} MiB"
    assert not any("Traceback" in line for line in double.log_lines), "\n".join(double.log_lines[-40:])
    # still serving correct results
    with GrpcClient(double.grpc_target, "cmml") as client:
        np.testing.assert_allclose(
            client.predict(serving_inputs(episodes, "serving_default")).outputs["scores"], expected, atol=1e-5
        )


def test_concurrent_load_latency_and_throughput(setup, double, capsys):
    _, episodes, expected, _ = setup
    inputs = serving_inputs(episodes, "serving_default")
    deadline = time.monotonic() + LOAD_SECONDS
    per_thread = LOAD_REQUESTS // LOAD_THREADS

    def run(k: int):
        client = GrpcClient(double.grpc_target, "cmml") if k % 2 == 0 else RestClient(double.rest_url, "cmml")
        times, errors = [], []
        with client:
            for _ in range(per_thread):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                try:
                    out = client.predict(inputs).outputs["scores"]
                except ServingError as exc:
                    errors.append(str(exc))
                    continue
                times.append(time.perf_counter() - t0)
                if not np.allclose(out, expected, atol=1e-5):
                    errors.append("wrong scores")
        return times, errors

    started = time.perf_counter()
    with futures.ThreadPoolExecutor(LOAD_THREADS) as pool:
        results = list(pool.map(run, range(LOAD_THREADS)))
    elapsed = time.perf_counter() - started
    times = np.array([t for r in results for t in r[0]]) * 1e3
    errors = [e for r in results for e in r[1]]
    grpc_ms = np.array([t for k, r in enumerate(results) if k % 2 == 0 for t in r[0]]) * 1e3
    rest_ms = np.array([t for k, r in enumerate(results) if k % 2 == 1 for t in r[0]]) * 1e3
    report(
        capsys,
        f"[load] {len(times)} requests from {LOAD_THREADS} threads (gRPC + REST) in {elapsed:.1f} s: "
        f"{len(times) / elapsed:.0f} req/s; p50 {np.percentile(times, 50):.2f} ms, "
        f"p99 {np.percentile(times, 99):.2f} ms "
        f"(gRPC p50 {np.percentile(grpc_ms, 50):.2f} / p99 {np.percentile(grpc_ms, 99):.2f} ms, "
        f"REST p50 {np.percentile(rest_ms, 50):.2f} / p99 {np.percentile(rest_ms, 99):.2f} ms)",
    )
    assert not errors, errors[:5]
    assert len(times) >= min(LOAD_REQUESTS, 200), "the load test made too few requests to mean anything"
    assert np.percentile(times, 99) < 2_000, "p99 over 2 s: the double is stalling, not just slow"


def test_version_hot_swap_under_load_loses_no_request(setup, tmp_path, capsys):
    _, episodes, expected, path1 = setup
    model2, path2 = export_cmml_model(tmp_path / "v2", seed=22, episodes=episodes)
    write_warmup_requests(path2, canned_requests(path2, episodes))
    want = {1: expected, 2: model2({k: tf.constant(v) for k, v in episodes.items()}).numpy()}
    assert not np.allclose(want[1], want[2], atol=1e-3), "the two versions must score differently"
    base = tmp_path / "models" / "cmml"
    install_version(path1, base, version=1)
    inputs = serving_inputs(episodes, "serving_default")
    stop = threading.Event()
    by_version = {1: 0, 2: 0}
    lock = threading.Lock()

    def run(k: int):
        client = GrpcClient(proc.grpc_target, "cmml") if k % 2 == 0 else RestClient(proc.rest_url, "cmml")
        seen, errors = [], []
        deadline = time.monotonic() + 180  # bounded even if the swap never happens
        with client:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    result = client.predict(inputs)
                except ServingError as exc:
                    errors.append(str(exc))
                    continue
                scores = result.outputs["scores"]
                match = [v for v, w in want.items() if np.allclose(scores, w, atol=1e-5)]
                if len(match) != 1 or (result.version is not None and result.version != match[0]):
                    errors.append(f"scores match versions {match}, response says {result.version}")
                    continue
                seen.append(match[0])
                with lock:
                    by_version[match[0]] += 1
        return seen, errors

    with DoubleProcess(base, "cmml", poll_seconds=0.2) as proc:
        with futures.ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(run, k) for k in range(4)]
            deadline = time.monotonic() + 60
            while by_version[1] < 50 and time.monotonic() < deadline:  # traffic is flowing before the push
                time.sleep(0.05)
            install_version(path2, base, version=2)
            with GrpcClient(proc.grpc_target, "cmml") as status_client:
                proc.wait_for_version(status_client, 2, timeout=120)
                states = {s.version: s.state for s in status_client.status()}
            deadline = time.monotonic() + 60
            while by_version[2] < 50 and time.monotonic() < deadline:  # and keeps flowing after the swap
                time.sleep(0.05)
            stop.set()
            results = [j.result() for j in jobs]
        assert proc.alive()
    errors = [e for r in results for e in r[1]]
    report(
        capsys,
        f"[hot swap] {sum(by_version.values())} requests from 4 threads across the swap: "
        f"{by_version[1]} answered by version 1, {by_version[2]} by version 2, {len(errors)} failed",
    )
    assert not errors, errors[:5]
    assert states == {1: "END", 2: "AVAILABLE"}
    assert by_version[1] >= 50 and by_version[2] >= 50
    for seen, _ in results:  # once a client saw version 2 it never sees version 1 again
        assert seen == sorted(seen)
