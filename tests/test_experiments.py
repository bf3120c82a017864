"""The experiment runner (``cmml experiment``): a tiny suite end to end on synthetic data through the TFX
data path, the mean ± std aggregation from per-seed JSON, section-only rewriting of RESULTS.md, and the
suites of ``pipeline/configs/experiments/suites.yaml`` (the stored runs' fingerprints, the loader's errors)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import cmml  # noqa: F401
from cmml.experiments import results, sweep
from cmml.experiments.data import task_counts
from cmml.experiments.findings import aggregate, findings
from cmml.experiments.render import render_all, render_section
from cmml.experiments.run import Options, run_suite
from cmml.experiments.sections import BEGIN, END, FILE_HEADER, write_section
from cmml.experiments.suites import USER_COLUMNS, ExperimentError, ModelSpec, Suite, load_suites
from cmml.experiments.targets import read_targets

REPO = Path(__file__).resolve().parents[1]
TINY_TRAINING = {"epochs": 1, "patience": 1, "ema_decay": 0.0}


def _tiny_suite(data: Path) -> Suite:
    models = [
        ModelSpec("global mean", "global_mean"),
        ModelSpec("bias model", "bias", {"item_shrinkage": 2.0, "user_shrinkage": 5.0}),
        ModelSpec(
            "DCN",
            "dcn",
            {"embedding_dim": 8, "deep": [16], "cross_layers": 1, "features": ["gender", "item_id", "genres"]},
            TINY_TRAINING,
            finetuned="DCN-F",
            finetune_grid=(0.01, 0.1),
        ),
        ModelSpec(
            "CMML FiLM",
            "cmml",
            {
                "encoder": "mean",
                "hybrid": "mlp",
                "embedding_dim": 8,
                "hidden": [16],
                "hyper_hidden": [16],
                "learning_rate": 3e-3,
                "item_bias": True,
                "features": ["gender", "item_id", "genres", "no_such_feature"],
            },
            TINY_TRAINING,
        ),
    ]
    overrides = {
        "name": "experiments-test",
        "data": [str(data)],
        "setting": "user",
        "transform": {"features": {"writers": None}},
        "taskgen": {"split_mode": "hash", "test_fraction": 0.25, "valid_fraction": 0.15, "num_shards": 2},
        "beam": {"direct_running_mode": "in_memory", "direct_num_workers": 1},
    }
    return Suite(
        "tiny", "Tiny synthetic suite", "user", None, overrides, models, episodes={"batch_tasks": 32, "query_size": 10}
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_400):
    base = tmp_path_factory.mktemp("experiments")
    out = base / "RESULTS.md"
    out.write_text(
        "# Results\n\nHand-written preamble.\n\n"
        + BEGIN.format("users-v1")
        + "\nOLD USERS SECTION\n"
        + END.format("users-v1")
        + "\n\nTrailer.\n"
    )
    lines = []
    opts = Options(
        seeds=[0],
        cache_dir=str(base / "cache"),
        json_dir=str(base / "results"),
        out=str(out),
        targets=None,
        command="cmml experiment --suite tiny",
        log=lines.append,
    )
    record = run_suite(_tiny_suite(synthetic_400), opts)
    return record, out, base / "results" / "tiny.json", lines


def _section(text: str, suite: str) -> str:
    a, b = text.index(BEGIN.format(suite)), text.index(END.format(suite))
    return text[a:b]


def _table_rows(section: str, first: str = "model") -> tuple[list[str], dict[str, dict[str, str]]]:
    rows = {}
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


@pytest.mark.slow
def test_tiny_suite_table_has_every_row_and_finite_figures(tiny_run):
    record, out, json_path, lines = tiny_run
    text = out.read_text()
    header, rows = _table_rows(_section(text, "tiny"))
    assert header[:6] == ["model", "MAE", "RMSE", "NDCG@1", "NDCG@3", "NDCG@5"]
    assert list(rows) == ["global mean", "bias model", "DCN", "DCN-F", "CMML FiLM"]
    for name, row in rows.items():
        for metric in ("MAE", "RMSE", "NDCG@1", "NDCG@3", "NDCG@5"):
            value = float(row[metric].strip("*").split("±")[0])
            assert math.isfinite(value), (name, metric, row)
        assert row["seeds"] == ("deterministic" if name in ("global mean", "bias model") else "1")
    # the command, the configuration and the per-seed JSON are there; the missing feature was dropped
    assert "cmml experiment --suite tiny" in text and "```json" in text
    saved = json.loads(json_path.read_text())
    assert {r["model"] for r in saved["runs"]} == set(rows)
    cmml_run = next(r for r in saved["runs"] if r["model"] == "CMML FiLM")
    assert "no_such_feature" not in cmml_run["config"]["features"]
    assert all(0.0 <= r["metrics"]["ndcg@3"] <= 1.0 for r in saved["runs"])
    # one progress line per model / seed, with its metric
    assert any(re.search(r"seed 0 CMML FiLM: MAE \d", line) for line in lines)
    # the other sections of the file are untouched
    assert text.startswith("# Results\n\nHand-written preamble.\n")
    assert "OLD USERS SECTION" in text and "\n\nTrailer.\n" in text
    assert text.index("Trailer.") < text.index(
        BEGIN.format("tiny")
    )  # a suite without a place in SECTION_ORDER goes last


@pytest.mark.slow
def test_resume_reuses_results_and_rerender_is_identical(tiny_run, tmp_path):
    record, out, json_path, _ = tiny_run
    section = render_section(json.loads(json_path.read_text()))
    assert section in out.read_text()
    assert render_all(json_path.parent, out) == ["tiny"]
    assert BEGIN.format("budget") in out.read_text()
    assert section in out.read_text()


@pytest.mark.slow
def test_models_filter_retrains_only_those_rows(tiny_run):
    record, out, json_path, _ = tiny_run
    before = json.loads(json_path.read_text())
    data = Path(before["pipeline"]["overrides"]["data"][0])
    lines = []
    opts = Options(
        seeds=[0],
        cache_dir=str(json_path.parent.parent / "cache"),
        json_dir=str(json_path.parent),
        out=str(out),
        targets=None,
        models=["global"],
        command="cmml experiment --suite tiny --models global",
        log=lines.append,
    )
    run_suite(_tiny_suite(data if data.is_absolute() else Path.cwd() / data), opts)
    after = json.loads(json_path.read_text())
    assert [r["model"] for r in after["runs"]].count("global mean") == 1
    keep = lambda rec: {(r["model"], r["seed"]): r["metrics"] for r in rec["runs"] if r["model"] != "global mean"}  # noqa: E731
    assert keep(after) == keep(before)  # DCN, DCN-F, CMML, bias model: kept as they were, not retrained
    assert not any("seed 0" in line for line in lines)
    _, rows = _table_rows(_section(out.read_text(), "tiny"))
    assert list(rows) == ["global mean", "bias model", "DCN", "DCN-F", "CMML FiLM"]


@pytest.mark.slow
def test_validation_sweep_scores_variants_on_meta_valid_only(tiny_run, tmp_path):
    _, _, json_path, _ = tiny_run
    data = Path(json.loads(json_path.read_text())["pipeline"]["overrides"]["data"][0])
    suite = _tiny_suite(data if data.is_absolute() else Path.cwd() / data)
    plan = sweep.Sweep(
        "tiny",
        "CMML FiLM",
        (
            sweep.Variant("as listed"),
            sweep.Variant("wider", {"embedding_dim": 12}),
            sweep.Variant("longer lists", episodes={"query_size": 20}),
        ),
    )
    lines = []
    cache = str(json_path.parent.parent / "cache")
    record = sweep.run_sweep(plan, suite, [0, 1], cache, variants=["as listed", "wider"], log=lines.append)
    assert [(r["variant"], r["seed"]) for r in record["runs"]] == [
        ("as listed", 0),
        ("as listed", 1),
        ("wider", 0),
        ("wider", 1),
    ]
    valid_tasks = task_counts(record["records"])["meta_valid"]
    for run in record["runs"]:
        assert set(run) == {
            "variant",
            "seed",
            "best_epoch",
            "epochs_run",
            "valid",
            "seconds",
        }  # no meta_test figure anywhere
        assert (
            run["valid"]["tasks"] == valid_tasks
            and 0.0 < run["valid"]["mae"] < 4.0
            and 0.0 <= run["valid"]["ndcg@3"] <= 1.0
        )
    by = {(r["variant"], r["seed"]): r["valid"]["mae"] for r in record["runs"]}
    assert by[("as listed", 0)] != by[("wider", 0)]  # the variant's change reached the model
    assert sum("validation MAE" in line for line in lines) == 4
    # the section: one row per variant, mean ± std over the two seeds; re-rendered from the JSON by --render
    section = sweep.render_sweep(record)
    _, rows = _table_rows(section, first="variant")
    assert list(rows) == ["as listed", "wider"] and rows["wider"]["runs"] == "2"
    mae = [r["valid"]["mae"] for r in record["runs"] if r["variant"] == "wider"]
    assert rows["wider"]["MAE"] == f"{np.mean(mae):.4f} ± {np.std(mae, ddof=1):.4f}"
    results.write_json(tmp_path / "results" / "tiny-sweep.json", record)
    out = tmp_path / "RESULTS.md"
    out.write_text(
        BEGIN.format("users-v1")
        + "\nusers\n"
        + END.format("users-v1")
        + "\n\n"
        + BEGIN.format("scenario")
        + "\nscenario\n"
        + END.format("scenario")
        + "\n"
    )
    assert render_all(tmp_path / "results", out) == ["tiny-sweep"]
    assert section in out.read_text()
    # a wrong row or variant filter is a clear error, before any training
    with pytest.raises(ExperimentError, match="no row 'CMML Soft-M'"):
        sweep.run_sweep(dataclasses.replace(plan, row="CMML Soft-M"), suite, [0], cache)
    with pytest.raises(ExperimentError, match="no variant matches"):
        sweep.run_sweep(plan, suite, [0], cache, variants=["nothing like this"])


def _run(model: str, seed, **metrics) -> dict:
    return {"model": model, "seed": seed, "metrics": metrics, "train_seconds": 10.0, "epochs_run": 3, "best_epoch": 2}


def test_mean_and_std_over_two_seeds_from_the_json(tmp_path):
    runs = [
        _run("bias model", None, mae=0.8, rmse=1.0, **{"ndcg@1": 0.7, "ndcg@3": 0.75, "ndcg@5": 0.8}),
        _run("CMML FiLM", 0, mae=0.77, rmse=0.95, **{"ndcg@1": 0.74, "ndcg@3": 0.76, "ndcg@5": 0.80}),
        _run("CMML FiLM", 1, mae=0.79, rmse=0.97, **{"ndcg@1": 0.72, "ndcg@3": 0.78, "ndcg@5": 0.81}),
    ]
    record = {
        "suite": "users-v1",
        "title": "t",
        "setting": "user",
        "command": "c",
        "seeds": [0, 1],
        "runs": runs,
        "rows": ["bias model", "CMML FiLM"],
        "models": [],
    }
    path = tmp_path / "users-v1.json"
    path.write_text(json.dumps(record))
    summary = aggregate(json.loads(path.read_text())["runs"], USER_COLUMNS)
    mae = summary["CMML FiLM"]["mae"]
    assert mae["mean"] == pytest.approx(0.78) and mae["std"] == pytest.approx(np.std([0.77, 0.79], ddof=1))
    assert summary["CMML FiLM"]["n"] == 2 and not summary["CMML FiLM"]["deterministic"]
    assert summary["bias model"]["deterministic"] and summary["bias model"]["mae"]["std"] == 0.0
    _, rows = _table_rows(render_section(record))
    assert rows["CMML FiLM"]["MAE"] == "**0.7800 ± 0.0141**"  # best MAE in bold
    assert rows["CMML FiLM"]["seeds"] == "2" and rows["bias model"]["MAE"] == "0.8000"
    facts = findings(record)
    assert any("CMML beats the bias model floor" in f and "reproduces" in f for f in facts)


def test_rewriting_a_section_leaves_the_rest_of_the_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    write_section(out, "scenario", BEGIN.format("scenario") + "\nscenario v1\n" + END.format("scenario") + "\n")
    write_section(out, "users-v1", BEGIN.format("users-v1") + "\nusers v1\n" + END.format("users-v1") + "\n")
    text = out.read_text()
    assert text.startswith(FILE_HEADER)
    assert text.index("users v1") < text.index("scenario v1")  # inserted in section order
    out.write_text(text.replace("scenario v1", "scenario v1\n\nnotes kept by hand"))
    write_section(out, "users-v1", BEGIN.format("users-v1") + "\nusers v2\n" + END.format("users-v1") + "\n")
    after = out.read_text()
    assert "users v2" in after and "users v1" not in after
    assert "scenario v1\n\nnotes kept by hand" in after
    assert after.replace("users v2", "users v1") == text.replace("scenario v1", "scenario v1\n\nnotes kept by hand")


def test_targets_are_read_from_the_file(tmp_path):
    path = tmp_path / "TARGETS.md"
    path.write_text(
        "3. ... Check value: user 3333 (a meta-test user) has 80 ratings; query movies\n"
        "[1779, 2605], query ratings [4, 3].\n"
        "1. keep users: 3,420 users, 141,701 ratings.\n\n"
        "| method | MAE | NDCG@1 | NDCG@3 | NDCG@5 |\n|---|---|---|---|---|\n"
        "| CMML FiLM | 0.790 | 0.756 | 0.759 | 0.800 |\n\n"
        "| predictor | MAE | NDCG@3 |\n|---|---|---|\n| bias model | **0.775** | 0.758 |\n\n"
        "- Quality: CMML MAE ≤ 0.765 and NDCG@3 ≥ 0.770 — clearly better\n"
    )
    t = read_targets(path)
    assert t["targets"] == {"mae": 0.765, "ndcg@3": 0.770}
    assert t["check"] == {"user": "3333", "ratings": 80, "query_movies": ["1779", "2605"], "query_ratings": [4.0, 3.0]}
    assert t["kept"] == {"users": 3420, "ratings": 141701}
    assert t["official"][0]["MAE"] == "0.790" and t["simple"][0]["predictor"] == "bias model"
    assert read_targets(tmp_path / "missing.md") == {}


def test_suite_definitions_follow_the_protocols():
    defs = load_suites()
    assert list(defs) == ["users-v1", "ablations", "scenario", "multi-domain", "ml-100k-users"]
    users = defs["users-v1"]
    config = users.pipeline_config()
    assert config.taskgen["split_mode"] == "permutation" and config.taskgen["permutation_seed"] == 20211101
    assert config.taskgen["n_train"] == 2736 and config.taskgen["valid_fraction"] > 0
    rows = [r for m in users.models for r in m.rows()]
    assert rows == [
        "global mean",
        "item mean",
        "bias model",
        "DCN",
        "DCN-F",
        "MeLU (5 steps)",
        "MetaCS-DNN (5 steps)",
        "CMML FiLM",
        "CMML Soft-M",
        "CMML FiLM, users-v1.yaml training",
        "CMML FiLM + listwise loss, users-v1.yaml training",
    ]
    listwise = users.models[-1]
    assert listwise.config["listwise_weight"] == 1.0 and sorted(c["listwise_weight"] for c in listwise.candidates) == [
        0.5,
        3.0,
    ]
    ml100k = defs["ml-100k-users"].pipeline_config()
    assert ml100k.taskgen["n_train"] is None and ml100k.taskgen["permutation_seed"] != 20211101
    assert defs["ablations"].cache == "users-v1" and defs["ablations"].extra.cache == "scenario"
    assert [m.name for m in defs["scenario"].models][:3] == ["ItemPop", "DCN", "MAML (MeLU-style, 5 steps)"]
    assert defs["multi-domain"].pipeline_config().setting == "multi-domain"
    for suite in defs.values():  # every model config is valid for its head
        for spec in suite.models + (suite.extra.models if suite.extra else []):
            if spec.kind == "cmml":
                from cmml.models.config import CMMLConfig

                CMMLConfig.from_dict({**spec.config, "head": "rating" if suite.setting == "user" else "ctr"})


@pytest.mark.parametrize("name", ["users-v1", "scenario", "ablations", "multi-domain", "ml-100k-users"])
def test_suite_file_gives_the_models_of_the_stored_runs(name):
    """Every row of suites.yaml has the fingerprint of the runs stored in docs/results (same model, training,
    candidates ...), so --resume and the stored figures still belong to the suite definitions."""
    suite = load_suites()[name]
    record = json.loads((REPO / "docs" / "results" / f"{name}.json").read_text())
    tables = [(suite, record)] + ([(suite.extra, record["extra"])] if suite.extra else [])
    for table, rec in tables:
        stored: dict[str, set] = {}
        for run in rec["runs"]:
            stored.setdefault(run["model"], set()).add(run["fingerprint"])
        assert [r for m in table.models for r in m.rows()] == rec["rows"]
        for spec in table.models:
            for row in spec.rows():
                assert stored[row] == {spec.fingerprint()}, (name, row)


def _suite_file(tmp_path: Path, model: str, top: str = "") -> Path:
    path = tmp_path / "suites.yaml"
    path.write_text(
        f"{top}suites:\n  s:\n    title: t\n    setting: user\n    overrides: {{data: [ml-100k]}}\n    models:\n"
        "      - {name: global mean, kind: global_mean}\n"
        f"      - {model}\n"
    )
    return path


def test_suite_file_errors_name_the_file_and_the_key(tmp_path):
    ok = load_suites("/data", _suite_file(tmp_path, "{name: CMML, kind: cmml, config: {from: 'default.yaml#model'}}"))
    assert ok["s"].overrides["data"] == [str(Path("/data") / "ml-100k")]
    assert ok["s"].models[1].config["encoder"] == "mean"  # the pipeline default's model section
    path = _suite_file(tmp_path, "{name: CMML, kind: cmml, trainig: {epochs: 2}}")
    with pytest.raises(ExperimentError, match=r"suites\.yaml: suites\.s\.models\[1\]: unknown key\(s\) trainig"):
        load_suites("/data", path)
    with pytest.raises(ExperimentError, match=r"suites\.s\.models\[1\]\.kind: unknown model kind 'cmmml'"):
        load_suites("/data", _suite_file(tmp_path, "{name: CMML, kind: cmmml}"))
    with pytest.raises(ExperimentError, match=r"suites\.s\.models\[1\]\.config: default\.yaml has no section 'modle'"):
        load_suites("/data", _suite_file(tmp_path, "{name: CMML, kind: cmml, config: {from: 'default.yaml#modle'}}"))
    with pytest.raises(ExperimentError, match=r"suites\.yaml: unknown key\(s\) constant;"):
        load_suites("/data", _suite_file(tmp_path, "{name: CMML, kind: cmml}", top="constant: {}\n"))
