"""The TFX pipeline end to end on small synthetic data: components, blessing, push, caching, Kubeflow."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import cmml  # noqa: F401

pytestmark = pytest.mark.slow

COMPONENTS = {
    "LogExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "EntityStatisticsGen",
    "EntityImportSchemaGen",
    "EntityExampleValidator",
    "ValidationGate",
    "Transform",
    "TaskGen",
    "Trainer",
    "BaselineTrainer",
    "TaskEvaluator",
    "ServingValidator",
    "Pusher",
}


def _config(data: Path | list[str], **sections):
    from cmml.pipeline.config import load_config

    small = {
        "name": "cmml-test",
        "data": data if isinstance(data, list) else str(data),
        "taskgen": {"num_shards": 2},
        "model": {"encoder": "mean", "embedding_dim": 8, "learning_rate": 3e-3},
        "training": {"epochs": 3, "patience": 2},
        "baseline": {"config": {"embedding_dim": 8}, "training": {"epochs": 2, "patience": 1}},
        "beam": {"direct_running_mode": "in_memory", "direct_num_workers": 1},
    }
    for key, value in sections.items():
        small[key] = {**small.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(overrides=small)


def _executions(output: Path, pipeline: str) -> list[dict]:
    """(component, state) of every execution of the newest run."""
    from cmml.pipeline.runs import newest_run, open_store, run_executions

    store = open_store(str(output))
    newest = newest_run(store, pipeline)
    return [{"component": c, "state": state} for c, state in run_executions(store, newest)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_400):
    from cmml.pipeline.runner import run_local

    output = tmp_path_factory.mktemp("pipeline") / "out"
    config = _config(synthetic_400)
    summary = run_local(config, str(output), progress=None)
    return config, output, summary


def test_every_component_ran_and_is_recorded(run):
    config, output, summary = run
    executions = _executions(output, config.name)
    assert {e["component"] for e in executions} == COMPONENTS
    assert all(e["state"] == "COMPLETE" for e in executions), executions
    assert summary.ingest["rows_ok"] > 0 and summary.ingest["rows_rejected"] == 0
    assert summary.serving_check["blessed"] and summary.serving_check["checks"], summary.serving_check
    assert (
        summary.tasks["tasks_meta_train"] > 0
        and summary.tasks["tasks_meta_test"] > 0
        and summary.tasks["tasks_meta_valid"] > 0
    )


def test_evaluation_has_all_metrics_and_blessing_follows_them(run):
    _, _, summary = run
    ev = summary.evaluation
    for model in ("candidate", "baseline"):
        assert {"mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5", "tasks"} <= set(ev["metrics"][model])
        assert ev["metrics"][model]["tasks"] == summary.tasks["tasks_meta_test"]
    expected = ev["metrics"]["candidate"]["mae"] < ev["metrics"]["baseline"]["mae"]
    assert ev["blessed"] == expected
    # on the planted structure of the synthetic data even a short training beats DCN
    assert ev["blessed"], ev


def test_pushed_model_serves_in_a_fresh_process_like_the_trainer_model(run, tmp_path):
    import tensorflow as tf

    from cmml.components.serving_validator.canned import canned_episodes
    from cmml.components.serving_validator.checks import npz_safe
    from cmml.pipeline.config import serving_base
    from cmml.serving.signatures import signature_def_map, signatures_from_map
    from cmml.serving.warmup import signature_inputs

    config, output, summary = run
    base = Path(serving_base(config, str(output)))
    versions = [p for p in base.iterdir() if p.name.isdigit()]
    assert len(versions) == 1 and summary.pushed == str(versions[0])
    pushed = versions[0]
    assert (pushed / "saved_model.pb").is_file() and (pushed / "assets.extra" / "tf_serving_warmup_requests").is_file()
    from cmml.serving.warmup import read_warmup_requests

    warmed = [r.predict_log.request.model_spec.signature_name for r in read_warmup_requests(pushed)]
    callable_signatures = set(signatures_from_map(signature_def_map(str(pushed))))
    assert set(warmed) == callable_signatures and len(warmed) == 4 * len(callable_signatures)  # 4 tasks each

    trainer_model = sorted((output / "pipeline" / "Trainer" / "model").glob("*/Format-Serving"))[-1]
    serve = tf.saved_model.load(str(trainer_model)).signatures["serving_default"]
    examples = sorted((output / "pipeline" / "LogExampleGen" / "examples").glob("*"))[-1]
    entities = sorted((output / "pipeline" / "LogExampleGen" / "entities").glob("*"))[-1]
    signatures = signatures_from_map(signature_def_map(trainer_model))
    inputs = canned_episodes(str(examples), str(entities), signatures["serve_raw"].inputs)
    feed = signature_inputs(signatures["serving_default"], inputs)  # items by id, new users' raw attributes
    assert {"support_item_id", "query_item_id", "user_id"} <= set(feed) and not any("mask" in k for k in feed)
    spec = serve.structured_input_signature[1]
    want = serve(**{k: tf.constant(v, spec[k].dtype) for k, v in feed.items()})["scores"].numpy()

    np.savez(tmp_path / "inputs.npz", **npz_safe(feed))
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cmml"] = None
        import numpy as np, tensorflow as tf
        fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        spec = fn.structured_input_signature[1]
        data = dict(np.load(sys.argv[2]))
        np.save(sys.argv[3], fn(**{k: tf.constant(v, spec[k].dtype) for k, v in data.items()})["scores"].numpy())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(pushed), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-5)
    assert want.shape == inputs["query_mask"].shape and np.isfinite(want).all()


def test_items_named_by_id_score_as_their_raw_attributes(run):
    """serving_default takes items by id (the catalog inside the model) and scores them as serve_raw
    scores every row's raw attributes."""
    import tensorflow as tf

    from cmml.components.serving_validator.canned import canned_episodes
    from cmml.models.export import user_input_name
    from cmml.serving.signatures import signature_def_map, signatures_from_map

    config, output, summary = run
    pushed = summary.pushed
    fns = tf.saved_model.load(pushed).signatures
    examples = sorted((output / "pipeline" / "LogExampleGen" / "examples").glob("*"))[-1]
    entities = sorted((output / "pipeline" / "LogExampleGen" / "entities").glob("*"))[-1]
    raw = canned_episodes(
        str(examples), str(entities), signatures_from_map(signature_def_map(pushed))["serve_raw"].inputs
    )
    first = tf.io.parse_example(raw["support_examples"][:, 0], {"user_id": tf.io.FixedLenFeature([], tf.string)})
    raw = {k: v for k, v in raw.items() if not k.endswith("_examples")}

    def call(name, inputs):
        spec = fns[name].structured_input_signature[1]
        return fns[name](**{k: tf.constant(v, spec[k].dtype) for k, v in inputs.items()})["scores"].numpy()

    ids = {k: raw[k] for k in ("support_item_id", "support_label", "query_item_id")}
    ids["user_id"] = np.full(len(raw["support_label"]), b"", object)  # new users: their raw attributes
    for name in fns["serving_default"].structured_input_signature[1]:
        if name not in ids:  # a user attribute: the task's, from its first support row
            field = name[len("user_") :]
            assert user_input_name(field) == name
            ids[name] = raw[f"support_{field}"][:, 0]
    assert {"user_id", "user_gender", "user_age", "user_occupation"} <= set(ids)
    assert set(ids) == set(fns["serving_default"].structured_input_signature[1])
    want, got = call("serve_raw", raw), call("serving_default", ids)
    mask = raw["query_mask"] > 0
    assert mask.sum() >= 10
    np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)
    # known users named by id alone: their attributes come from the user table inside the model
    known = {**ids, "user_id": first["user_id"].numpy()}
    known.update(
        {
            k: (np.full(v.shape, b"", object) if v.dtype.kind in "OS" else np.zeros_like(v))
            for k, v in ids.items()
            if k.startswith("user_") and k != "user_id"
        }
    )
    np.testing.assert_allclose(call("serving_default", known)[mask], want[mask], atol=1e-5)
    assert not np.allclose(call("serving_default", {**known, "user_id": ids["user_id"]})[mask], want[mask], atol=1e-5)
    # an item outside the catalog scores as a raw row with no attributes (its id's OOV bucket)
    ids["query_item_id"] = ids["query_item_id"].copy()
    ids["query_item_id"][0, 0] = b"no-such-item"
    raw["query_item_id"] = ids["query_item_id"]
    for feature in ("year", "rated", "genres", "directors", "actors"):
        if f"query_{feature}" in raw:
            raw[f"query_{feature}"] = raw[f"query_{feature}"].copy()
            raw[f"query_{feature}"][0, 0] = 0 if raw[f"query_{feature}"].dtype != object else b""
    np.testing.assert_allclose(call("serving_default", ids)[0, 0], call("serve_raw", raw)[0, 0], atol=1e-5)


