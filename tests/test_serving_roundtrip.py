"""Client <-> test double over real gRPC and HTTP on loopback, for every signature of an exported
CMML model; results must equal the in-memory model's. Also the error contract, the two-stage path
and ``cmml predict`` (from a JSON body and from a dataset)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

import cmml  # noqa: F401
from cmml.models.cmml import CMMLModel
from cmml.models.config import CMMLConfig
from cmml.models.testing import DEFAULT_SPECS, random_episodes
from cmml.serving import cli
from cmml.serving.context_cache import ContextCache, StaleContextError
from cmml.serving.errors import ServingError
from cmml.serving.grpc_client import GrpcClient
from cmml.serving.json_codec import inputs_to_json
from cmml.serving.layout import install_version
from cmml.serving.rest_client import RestClient
from cmml.serving.server import ServingDouble
from cmml.serving.signatures import read_meta_graph, signatures_from_map
from cmml.serving.testing import export_cmml_model, hash_ids, serving_inputs
from cmml.serving.warmup import canned_requests, write_warmup_requests

ATOL = 1e-5
SIGNATURES = ("serving_default", "encode_context", "score", "update_context")


@dataclasses.dataclass
class Served:
    model: object
    episodes: dict
    double: ServingDouble
    grpc: GrpcClient
    rest: RestClient
    export_dir: Path
    expected: dict


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    episodes = random_episodes(tasks=3, support=9, query=7, seed=11)
    model, export_dir = export_cmml_model(root / "export", seed=1, episodes=episodes)
    write_warmup_requests(export_dir, canned_requests(export_dir, episodes))
    install_version(export_dir, root / "models" / "cmml")
    features = {k: tf.constant(v) for k, v in episodes.items()}
    context = model.encode_context(features).numpy()
    expected = {
        "scores": model(features).numpy(),
        "context": context,
        "score": model.score(tf.constant(context), features)["score"].numpy(),
    }
    double = ServingDouble(root / "models" / "cmml", "cmml", poll_seconds=0).start()
    grpc_client = GrpcClient(f"127.0.0.1:{double.grpc_port}", "cmml")
    rest_client = RestClient(f"http://127.0.0.1:{double.rest_port}", "cmml")
    try:
        yield Served(model, episodes, double, grpc_client, rest_client, export_dir, expected)
    finally:
        grpc_client.close()
        rest_client.close()
        double.stop()


def _call(served: Served, transport: str, inputs: dict, signature: str):
    if transport == "grpc":
        return served.grpc.predict(inputs, signature)
    return served.rest.predict(inputs, signature, row_format=transport == "rest-instances")


@pytest.mark.parametrize("transport", ["grpc", "rest-inputs", "rest-instances"])
def test_every_signature_matches_the_in_memory_model(served, transport):
    ep, want = served.episodes, served.expected
    out = _call(served, transport, serving_inputs(ep, "serving_default"), "serving_default").outputs
    np.testing.assert_allclose(out["scores"], want["scores"], atol=ATOL)

    enc = _call(served, transport, serving_inputs(ep, "encode_context"), "encode_context").outputs
    np.testing.assert_allclose(enc["context"], want["context"], atol=ATOL)
    assert enc["state"].shape[0] == 3 and enc["state"].dtype == np.float32

    out = _call(served, transport, serving_inputs(ep, "score", context=enc["context"]), "score").outputs
    np.testing.assert_allclose(out["scores"], want["score"], atol=ATOL)

    # update_context one interaction at a time from the initial state == encoding the whole support set
    state = served.model.initial_state(3).numpy()
    for k in range(ep["support_mask"].shape[1]):
        one = {key: value[:, k : k + 1] for key, value in ep.items() if key.startswith("support_")}
        out = _call(served, transport, serving_inputs(one, "update_context", state=state), "update_context").outputs
        state = out["state"]
    np.testing.assert_allclose(out["context"], want["context"], atol=ATOL)
    np.testing.assert_allclose(state, enc["state"], atol=ATOL)


def test_grpc_response_names_model_version_and_signature(served):
    result = served.grpc.predict(
        serving_inputs(served.episodes, "encode_context"), "encode_context", output_filter=["context"]
    )
    assert (result.version, result.signature_name, sorted(result.outputs)) == (1, "encode_context", ["context"])


def test_metadata_and_status_over_both_transports(served):
    on_disk = signatures_from_map(
        get_model_metadata_pb2.SignatureDefMap(signature_def=read_meta_graph(served.export_dir).signature_def)
    )
    for client in (served.grpc, served.rest):
        version, signatures = client.metadata()
        assert version == 1
        assert signatures == on_disk and set(SIGNATURES) <= set(signatures)
        assert signatures["score"].inputs["context"].shape == (None, served.expected["context"].shape[1])
        [status] = client.status()
        assert (status.version, status.state, status.error_code) == (1, "AVAILABLE", "OK")


INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


def _bad_requests(ep, transport: str):
    """(what, inputs, signature, status, message) with TF Serving 2.16.1's status and text per transport
    (predict_util.cc and TensorFlow's GetInputValues over gRPC, http_rest_api_handler.cc and
    json_tensor.cc over REST); graph errors carry TensorFlow's kernel message."""
    good = serving_inputs(ep, "serving_default")
    grpc_ = transport == "grpc"
    yield (
        "unknown signature",
        good,
        "no_such_signature",
        PRECONDITION if grpc_ else INVALID,
        'Serving signature key "no_such_signature" not found.'
        if grpc_
        else 'Serving signature name: "no_such_signature" not found in signature def',
    )
    yield (
        "missing input",
        {k: v for k, v in good.items() if k != "query_mask"},
        "serving_default",
        INVALID,
        "Missing but required: {query_mask}." if grpc_ else "Missing named input: query_mask in 'inputs' object.",
    )
    if grpc_:  # REST's columnar format ignores keys the signature does not take (below)
        yield "extra input", {**good, "bogus": good["query_mask"]}, "serving_default", INVALID, "Sent extra: {bogus}."
    yield "wrong rank", {**good, "support_genres": good["support_item_id"]}, "serving_default", INVALID, "rank 3"
    yield (
        "id out of range",
        {**good, "query_item_id": good["query_item_id"] + 10**6},
        "serving_default",
        INVALID,
        "is not in [0, ",  # TensorFlow's gather: indices[i,j] = 1000xxx is not in [0, n)
    )


