"""Compatibility with TF Serving: the pushed layout, ``saved_model_cli``, stock ops only, warm-up
records as ``PredictionLog``s that replay cleanly, the version policy, any SavedModel (not only
CMML) in the double, and — when the binary is on PATH — the real ``tensorflow_model_server``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

import cmml  # noqa: F401
from cmml.models.export import non_stock_ops
from cmml.models.testing import random_episodes
from cmml.serving.errors import ServingError
from cmml.serving.grpc_client import GrpcClient
from cmml.serving.layout import install_version, list_versions
from cmml.serving.model_store import ModelManager
from cmml.serving.ports import free_port
from cmml.serving.rest_client import RestClient
from cmml.serving.server import ServingDouble
from cmml.serving.testing import export_cmml_model, serving_inputs
from cmml.serving.warmup import (
    WARMUP_FILE,
    canned_requests,
    predict_request,
    read_warmup_requests,
    warmup_path,
    write_warmup_requests,
)

SIGNATURES = ("serving_default", "encode_context", "score", "update_context")


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A CMML model pushed like the pipeline's Pusher does: warm-up records, then <base>/<name>/<version>/."""
    root = tmp_path_factory.mktemp("compat")
    episodes = random_episodes(tasks=2, support=6, query=5, seed=8)
    model, export_dir = export_cmml_model(root / "export", seed=4, episodes=episodes)
    write_warmup_requests(export_dir, canned_requests(export_dir, episodes))
    version_dir = install_version(export_dir, root / "models" / "cmml")
    return model, episodes, version_dir