def test_cmml_predict_recommends_from_the_pushed_model_over_grpc_and_rest(run, synthetic_400, capsys):
    """The pushed model's recommend signature through the serving double, as a user calls it: rated items in,
    the top of the catalog out (support items left out, titles from the dataset), the same over both APIs
    as the SavedModel itself."""
    import json

    import pyarrow.compute as pc
    import tensorflow as tf

    from cmml.data import open_dataset
    from cmml.serving import cli
    from cmml.serving.server import ServingDouble
    from cmml.serving.task_inputs import user_history

    config, output, summary = run
    pushed = Path(summary.pushed)
    log = open_dataset(str(synthetic_400)).read_interactions().table
    rated = log.filter(pc.equal(log.column("user_id"), log.column("user_id")[0]))
    items = [str(i) for i in rated.column("item_id").to_pylist()[:8]]
    ratings = [float(r) for r in rated.column("label").to_pylist()[:8]]
    recommend = tf.saved_model.load(str(pushed)).signatures["recommend"]
    spec = recommend.structured_input_signature[1]
    inputs = {n: tf.zeros([1], s.dtype) if s.dtype != tf.string else tf.constant([""]) for n, s in spec.items()}
    inputs.update(
        support_item_id=tf.constant([items]), support_label=tf.constant([ratings]), k=tf.constant([5], tf.int32)
    )
    want = [x.decode() for x in recommend(**inputs)["item_id"].numpy()[0]]
    assert len(want) == 5 and not set(want) & set(items)
    double = ServingDouble(pushed.parent, "cmml", poll_seconds=0).start()
    try:
        for where in (
            ["--server", f"127.0.0.1:{double.grpc_port}"],
            ["--rest_url", f"http://127.0.0.1:{double.rest_port}"],
        ):
            argv = ["predict", *where, "--model_name", "cmml", "--items", ",".join(items), "--ratings"]
            argv += [",".join(str(r) for r in ratings), "--top", "5", "--data", str(synthetic_400), "--format", "json"]
            assert cli.main(argv) == 0
            got = json.loads(capsys.readouterr().out)
            assert [r["item"] for r in got["items"]] == want
            assert all(r["title"] for r in got["items"])
            scores = [r["score"] for r in got["items"]]
            assert scores == sorted(scores, reverse=True)
        # a known user's history and candidates from the dataset: serving_default by id
        user = str(log.column("user_id")[0])
        argv = ["predict", "--server", f"127.0.0.1:{double.grpc_port}", "--model_name", "cmml", "--data"]
        assert (
            cli.main([*argv, str(synthetic_400), "--user", user, "--candidates", ",".join(want), "--format", "json"])
            == 0
        )
        ranked = json.loads(capsys.readouterr().out)["tasks"][0]
        history, labels = user_history(open_dataset(str(synthetic_400)), user, exclude=want, max_support=64)
        serve = tf.saved_model.load(str(pushed)).signatures["serving_default"]
        by_id = {
            n: tf.constant([""]) if s.dtype == tf.string else tf.zeros([1], s.dtype)
            for n, s in serve.structured_input_signature[1].items()
        }
        by_id.update(
            support_item_id=tf.constant([history]),
            support_label=tf.constant([labels], tf.float32),
            query_item_id=tf.constant([want]),
            user_id=tf.constant([user]),  # a known user: the table's attributes
        )
        scores = serve(**by_id)["scores"].numpy()[0]
        assert [r["item"] for r in ranked] == [want[k] for k in np.argsort(-scores, kind="stable")]
        np.testing.assert_allclose([r["score"] for r in ranked], np.sort(scores)[::-1], atol=1e-5)
        argv = ["predict", "--server", f"127.0.0.1:{double.grpc_port}", "--model_name", "cmml", "--items", "1,2"]
        assert cli.main([*argv, "--ratings", "5"]) == 2
        assert "--items names 2 item(s) but --ratings gives 1" in capsys.readouterr().err
    finally:
        double.stop()


