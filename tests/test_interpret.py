"""Interpretability helpers (cmml.experiments.interpret) on TaskGen records of tiny synthetic data, untrained models."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import cmml  # noqa: F401
from cmml.experiments.interpret.config import load_study_config
from cmml.experiments.interpret.contexts import build, scenario_batches, task_contexts, task_routes, user_batches
from cmml.experiments.interpret.plots import plot_routes, plot_tsne
from cmml.experiments.interpret.statistics import knn_accuracy, route_differences, separation, tsne_2d
from cmml.experiments.interpret.studies import scenario_genre

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TINY = {"embedding_dim": 4, "hidden": [8, 8], "label_hidden": [4], "encoder_hidden": [8], "hyper_hidden": [8]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = load_study_config().models  # the studies' CMML configs: user, soft, scenario


def _task_records(tmp: Path, data: Path, **config) -> str:
    from components_fixtures import reader_columns

    from cmml.components.task_gen.beam_graph import run_task_gen
    from cmml.components.task_gen.config import TaskGenConfig

    cols = reader_columns(data)
    files = cols.write(tmp / "columns", files=1)
    out = tmp / "tasks"
    run_task_gen(
        files,
        cols.entities,
        str(out),
        TaskGenConfig(num_shards=1, **config),
        cols.features,
        cols.vocab,
        beam_args=IN_MEMORY,
        scenario_source="column" if config.get("setting") == "scenario" else None,
    )
    return str(out)


def _keys(root: str, split: str) -> list[str]:
    with open(Path(root) / "tasks.tsv", encoding="utf-8") as f:
        return [r["task_key"] for r in csv.DictReader(f, delimiter="\t") if r["split"] == split]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cmml.data import synthetic
    from cmml.data.movielens import Synthetic

    base = tmp_path_factory.mktemp("interpret")
    data = base / "data"
    synthetic.generate(data, synthetic.SyntheticConfig(users=160, seed=5), progress=None)
    users = _task_records(base / "user", data, test_fraction=0.3)
    scenarios = _task_records(
        base / "scenario",
        data,
        setting="scenario",
        min_items=10,
        test_fraction=0.3,
        eval_support_positives=8,
        eval_users_per_scenario=4,
    )
    return users, scenarios, Synthetic(data).latent_groups()


def test_user_contexts_one_per_meta_test_task_and_tsne(tiny, tmp_path):
    root, _, groups = tiny
    model, specs = build(root, "user", {**MODELS["user"], **TINY})
    keys, ctx = task_contexts(model, user_batches(root, specs, batch_size=256).as_numpy_iterator())
    assert sorted(keys) == sorted(_keys(root, "meta_test")) and len(set(keys)) == len(keys)
    assert ctx.shape == (len(keys), model.context_dim) and np.isfinite(ctx).all()
    assert all(k in groups for k in keys)  # task keys are the raw user ids of the ground truth

    points = tsne_2d(ctx, seed=0)
    assert points.shape == (len(keys), 2) and np.isfinite(points).all()
    labels = [groups[k] for k in keys]
    plot_tsne(
        tmp_path / "t.png",
        [{"points": points, "labels": labels, "title": "a"}, {"points": points[::-1], "labels": labels, "title": "b"}],
        "title",
        "group",
    )
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC and (tmp_path / "t.png").stat().st_size > 5000


@pytest.mark.parametrize("hybrid", ["dot", "none"])
def test_soft_routes_are_distributions_over_source_modules(tiny, hybrid, tmp_path):
    root, _, groups = tiny
    model, specs = build(
        root, "user", {**MODELS["soft"], **TINY, "hybrid": hybrid, "soft_layers": 3, "soft_modules": 4, "soft_width": 4}
    )
    keys, routes, final = task_routes(model, user_batches(root, specs, batch_size=256).as_numpy_iterator())
    n = len(_keys(root, "meta_test"))
    assert len(keys) == n and routes.shape == (n, 2, 4, 4) and final.shape == (n, 4)
    assert (routes >= 0).all() and (final >= 0).all()
    np.testing.assert_allclose(routes.sum(axis=-2), 1.0, atol=1e-5)  # weights into each module j sum to 1
    np.testing.assert_allclose(final.sum(axis=-1), 1.0, atol=1e-5)

    if hybrid != "dot":
        return
    diff = route_differences(routes, final, [groups[k] for k in keys])
    a, b = diff["task_indices"]
    assert groups[keys[a]] != groups[keys[b]] and 0.0 <= diff["tv_shown_tasks"] <= 1.0
    plot_routes(
        tmp_path / "r.png", [{"routes": routes[i], "final": final[i], "title": keys[i]} for i in (a, b)], "routes"
    )
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG_MAGIC and (tmp_path / "r.png").stat().st_size > 5000


def test_routes_need_a_soft_model(tiny):
    root, _, _ = tiny
    model, specs = build(root, "user", {**MODELS["user"], **TINY})
    with pytest.raises(ValueError, match="Soft-M"):
        task_routes(model, user_batches(root, specs).as_numpy_iterator())


def test_scenario_contexts_one_per_scenario_of_each_split(tiny):
    _, root, _ = tiny
    model, specs = build(root, "scenario", {**MODELS["scenario"], **TINY})
    for split in ("meta_test", "meta_train"):
        # meta-test: ranking rows (one per scenario and evaluation user) share the scenario's support set
        keys, ctx = task_contexts(model, scenario_batches(root, specs, split, batch_size=256).as_numpy_iterator())
        assert sorted(keys) == sorted(_keys(root, split)) and ctx.shape == (len(keys), model.context_dim)


def test_separation_and_route_distances_on_known_structure():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 5)) * 0.1 + np.eye(5)[labels] * 5
    sep = separation(x, labels, k=5)
    assert sep["knn_accuracy"] == 1.0 and sep["knn_chance"] < 0.6 and sep["silhouette"] > 0.8
    assert knn_accuracy(rng.normal(size=(60, 5)), labels, k=5) < 0.8

    routes = np.full((4, 2, 3, 3), 1 / 3)
    final = np.tile([[1.0, 0.0, 0.0]], (4, 1))
    final[2:] = [0.0, 1.0, 0.0]
    diff = route_differences(routes, final, [0, 0, 1, 1])
    assert diff["tv_within_groups"] == 0.0 and diff["group_pair"] == [0, 1]
    assert diff["tv_between_groups"] == pytest.approx(1.0 / 7)  # one of 2·3 + 1 distributions differs completely


def test_scenario_genre_of_theme_keys():
    assert scenario_genre("genre=Drama|decade=1990s") == "Drama"
    assert scenario_genre("ml100k/genre=Children's") == "Children's"
    assert scenario_genre("director=Someone") is None