def test_saved_model_cli_shows_the_pushed_model(pushed):
    _, _, version_dir = pushed
    cli = Path(sys.executable).with_name("saved_model_cli")
    assert cli.is_file(), f"saved_model_cli is not installed next to {sys.executable}"
    proc = subprocess.run(
        [str(cli), "show", "--dir", str(version_dir), "--all"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in proc.stdout
    assert "inputs['support_item_id'] tensor_info:" in proc.stdout and "dtype: DT_INT64" in proc.stdout
    assert "outputs['scores'] tensor_info:" in proc.stdout


def test_pushed_model_uses_only_stock_ops(pushed):
    _, _, version_dir = pushed
    assert version_dir.name == "1" and (version_dir / "saved_model.pb").is_file()
    assert non_stock_ops(version_dir) == set()


def test_warmup_records_are_prediction_logs_that_replay_cleanly(pushed):
    _, episodes, version_dir = pushed
    # parse the file the way TF Serving does: a TFRecord of serialized PredictionLog protos
    records = list(tf.data.TFRecordDataset(str(version_dir / "assets.extra" / WARMUP_FILE)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * len(SIGNATURES)
    assert sorted(log.predict_log.request.model_spec.signature_name for log in logs) == sorted(SIGNATURES)
    assert [log.SerializeToString() for log in read_warmup_requests(version_dir)] == [
        log.SerializeToString() for log in logs
    ]

    with (
        ServingDouble(version_dir.parent, "cmml", poll_seconds=0) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "cmml") as client,
    ):
        assert double.manager.current.version == 1  # the load replayed the records without error
        for log in logs:
            request = log.predict_log.request
            request.model_spec.name = "cmml"
            result = client.predict_raw(request)
            signature = double.manager.current.signatures[request.model_spec.signature_name]
            assert sorted(result.outputs) == sorted(signature.outputs)
            assert all(np.all(np.isfinite(v)) for v in result.outputs.values())


def test_warmup_writer_checks_requests_against_the_model(pushed, tmp_path):
    _, episodes, version_dir = pushed
    copy = Path(shutil.copytree(version_dir, tmp_path / "m"))
    inputs = serving_inputs(episodes, "serving_default")
    with pytest.raises(ValueError, match="does not fit the model: INVALID_ARGUMENT: input 'support_mask'"):
        write_warmup_requests(
            copy, [("serving_default", {**inputs, "support_mask": inputs["support_mask"].astype(np.float64)})]
        )
    with pytest.raises(ValueError, match="not found in signature def"):
        write_warmup_requests(copy, [("no_such_signature", inputs)])
    with pytest.raises(ValueError, match="at most 1000"):
        write_warmup_requests(copy, [("serving_default", inputs)] * 1001)
    path = write_warmup_requests(copy, [predict_request(inputs, "serving_default")])
    assert path == warmup_path(copy) and len(read_warmup_requests(copy)) == 1


def test_a_failing_warmup_record_fails_the_load_and_the_old_version_keeps_serving(pushed, tmp_path):
    _, episodes, version_dir = pushed
    base = tmp_path / "models" / "cmml"
    install_version(version_dir, base, version=1)
    broken = Path(shutil.copytree(version_dir, tmp_path / "broken"))
    bad = predict_request({"not_an_input": np.zeros((1, 2), np.float32)}, "serving_default")
    with tf.io.TFRecordWriter(str(warmup_path(broken))) as writer:  # bypasses the writer's own check on purpose
        writer.write(
            prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=bad)).SerializeToString()
        )
    manager = ModelManager("cmml", base, poll_seconds=0)
    manager.start()
    install_version(broken, base, version=2)
    manager.refresh()
    states = {s.version: s for s in manager.statuses("cmml")}
    assert states[1].state == ModelVersionStatus.AVAILABLE
    assert states[2].state == ModelVersionStatus.END and "Sent extra: {not_an_input}" in states[2].error_message
    assert manager.current.version == 1
    outputs = manager.resolve("cmml").predict("encode_context", serving_inputs(episodes, "encode_context"))
    assert outputs["context"].shape[0] == 2


def test_version_policy_serves_the_newest_numeric_version(pushed, tmp_path):
    _, episodes, version_dir = pushed
    base = tmp_path / "models" / "cmml"
    install_version(version_dir, base, version=3)
    install_version(version_dir, base, version=10)
    (base / "20").mkdir()  # no saved_model.pb: not a version (a copy in progress, say)
    shutil.copytree(version_dir, base / "latest")  # not numeric: ignored
    assert sorted(list_versions(base)) == [3, 10]
    manager = ModelManager("cmml", base, poll_seconds=0, replay_warmup=False)
    manager.start()
    assert manager.current.version == 10
    shutil.rmtree(base / "10")  # rolling back = removing the bad version
    manager.refresh()
    assert manager.current.version == 3
    assert {s.version: s.state for s in manager.statuses("cmml")} == {
        10: ModelVersionStatus.END,
        3: ModelVersionStatus.AVAILABLE,
    }
    with pytest.raises(ServingError) as err:
        manager.resolve("cmml", version=10)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


class _Generic(tf.Module):
    """Not a CMML model: floats and strings in, a float and a binary string out."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"), tf.TensorSpec([None], tf.string, name="names")]
    )
    def run(self, x, names):
        return {"y": tf.reduce_sum(x, axis=1) * 2.0, "tag_bytes": tf.strings.join([names, "\xff"])}


def test_the_double_serves_any_saved_model(tmp_path):
    module = _Generic()
    tf.saved_model.save(
        module, str(tmp_path / "export"), signatures={"serving_default": module.run.get_concrete_function()}
    )
    install_version(tmp_path / "export", tmp_path / "models" / "generic")
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    names = np.array([b"a", "é".encode()], dtype=object)
    with (
        ServingDouble(tmp_path / "models" / "generic", "generic", poll_seconds=0) as double,
        GrpcClient(f"127.0.0.1:{double.grpc_port}", "generic") as g,
        RestClient(f"http://127.0.0.1:{double.rest_port}", "generic") as r,
    ):
        for client in (g, r):
            out = client.predict({"x": x, "names": names}).outputs
            np.testing.assert_allclose(out["y"], [12.0, 30.0])
            assert out["tag_bytes"].tolist() == [b"a\xc3\xbf", "é".encode() + b"\xc3\xbf"]
            raw = r.request("POST", "/v1/models/generic:predict", b'{"instances": [{"x": [1, 1, 1], "names": "z"}]}')
            assert raw == {
                "predictions": [{"tag_bytes": {"b64": "esO/"}, "y": 6.0}]
            }  # *_bytes outputs come base64-encoded
            with pytest.raises(ServingError, match="expects dimension 1 to be 3"):
                g.predict({"x": x[:, :2], "names": names})


# --- the real binary ----------------------------------------------------------------------------------------
def test_round_trip_against_the_real_tensorflow_model_server(pushed, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip(
            "tensorflow_model_server is not on PATH (install it or run the tensorflow/serving image to run this test)"
        )
    model, episodes, version_dir = pushed
    base = tmp_path / "models" / "cmml"
    install_version(version_dir, base, version=1)
    port, rest_port = free_port(), free_port()
    log = (tmp_path / "tfserving.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--port={port}", f"--rest_api_port={rest_port}", "--model_name=cmml", f"--model_base_path={base}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with GrpcClient(f"127.0.0.1:{port}", "cmml") as g, RestClient(f"http://127.0.0.1:{rest_port}", "cmml") as r:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, (tmp_path / "tfserving.log").read_text()[-3000:]
                try:
                    if any(s.state == "AVAILABLE" for s in g.status()):
                        break
                except ServingError:
                    pass
                assert time.monotonic() < deadline, "tensorflow_model_server did not load the model in 120 s"
                time.sleep(0.5)
            features = {k: tf.constant(v) for k, v in episodes.items()}
            want = model(features).numpy()
            context = model.encode_context(features).numpy()
            for client in (g, r):
                np.testing.assert_allclose(
                    client.predict(serving_inputs(episodes, "serving_default")).outputs["scores"], want, atol=1e-5
                )
                enc = client.predict(serving_inputs(episodes, "encode_context"), "encode_context").outputs
                np.testing.assert_allclose(enc["context"], context, atol=1e-5)
                np.testing.assert_allclose(
                    client.predict(serving_inputs(episodes, "score", context=context), "score").outputs["scores"],
                    want,
                    atol=1e-5,
                )
                upd = client.predict(
                    serving_inputs(episodes, "update_context", state=model.initial_state(2).numpy()), "update_context"
                ).outputs
                np.testing.assert_allclose(upd["context"], context, atol=1e-5)
                assert set(SIGNATURES) <= set(client.metadata()[1])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