def test_clients_written_from_tf_serving_docs_call_the_pushed_model(run):
    """A gRPC client as TF Serving's example clients write it (PredictionServiceStub, tf.make_tensor_proto,
    outputs[...].float_val) and REST bodies as api_rest.md writes them, unchanged against the double, for
    serving_default and recommend on the pushed model: items by id, the same scores as the SavedModel."""
    import urllib.request

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from cmml.serving.server import ServingDouble

    _, _, summary = run
    pushed = Path(summary.pushed)
    model = tf.saved_model.load(str(pushed))
    support = [k.decode() for k in model.catalog.keys.numpy()[:5]]
    candidates = [k.decode() for k in model.catalog.keys.numpy()[5:9]]
    inputs = model.signatures["serving_default"].structured_input_signature[1]
    dtypes = {k: v.dtype for k, v in inputs.items()}
    given = {"user_id": "", "user_gender": "F", "user_age": 25, "user_occupation": 4}  # a new user's attributes
    user = {k: [given[k] if dtypes[k] != tf.string else str(given[k])] for k in inputs if k.startswith("user_")}
    assert set(user) == {"user_id", "user_gender", "user_age", "user_occupation"}
    default = {
        "support_item_id": [support],
        "support_label": [[5.0, 1.0, 4.0, 2.0, 5.0]],
        "query_item_id": [candidates],
    }
    default.update(user)
    top = {**{k: v for k, v in default.items() if k != "query_item_id"}, "k": [3]}

    def local(name, values):
        spec = model.signatures[name].structured_input_signature[1]
        return model.signatures[name](**{k: tf.constant(v, spec[k].dtype) for k, v in values.items()})

    want_scores = local("serving_default", default)["scores"].numpy()[0]
    want_top = local("recommend", top)
    double = ServingDouble(pushed.parent, "cmml", poll_seconds=0).start()
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{double.grpc_port}"))
        for name, values in (("serving_default", default), ("recommend", top)):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "cmml"
            request.model_spec.signature_name = name
            for key, value in values.items():  # in the dtype the metadata declares (make_tensor_proto's: int32)
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtypes.get(key, tf.int32)))
            result = stub.Predict(request, 30.0)
            if name == "serving_default":
                np.testing.assert_allclose(result.outputs["scores"].float_val, want_scores, atol=1e-5)
            else:
                assert list(result.outputs["item_id"].string_val) == list(want_top["item_id"].numpy()[0])
                np.testing.assert_allclose(result.outputs["scores"].float_val, want_top["scores"].numpy()[0], atol=1e-5)

        def post(body):
            request = urllib.request.Request(
                f"http://127.0.0.1:{double.rest_port}/v1/models/cmml:predict", data=json.dumps(body).encode()
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())

        np.testing.assert_allclose(post({"inputs": default})["outputs"][0], want_scores, atol=1e-5)
        rows = post({"signature_name": "serving_default", "instances": [{k: v[0] for k, v in default.items()}]})
        np.testing.assert_allclose(rows["predictions"][0], want_scores, atol=1e-5)
        out = post({"signature_name": "recommend", "inputs": top})["outputs"]
        assert out["item_id"][0] == [x.decode() for x in want_top["item_id"].numpy()[0]]
        np.testing.assert_allclose(out["scores"][0], want_top["scores"].numpy()[0], atol=1e-5)
    finally:
        double.stop()


