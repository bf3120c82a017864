"""The three interpretability studies and their report (``interpret.json`` next to the PNGs).

* user contexts — a CMML model (mean encoder, dot hybrid, FiLM) trained on synthetic users; every
  meta-test user's support set encoded into its context vector C (``CMMLModel.encode_context``),
  embedded with t-SNE and coloured by the user's latent group (ground truth ``user_groups.dat``),
  next to the same architecture before training (random initialisation);
* scenario contexts — the CTR head on MovieLens themes: contexts of every scenario (meta-test fixed
  support sets, a seeded support draw for meta-train / meta-valid scenarios, marked differently),
  coloured by the theme's genre;
* Soft-M routes — a ``modulation: soft`` CMML on the synthetic users: the routing probabilities of
  two meta-test users of two different latent groups, one heat map per routing step plus the
  final aggregation vector.

Separation is quantified (leave-one-out k-NN accuracy of the label from the context vectors, and
silhouette scores) for the trained and the untrained model, against a label-permutation chance
level; route differences as total-variation distances within and between groups.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from cmml.data.movielens import Synthetic
from cmml.experiments.interpret.config import StudyConfig, load_study_config
from cmml.experiments.interpret.contexts import build, fit, scenario_batches, task_contexts, task_routes, user_batches
from cmml.experiments.interpret.plots import plot_routes, plot_tsne
from cmml.experiments.interpret.records import (
    run_data_path,
    scenario_pipeline,
    synthetic_users,
    user_pipeline,
)
from cmml.experiments.interpret.statistics import route_differences, route_vector, separation, silhouette, tsne_2d
from cmml.experiments.suites import default_data_root, missing_dataset

PARTS = ("users", "scenario", "routes")
JSON_FILE = "interpret.json"
USER_PNG, SCENARIO_PNG, ROUTES_PNG = "tsne_user_contexts.png", "tsne_scenario_contexts.png", "soft_routes.png"
SPLIT_MARKERS = {"meta_test": "o", "meta_train": "^", "meta_valid": "s"}

Log = Callable[[str], None]


def make_log(stream=sys.stdout) -> Log:
    start = time.time()

    def log(message: str) -> None:
        print(f"[interpret {time.time() - start:6.0f} s] {message}", file=stream, flush=True)

    return log


def scenario_genre(task_key: str) -> str | None:
    """The genre of a theme key: ``genre=Drama|decade=1990s`` → ``Drama`` (domain prefixes ignored)."""
    for part in task_key.split("/")[-1].split("|"):
        name, _, value = part.partition("=")
        if name == "genre":
            return value
    return None


def _short(task_key: str) -> str:
    """``genre=Drama|decade=1990s`` → ``Drama 1990s``."""
    return " ".join(part.partition("=")[2] or part for part in task_key.split("/")[-1].split("|"))


def _fmt(s: Mapping[str, Any]) -> str:
    return (
        f"{s['knn_k']}-NN acc. {s['knn_accuracy']:.2f} (chance {s['knn_chance']:.2f}), silhouette {s['silhouette']:.2f}"
    )


def _brief(summary: Mapping[str, Any]) -> dict:
    return {k: summary[k] for k in ("best_epoch", "epochs_run", "best_validation", "seconds")}


def _training(study: StudyConfig, setting: str, epochs: int, patience: int) -> dict:
    return {"epochs": epochs, "patience": patience, **study.training[setting]}


def study_user_contexts(
    root: str, groups: Mapping[str, int], out: Path, args, log: Log, study: StudyConfig, rating_range
) -> dict:
    training = _training(study, "user", args.epochs, args.patience)
    model, specs, used, summary = fit(root, "user", study.models["user"], training, log, args.seed, rating_range)
    keys, ctx = task_contexts(model, user_batches(root, specs).as_numpy_iterator())
    untrained, _ = build(root, "user", study.models["user"], args.seed + 1)
    ukeys, uctx = task_contexts(untrained, user_batches(root, specs).as_numpy_iterator())
    assert ukeys == keys
    labels = [groups[k] for k in keys]
    log(f"encoded {len(keys)} meta-test users' support sets → contexts {ctx.shape}; t-SNE ...")
    trained_sep = separation(ctx, labels, k=10, seed=args.seed)
    untrained_sep = separation(uctx, labels, k=10, seed=args.seed)
    pts, upts = tsne_2d(ctx, args.seed), tsne_2d(uctx, args.seed)
    trained_sep["silhouette_tsne"] = silhouette(pts, labels)
    untrained_sep["silhouette_tsne"] = silhouette(upts, labels)
    log(f"user contexts, trained:   {_fmt(trained_sep)}")
    log(f"user contexts, untrained: {_fmt(untrained_sep)}")
    plot_tsne(
        out / USER_PNG,
        [
            {"points": pts, "labels": labels, "title": f"trained CMML (mean encoder, FiLM)\n{_fmt(trained_sep)}"},
            {"points": upts, "labels": labels, "title": f"same architecture, untrained\n{_fmt(untrained_sep)}"},
        ],
        f"t-SNE of the context vectors C of {len(keys)} meta-test users (synthetic data), "
        "coloured by planted latent group",
        "latent group",
    )
    log(f"wrote {out / USER_PNG}")
    return {
        "figure": USER_PNG,
        "tasks": len(keys),
        "context_dim": int(ctx.shape[1]),
        "model": used,
        "training": _brief(summary),
        "trained": trained_sep,
        "untrained": untrained_sep,
    }


def study_scenario_contexts(root: str, data: Path, out: Path, args, log: Log, study: StudyConfig) -> dict:
    training = _training(study, "scenario", args.scenario_epochs, args.patience + 2)
    model, specs, used, summary = fit(root, "scenario", study.models["scenario"], training, log, args.seed)
    untrained, _ = build(root, "scenario", study.models["scenario"], args.seed + 1)
    rows = {}
    for name, net in (("trained", model), ("untrained", untrained)):
        keys, ctx, splits = [], [], []
        for split in ("meta_test", "meta_valid", "meta_train"):
            try:
                k, c = task_contexts(net, scenario_batches(root, specs, split, seed=args.seed).as_numpy_iterator())
            except FileNotFoundError:
                continue
            keys += k
            ctx.append(c)
            splits += [split] * len(k)
        rows[name] = (keys, np.concatenate(ctx), splits)
    keys, ctx, splits = rows["trained"]
    assert rows["untrained"][0] == keys
    genres = [scenario_genre(k) or "other" for k in keys]
    log(f"encoded {len(keys)} scenarios ({splits.count('meta_test')} meta-test) → contexts {ctx.shape}; t-SNE ...")
    seps, panels = {}, []
    for name, label in (
        ("trained", "trained CMML (CTR head, mean encoder, FiLM)"),
        ("untrained", "same architecture, untrained"),
    ):
        sep = separation(rows[name][1], genres, k=1, seed=args.seed)
        pts = tsne_2d(rows[name][1], args.seed, perplexity=10.0)
        sep["silhouette_tsne"] = silhouette(pts, genres)
        seps[name] = sep
        log(f"scenario contexts, {name}: {_fmt(sep)}")
        panels.append(
            {
                "points": pts,
                "labels": genres,
                "markers": [SPLIT_MARKERS[s] for s in splits],
                "title": f"{label}\n{_fmt(sep)}",
                "annotations": [_short(k) for k in keys],
                "marker_names": {
                    SPLIT_MARKERS[s]: s.replace("_", "-")
                    for s in ("meta_test", "meta_valid", "meta_train")
                    if s in splits
                },
            }
        )
    plot_tsne(
        out / SCENARIO_PNG,
        panels,
        f"t-SNE of the context vectors C of {len(keys)} scenarios (themes of {data.name}: genre, genre × decade), "
        "coloured by the theme's genre",
        "genre",
    )
    log(f"wrote {out / SCENARIO_PNG}")
    return {
        "figure": SCENARIO_PNG,
        "data": str(data),
        "tasks": len(keys),
        "tasks_by_split": {s: splits.count(s) for s in set(splits)},
        "context_dim": int(ctx.shape[1]),
        "model": used,
        "training": _brief(summary),
        "trained": seps["trained"],
        "untrained": seps["untrained"],
        "keys": keys,
    }


def study_routes(
    root: str, groups: Mapping[str, int], out: Path, args, log: Log, study: StudyConfig, rating_range
) -> dict:
    config = {**study.models["soft"], "hybrid": args.soft_hybrid}
    training = _training(study, "user", args.epochs, args.patience)
    model, specs, used, summary = fit(root, "user", config, training, log, args.seed, rating_range)
    keys, routes, final = task_routes(model, user_batches(root, specs).as_numpy_iterator())
    labels = [groups[k] for k in keys]
    diff = route_differences(routes, final, labels)
    vec = route_vector(routes, final).reshape(len(keys), -1)
    sep = separation(vec, labels, k=10, seed=args.seed)
    a, b = diff["task_indices"]
    log(
        f"routes of {len(keys)} meta-test users: TV within groups {diff['tv_within_groups']:.3f}, between groups "
        f"{diff['tv_between_groups']:.3f}, from uniform {diff['tv_from_uniform']:.3f}; group from routes: {_fmt(sep)}"
    )
    shown = [
        {"routes": routes[i], "final": final[i], "title": f"user {keys[i]} (latent group {labels[i]})"} for i in (a, b)
    ]
    plot_routes(
        out / ROUTES_PNG,
        shown,
        f"Soft-M routing probabilities of two meta-test users from two latent groups (synthetic data)\n"
        f"hybrid '{args.soft_hybrid}'"
        + (": routes averaged over each user's query pairs" if args.soft_hybrid != "none" else ": one route per user")
        + "; every column sums to 1\n"
        f"TV distance between the two users {diff['tv_shown_tasks']:.3f}; mean TV within groups "
        f"{diff['tv_within_groups']:.3f}, between groups {diff['tv_between_groups']:.3f} ({len(keys)} users)",
    )
    log(f"wrote {out / ROUTES_PNG}")
    return {
        "figure": ROUTES_PNG,
        "tasks": len(keys),
        "model": used,
        "training": _brief(summary),
        "shown_users": [keys[a], keys[b]],
        "shown_groups": [labels[a], labels[b]],
        **diff,
        "group_from_routes": sep,
    }


def run_studies(args: argparse.Namespace, parts: Sequence[str]) -> int:
    """Runs the studies of ``parts``; the figures and ``interpret.json`` go to ``args.out``."""
    tf.get_logger().setLevel(logging.ERROR)  # retracing notices of the per-batch shapes
    study = load_study_config()
    log = make_log()
    start = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    path = out / JSON_FILE
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}  # parts not re-run are kept
    report["run"] = {
        "command": getattr(args, "command_line", None) or shlex.join(["cmml", "interpret"] + sys.argv[2:]),
        "parts": list(parts),
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool))},
    }
    report.pop("command", None)

    def save(name: str | None = None, part: dict | None = None, since: float = 0.0):
        if name:
            report[name] = {**part, "seconds": round(time.time() - since, 1)}
        report["run"]["seconds"] = round(time.time() - start, 1)
        path.write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")

    if "users" in parts or "routes" in parts:
        since = time.time()
        data = synthetic_users(work, args.users, args.seed, log)
        config = user_pipeline(data, study, args.beam_workers)
        log("data path (user setting): LogExampleGen → validation → Transform → TaskGen")
        root = run_data_path(config, work / "users", log)
        rating_range = config.evaluation["rating_range"]
        groups = Synthetic(data).latent_groups()
        report["user_data_seconds"] = round(time.time() - since, 1)
        if "users" in parts:
            since = time.time()
            log("user contexts: training CMML (mean encoder, dot hybrid, FiLM)")
            save("user_contexts", study_user_contexts(root, groups, out, args, log, study, rating_range), since)
        if "routes" in parts:
            since = time.time()
            log(f"soft routes: training Soft-M CMML (hybrid {args.soft_hybrid})")
            save("soft_routes", study_routes(root, groups, out, args, log, study, rating_range), since)
    if "scenario" in parts:
        data = Path(args.scenario_data) if args.scenario_data else default_data_root() / "ml-100k"
        if not data.is_dir():
            print(f"interpret: {missing_dataset(data)}; skipping the scenario figure", file=sys.stderr)
        else:
            since = time.time()
            log(f"data path (scenario setting, themes of {data}): LogExampleGen → validation → Transform → TaskGen")
            root = run_data_path(scenario_pipeline(data, study, args.beam_workers), work / f"scenario-{data.name}", log)
            log("scenario contexts: training CMML (CTR head)")
            save("scenario_contexts", study_scenario_contexts(root, data, out, args, log, study), since)
    save()
    log(f"done in {time.time() - start:.0f} s; measurements in {path}")
    return 0