@pytest.mark.parametrize("transport", ["grpc", "rest-inputs"])
def test_bad_requests_get_tf_servings_status_and_message(served, transport):
    for what, inputs, signature, code, message in _bad_requests(served.episodes, transport):
        with pytest.raises(ServingError) as err:
            _call(served, transport, inputs, signature)
        assert err.value.code == code, (what, err.value.code)
        assert message in err.value.message, (what, err.value.message)
        assert "Graph execution error" not in err.value.message and "[Op:" not in err.value.message
        if transport != "grpc":
            assert err.value.http_status == 400


def test_rest_columnar_inputs_ignore_keys_the_signature_does_not_take(served):
    good = serving_inputs(served.episodes, "serving_default")
    out = served.rest.predict({**good, "bogus": good["query_mask"]}, "serving_default").outputs
    np.testing.assert_allclose(out["scores"], served.expected["scores"], atol=ATOL)


def test_a_client_written_like_tf_servings_mnist_client_reads_float_val(served):
    """TF Serving's example clients build requests with tf.make_tensor_proto and read the typed field
    ``outputs['scores'].float_val``, which TF Serving fills (Tensor::AsProtoField), never tensor_content."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{served.double.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cmml"
    request.model_spec.signature_name = "serving_default"
    for name, value in serving_inputs(served.episodes, "serving_default").items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    result = stub.Predict(request, 10.0)
    channel.close()
    scores = result.outputs["scores"]
    assert scores.tensor_content == b"" and scores.dtype == tf.float32.as_datatype_enum
    shape = [d.size for d in scores.tensor_shape.dim]
    np.testing.assert_allclose(np.array(scores.float_val).reshape(shape), served.expected["scores"], atol=ATOL)
    np.testing.assert_allclose(tf.make_ndarray(scores), served.expected["scores"], atol=ATOL)


def test_wrong_dtype_over_grpc_and_wrong_json_type_over_rest(served):
    inputs = serving_inputs(served.episodes, "serving_default")
    with pytest.raises(ServingError, match="expects DT_INT64 but DT_INT32 was sent") as err:
        served.grpc.predict({**inputs, "query_item_id": inputs["query_item_id"].astype(np.int32)})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    body = {"signature_name": "serving_default", **inputs_to_json(inputs)}
    body["inputs"]["query_item_id"] = [["a"] * 7] * 3
    with pytest.raises(ServingError, match="is DT_INT64 but the JSON holds strings") as err:
        served.rest.predict_json(body)
    assert err.value.http_status == 400


def test_unknown_model_or_version_is_not_found(served):
    inputs = serving_inputs(served.episodes, "encode_context")
    port = served.double.grpc_port
    with (
        GrpcClient(f"127.0.0.1:{port}", "other") as other,
        RestClient(f"http://127.0.0.1:{served.double.rest_port}", "other") as other_rest,
    ):
        for client in (other, other_rest):
            with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(other\)") as err:
                client.predict(inputs, "encode_context")
            assert err.value.code == grpc.StatusCode.NOT_FOUND
    for client in (served.grpc, served.rest):
        with pytest.raises(ServingError, match="Specific") as err:
            client.predict(inputs, "encode_context", version=7)
        assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_labels_output_filters_and_json_types_are_refused_as_tf_serving_does(served):
    """Status codes and texts of TF Serving 2.16.1 (server_core.cc, predict_util.cc, json_tensor.cc,
    get_model_status_impl.cc, grpc_status_util.cc) for what the double used to accept or answer otherwise."""
    inputs = serving_inputs(served.episodes, "encode_context")
    # a version label: the double reads no model config file, so no label exists
    request = served.grpc.predict_request(inputs, "encode_context")
    request.model_spec.version_label = "stable"
    with pytest.raises(ServingError) as err:
        served.grpc.predict_raw(request)
    assert (err.value.code, err.value.message) == (INVALID, "Unrecognized servable version label: stable")
    body = json.dumps({"signature_name": "encode_context", **inputs_to_json(inputs)}).encode()
    with pytest.raises(ServingError) as err:
        served.rest.request("POST", "/v1/models/cmml/labels/stable:predict", body)
    assert err.value.http_status == 400 and "Unrecognized servable version label: stable" in err.value.message
    # ... but a status request reads no label: every version, HTTP 200
    with_label = served.rest.request("GET", "/v1/models/cmml/labels/stable")
    assert with_label == served.rest.request("GET", "/v1/models/cmml")
    assert served.rest.request("GET", "/V1/Models/cmml") == with_label  # routes are case-insensitive
    # an unknown version: the request, nothing more
    with pytest.raises(ServingError) as err:
        served.grpc.predict(inputs, "encode_context", version=7)
    assert err.value.message == "Servable not found for request: Specific(cmml, 7)"
    # output_filter: duplicates and unknown aliases
    with pytest.raises(ServingError) as err:
        served.grpc.predict(inputs, "encode_context", output_filter=["context", "context"])
    assert (err.value.code, err.value.message) == (INVALID, "duplicate output tensor alias: context")
    with pytest.raises(ServingError) as err:
        served.grpc.predict(inputs, "encode_context", output_filter=["nope"])
    assert err.value.message.startswith("output tensor alias not found in signature: nope")
    # JSON true is not a number for TF Serving
    json_body = {"signature_name": "encode_context", **inputs_to_json(inputs)}
    json_body["inputs"]["support_item_id"][0][0] = True
    with pytest.raises(ServingError) as err:
        served.rest.predict_json(json_body)
    assert err.value.http_status == 400
    assert "JSON Value: true Type: True is not of expected type: int64" in err.value.message
    # gRPC messages are cut at 1024 characters
    with pytest.raises(ServingError) as err:
        served.grpc.predict(inputs, "x" * 2000)
    assert err.value.code == PRECONDITION
    assert len(err.value.message) == 1024 + len("...TRUNCATED") and err.value.message.endswith("x...TRUNCATED")


def test_rest_protocol_errors_are_json(served):
    rest = served.rest
    for method, path, body, status, message in [
        ("POST", "/v1/models/cmml:predict", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/models/cmml:predict", b"[1, 2]", 400, "JSON object"),
        ("POST", "/v1/models/cmml:classify", b"{}", 501, "not implemented"),
        ("GET", "/v1/models/cmml/versions/1/metadata/extra", None, 400, "Malformed request"),
        # TF Serving matches routes against the path with its query string, and allows no trailing "/"
        ("GET", "/v1/models/cmml/", None, 400, "Malformed request"),
        ("GET", "/v1/models/cmml/metadata?x=1", None, 400, "Malformed request"),
        ("GET", "/v1/models/cmml?x=1", None, 404, "Could not find any versions of model cmml?x=1"),
        ("GET", "/index.html", None, 404, "/v1/models"),
    ]:
        with pytest.raises(ServingError) as err:
            rest.request(method, path, body)
        assert err.value.http_status == status and message in err.value.message, (path, err.value)


def test_two_stage_path_equals_one_call(served):
    ep, want = served.episodes, served.expected
    first = {k: v[:, :4] for k, v in ep.items() if k.startswith("support_")}
    cache = ContextCache(served.grpc)
    cache.encode("user-1", first)
    for k in range(4, ep["support_mask"].shape[1]):  # the rest of the history arrives one interaction at a time
        cache.update(
            "user-1",
            {"new_" + n[len("support_") :]: v[:, k : k + 1] for n, v in ep.items() if n.startswith("support_")},
        )
    np.testing.assert_allclose(cache.get("user-1").context, want["context"], atol=ATOL)
    assert cache.get("user-1").version == 1
    query = {k: v for k, v in ep.items() if k.startswith("query_") and k != "query_label"}
    np.testing.assert_allclose(cache.score("user-1", query), want["scores"], atol=ATOL)
    with pytest.raises(KeyError, match="call encode"):
        cache.score("unknown-user", query)
    # a context is pinned to the version that encoded it: once that version is gone, encode again
    cache.put("user-2", dataclasses.replace(cache.get("user-1"), version=99))
    with pytest.raises(StaleContextError, match="version 99, which is no longer served"):
        cache.score("user-2", query)
    assert "user-2" not in cache


def test_warmup_records_were_replayed_on_load(served):
    current = served.double.manager.current
    assert (current.version, current.warmup_records) == (1, len(SIGNATURES))


def test_cli_predict_ranks_candidates_from_a_json_body(served, tmp_path, capsys):
    inputs = serving_inputs(served.episodes, "serving_default")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"signature_name": "serving_default", **inputs_to_json(inputs)}))
    grpc = ["predict", "--server", f"127.0.0.1:{served.double.grpc_port}", "--model_name", "cmml"]
    grpc += ["--input", str(request)]
    rest = ["predict", "--rest_url", f"http://127.0.0.1:{served.double.rest_port}", "--model_name", "cmml"]
    rest += ["--input", str(request)]
    assert cli.main([*grpc, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_version"] == 1
    for t, ranking in enumerate(result["tasks"]):
        valid = inputs["query_mask"][t] > 0
        scores = served.expected["scores"][t][valid]
        assert [r["item"] for r in ranking] == [
            int(i) for i in inputs["query_item_id"][t][valid][np.argsort(-scores, kind="stable")]
        ]
        np.testing.assert_allclose([r["score"] for r in ranking], np.sort(scores)[::-1], atol=ATOL)

    assert cli.main([*rest, "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "version 1, signature 'serving_default'" in text and text.count("task ") == 3
    assert cli.main([*grpc, "--signature_name", "nope"]) == 1
    assert 'INVALID_ARGUMENT: Serving signature name: "nope"' in capsys.readouterr().err


# --- requests built from a dataset need a model that takes raw features -------------------------------------
RAW_SPECS = {
    "user_id": ([], tf.string),
    "gender": ([], tf.string),
    "item_id": ([], tf.string),
    "genres": ([None], tf.string),
}


def test_cli_predict_from_a_dataset_user_and_candidates(synthetic_small, tmp_path, capsys):
    from cmml.data import open_dataset
    from cmml.models.export import export_saved_model

    tf.keras.utils.set_random_seed(3)
    model = CMMLModel(DEFAULT_SPECS, CMMLConfig(embedding_dim=8))
    model({k: tf.constant(v) for k, v in random_episodes(tasks=1, support=3, query=2).items()})  # build the weights
    raw_specs = {name: tf.TensorSpec(shape, dtype) for name, (shape, dtype) in RAW_SPECS.items()}
    path = export_saved_model(model, tmp_path / "raw-model", preprocess=hash_ids, raw_specs=raw_specs)
    install_version(path, tmp_path / "models" / "raw")

    table = open_dataset(synthetic_small).read_interactions().table
    user = table["user_id"][0].as_py()
    history = [r["item_id"] for r in table.to_pylist() if r["user_id"] == user]
    candidates = [i for i in dict.fromkeys(table["item_id"].to_pylist()) if i not in history][:6]
    with ServingDouble(tmp_path / "models" / "raw", "raw", poll_seconds=0) as double:
        args = [
            "predict",
            "--server",
            f"127.0.0.1:{double.grpc_port}",
            "--model_name",
            "raw",
            "--data",
            str(synthetic_small),
            "--user",
            user,
            "--candidates",
            ",".join(candidates),
            "--max_support",
            "20",
            "--format",
            "json",
        ]
        assert cli.main(args) == 0
        ranking = json.loads(capsys.readouterr().out)["tasks"][0]

    # independent expectation: the in-memory model on hashed ids of the user's 20 latest interactions
    from cmml.serving.task_inputs import user_history

    items, labels = user_history(open_dataset(synthetic_small), user, exclude=candidates, max_support=20)
    assert len(items) == min(20, len(history))
    users = {r["user_id"]: r for r in open_dataset(synthetic_small).read_users()[0].to_pylist()}
    item_rows = {r["item_id"]: r for r in open_dataset(synthetic_small).read_items()[0].to_pylist()}

    def part(prefix, rows):
        genres = [item_rows[i]["genres"] for i in rows]
        width = max(len(g) for g in genres)
        raw = {
            "user_id": [[user] * len(rows)],
            "gender": [[users[user]["gender"]] * len(rows)],
            "item_id": [rows],
            "genres": [[g + [""] * (width - len(g)) for g in genres]],
        }
        ids = hash_ids(
            {k: tf.reshape(tf.constant(v), [-1] + ([width] if k == "genres" else [])) for k, v in raw.items()}
        )
        return {
            f"{prefix}_{k}": tf.reshape(v, [1, len(rows)] + ([width] if k == "genres" else [])) for k, v in ids.items()
        }

    features = {**part("support", items), **part("query", candidates)}
    features.update(
        support_label=tf.constant([labels], tf.float32),
        support_mask=tf.ones([1, len(items)]),
        query_mask=tf.ones([1, len(candidates)]),
    )
    scores = model(features).numpy()[0]
    assert [r["item"] for r in ranking] == [candidates[k] for k in np.argsort(-scores, kind="stable")]
    np.testing.assert_allclose([r["score"] for r in ranking], np.sort(scores)[::-1], atol=ATOL)


def test_cli_refuses_raw_dataset_values_for_an_id_model(served, synthetic_small, capsys):
    args = [
        "predict",
        "--server",
        f"127.0.0.1:{served.double.grpc_port}",
        "--model_name",
        "cmml",
        "--data",
        str(synthetic_small),
        "--user",
        "1",
        "--candidates",
        "1,2",
    ]
    assert cli.main(args) == 2
    assert "takes transformed ids" in capsys.readouterr().err


def test_a_busy_port_is_an_error_not_a_shared_port(served, tmp_path):
    with pytest.raises(OSError, match="cannot bind gRPC port"):
        ServingDouble(
            tmp_path / "empty", "cmml", port=served.double.grpc_port, rest_api_port=None, poll_seconds=0
        ).start()
    with pytest.raises(OSError):
        ServingDouble(tmp_path / "empty", "cmml", port=0, rest_api_port=served.double.rest_port, poll_seconds=0).start()
    # the running double is unaffected
    assert served.grpc.status()[0].state == "AVAILABLE"


def test_a_double_without_versions_answers_not_found_until_one_is_pushed(served, tmp_path):
    base = tmp_path / "models" / "cmml"
    with (
        ServingDouble(base, "cmml", poll_seconds=0) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "cmml") as client,
    ):
        with pytest.raises(ServingError, match="Servable not found") as err:
            client.predict(serving_inputs(served.episodes, "encode_context"), "encode_context")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        install_version(served.export_dir, base, version=5)
        double.manager.refresh()  # what the poller does every --file_system_poll_wait_seconds
        result = client.predict(serving_inputs(served.episodes, "encode_context"), "encode_context")
        assert result.version == 5
        np.testing.assert_allclose(result.outputs["context"], served.expected["context"], atol=ATOL)