def test_rerun_reuses_cached_artifacts(run):
    from cmml.pipeline.runner import run_local

    config, output, _ = run
    run_local(config, str(output), progress=None)
    states = {e["component"]: e["state"] for e in _executions(output, config.name)}
    assert set(states) == COMPONENTS
    assert all(state == "CACHED" for state in states.values()), states


def test_unblessed_candidate_is_not_pushed(run):
    """An impossible absolute threshold: the Evaluator must refuse, and the Pusher push nothing."""
    from cmml.pipeline.config import serving_base
    from cmml.pipeline.runner import run_local

    config, output, _ = run
    strict = _config(
        Path(config.data[0]),
        evaluation={"thresholds": {"mae": 0.0}},
        serving={"base_directory": str(output / "strict-serving")},
    )
    progress = io.StringIO()
    summary = run_local(strict, str(output), progress=progress)
    lines = progress.getvalue().splitlines()
    for component in COMPONENTS:  # one result line per component, whatever TensorFlow does to absl logging
        assert any(
            line.strip().startswith(f"{component}: ") and ("done in" in line or "reused cached" in line)
            for line in lines
        ), lines
    assert summary.evaluation["blessed"] is False
    assert any("FAILED" in r for r in summary.evaluation["reasons"])
    assert summary.pushed is None
    assert not any(Path(serving_base(strict, str(output))).glob("*/saved_model.pb"))
    states = {e["component"]: e["state"] for e in _executions(output, strict.name)}
    assert states["Trainer"] == "CACHED" and states["TaskEvaluator"] == "COMPLETE"


def test_a_two_domain_run_whose_catalogs_differ_in_attributes_is_pushed(synthetic_400, tmp_path):
    """Multi-domain: one catalog has actors, directors and MPAA ratings, the other none of them (as
    ML-1M-partial next to ML-100K); the exported model must serve rows of both, through Pusher."""
    from cmml.data import synthetic
    from cmml.pipeline.runner import run_local

    plain = tmp_path / "plain"
    synthetic.generate(plain, synthetic.SyntheticConfig(users=150, seed=5), progress=None)
    (plain / "movies_extrainfos.dat").unlink()
    config = _config(
        [str(plain), str(synthetic_400)],  # the serving check's canned requests come from the first domain
        name="cmml-two-domains",
        setting="multi-domain",
        training={"epochs": 1, "patience": 1, "episodes_per_task": 1},
        baseline={"training": {"epochs": 1, "patience": 1, "episodes_per_task": 1}},
        evaluation={"min_improvement": -1.0},  # blessing is not the question here: serving both domains is
        serving={"base_directory": str(tmp_path / "serving")},
    )
    summary = run_local(config, str(tmp_path / "out"), progress=None)
    assert summary.evaluation["blessed"], summary.evaluation
    assert summary.serving_check["blessed"], summary.serving_check.get("error")
    assert "serve_tf_examples equals serving_default on the same rows" in summary.serving_check["checks"]
    checks = summary.serving_check["checks"]
    assert "serving_default: a known user by id alone equals the user's raw attributes" in checks  # both catalogs
    assert summary.pushed and Path(summary.pushed, "saved_model.pb").is_file()


def test_kubeflow_v2_spec_compiles_and_parses(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from cmml.pipeline.config import load_config
    from cmml.pipeline.runner import compile_kubeflow

    path = compile_kubeflow(
        load_config(), "gs://bucket/cmml", str(tmp_path / "cmml.json"), image="gcr.io/project/cmml:1"
    )
    job = json_format.Parse(Path(path).read_text(), pipeline_spec_pb2.PipelineJob(), ignore_unknown_fields=True)
    tasks = set(job.pipeline_spec["root"]["dag"]["tasks"].keys())
    assert {"LogExampleGen", "TaskGen", "Trainer", "BaselineTrainer", "TaskEvaluator", "Pusher"} <= tasks
    assert "gcr.io/project/cmml:1" in json.dumps(json_format.MessageToDict(job))


def test_cli_runs_lists_the_runs(run):
    _, output, _ = run
    proc = subprocess.run(
        [sys.executable, "-m", "cmml.cli", "runs", "--output", str(output)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cmml-test") >= 2  # the first run and the cached re-run (at least)


def test_summarize_run_names_a_missing_run_or_pipeline(run):
    from cmml.pipeline.runs import summarize_run

    config, output, summary = run
    assert summarize_run(str(output), config.name, run_id=summary.run_id).run_id == summary.run_id
    with pytest.raises(RuntimeError, match="no run 'nope' of pipeline 'cmml-test'"):
        summarize_run(str(output), config.name, run_id="nope")
    with pytest.raises(RuntimeError, match="no run of pipeline 'other'"):
        summarize_run(str(output), "other")


def _model_weights(checkpoint: str) -> dict:
    """A checkpoint's model variables by their path in the object graph (optimizer slots left out)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint)
    names = [k for k in reader.get_variable_to_shape_map() if k.startswith("model/") and "optimizer" not in k]
    return {k: reader.get_tensor(k) for k in names}


def test_the_trainer_and_the_experiment_runner_train_the_same_model(run, monkeypatch, tmp_path):
    """Same records, configuration and seed: the experiment runner's training gives the Trainer's weights,
    validation curve and meta-test metrics (both go through cmml.models.training.train)."""
    import tensorflow as tf

    from cmml.experiments import run as experiment_run
    from cmml.experiments.data import Data, taskgen_output
    from cmml.experiments.suites import ModelSpec
    from cmml.models.export import IDS_DIR, SUMMARY_FILE
    from cmml.models.training import EPISODE_FIELDS

    config, output, summary = run
    trained, train = [], experiment_run.train
    monkeypatch.setattr(experiment_run, "train", lambda *a, **k: trained.append(train(*a, **k)) or trained[-1])
    episode_sizes = {k: v for k, v in config.training.items() if k in EPISODE_FIELDS}
    fit = {k: v for k, v in config.training.items() if k not in EPISODE_FIELDS and k != "seed"}
    data = Data(taskgen_output(str(output), config.name), "user", episode_sizes, config.evaluation["rating_range"])
    [result] = experiment_run.run_model(
        ModelSpec("CMML", "cmml", dict(config.model), fit), data, config.training["seed"]
    )

    model_dir = sorted((output / "pipeline" / "Trainer" / "model").glob("*"))[-1]
    trainer_summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    assert [h["valid"] for h in trained[0].summary["history"]] == [h["valid"] for h in trainer_summary["history"]]
    assert result["best_validation"] == trainer_summary["best_validation"]
    # the model's weights by their path in the object graph: the ids export against a checkpoint of the runner's model
    exported = _model_weights(str(model_dir / IDS_DIR / "variables" / "variables"))
    weights = _model_weights(tf.train.Checkpoint(model=trained[0].model).write(str(tmp_path / "runner")))
    assert sorted(exported) == sorted(weights) and len(weights) > 10
    for name, value in weights.items():
        np.testing.assert_array_equal(value, exported[name], err_msg=name)
    for metric, value in summary.evaluation["metrics"]["candidate"].items():
        assert result["metrics"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric


def test_catalog_refresh_adds_an_item_that_recommend_ranks_with_no_failed_request(run, synthetic_400, tmp_path, capsys):
    """`cmml refresh-catalog`: an item added to the item file enters the served model's item table (its
    attributes through the run's transform graph) as a new version, which the serving double swaps in
    under load without a failed request; the new item is then ranked as its raw attributes score."""
    import shutil
    import threading

    import tensorflow as tf
    import yaml

    from cmml import cli as cmml_cli
    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.testing import DoubleProcess

    config, output, summary = run
    serving = tmp_path / "serving"
    shutil.copytree(Path(summary.pushed).parent.parent, serving)  # the run's base directory, left untouched
    before = int(Path(summary.pushed).name)
    data = tmp_path / "data"
    shutil.copytree(synthetic_400, data)
    with open(data / "movies.dat", "a", encoding="utf-8") as f:
        f.write("99999::Refreshed Movie (2001)::Comedy|Drama\n")
    with open(data / "movies_extrainfos.dat", "a", encoding="utf-8") as f:
        f.write(
            "99999::Refreshed Movie::2001::PG::01 Jan 2001::Comedy, Drama::Director 01-01::Synthetic Writer"
            "::Actor 01-01, Actor 01-02::N/A::N/A\n"
        )
    settings = config.to_dict()
    settings.update(data=[str(data)], serving={**settings["serving"], "base_directory": str(serving)})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")

    pushed = tf.saved_model.load(summary.pushed)
    support = pushed.catalog.keys.numpy()[:6]
    inputs = {"support_item_id": np.array([support], object), "support_label": np.array([[5, 4, 1, 2, 5, 3]], "f4")}
    for name, spec in pushed.signatures["recommend"].structured_input_signature[1].items():
        if name not in inputs and name != "k":  # a new user, attributes unknown
            inputs[name] = (
                np.array([b""], object) if spec.dtype == tf.string else np.zeros([1], spec.dtype.as_numpy_dtype)
            )
    inputs["k"] = np.array([100_000], np.int32)  # the whole catalog
    with (
        DoubleProcess(serving / "cmml", "cmml", poll_seconds=0.5) as double,
        GrpcClient(double.grpc_target, "cmml") as client,
    ):
        failures, versions, stop = [], [], threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    versions.append(client.predict(inputs, "recommend").version)
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(exc))

        worker = threading.Thread(target=load)
        worker.start()
        try:
            argv = ["refresh-catalog", "--config", str(tmp_path / "config.yaml"), "--output", str(output)]
            assert cmml_cli.main(argv) == 0
            report = capsys.readouterr().out
            assert "1 added + 0 changed" in report and "+ 0 kept from the served table" in report, report
            after = max(int(p.name) for p in (serving / "cmml").iterdir() if p.name.isdigit())
            assert after > before
            double.wait_for_version(client, after)
            deadline = time.monotonic() + 60
            while versions.count(after) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            worker.join()
        assert not failures, failures[:3]
        assert versions.count(before) > 0 and versions.count(after) >= 5
        ranked = client.predict(inputs, "recommend")
    items = [i.decode() for i in ranked.outputs["item_id"][0]]
    assert len(items) == len(pushed.catalog.keys.numpy()) + 1  # k is cut to the catalog: every item
    assert "99999" in items[: -len(support)] and set(items[-len(support) :]) == {s.decode() for s in support}
    # the new item has its attributes in the refreshed table, and they change its score
    refreshed = tf.saved_model.load(str(serving / "cmml" / str(after)))
    row = list(refreshed.catalog.keys.numpy()).index(b"99999")
    for feature in ("genres", "actors", "directors"):
        assert np.count_nonzero(refreshed.catalog.features[feature].numpy()[row]) == 2 - (feature == "directors")

    def score(model, signature="serving_default"):
        call = model.signatures[signature]
        given = {k: tf.constant(v) for k, v in inputs.items() if k != "k"}
        return call(**given, query_item_id=tf.constant([["99999"]]))["scores"].numpy()[0, 0]

    # recommend's score of the new item is what rank_items (the relevance head) gives it
    ranking = "rank_items" if "rank_items" in refreshed.signatures else "serving_default"
    ranked_score = float(np.asarray(ranked.outputs["scores"][0])[items.index("99999")])
    assert score(refreshed, ranking) == pytest.approx(ranked_score, abs=1e-5)
    assert abs(score(refreshed) - score(pushed)) > 1e-4  # the served model knew 99999 as an OOV id only
