"""Interpretability figures (SPEC section 3, "Interpretability"; issue 7 item 4).

    python -m cmml.experiments.interpret [--out docs] [--work runs/interpret] [--parts users,scenario,routes]

Three figures, each from models trained here on task records made by the project's real data path
(``cmml.pipeline.runner.run_local(config, output, data_only=True)``: LogExampleGen → validation →
Transform → TaskGen):

* ``tsne_user_contexts.png`` — synthetic data (``cmml.data.synthetic``, a few thousand users with
  planted latent preference groups, ground truth in ``user_groups.dat``). A CMML model (mean
  encoder, dot hybrid, FiLM) is trained with ``fit_episodic``; the support set of every meta-test
  user is encoded into its context vector C (``CMMLModel.encode_context``) and the contexts are
  embedded with t-SNE, coloured by the user's latent group. The same is shown for the same
  architecture before training (random initialisation), as a reference.
* ``tsne_scenario_contexts.png`` — scenario setting (CTR head) on MovieLens themes derived by
  TaskGen from item metadata (``genre=…`` and ``genre=…|decade=…``); contexts of every scenario
  (meta-test fixed support sets, and a seeded support draw for meta-train / meta-valid scenarios,
  marked differently), coloured by the theme's genre.
* ``soft_routes.png`` — a Soft-M CMML (``modulation: soft``) trained on the synthetic users: the
  routing probabilities of two meta-test users of two different latent groups, one heat map per
  routing step (module i of layer l → module j of layer l+1; each column sums to 1) plus the final
  aggregation vector.

Separation is quantified (leave-one-out k-NN accuracy of the label from the context vectors, and
silhouette scores) for the trained and the untrained model, against a label-permutation chance
level; route differences as total-variation distances within and between groups. Everything
measured goes to ``interpret.json`` next to the PNGs. Only ``main``/``run`` import TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

PARTS = ("users", "scenario", "routes")
DEFAULT_WORK = "runs/interpret"
DEFAULT_SCENARIO_DATA = "../shared/data/ml-100k"
JSON_FILE = "interpret.json"
USER_PNG, SCENARIO_PNG, ROUTES_PNG = "tsne_user_contexts.png", "tsne_scenario_contexts.png", "soft_routes.png"

# Candidate features (the pipeline default: user ids and zip codes carry nothing for new tasks);
# a dataset uses those it has.
FEATURES = ("gender", "age", "occupation", "item_id", "year", "rated", "genres", "directors", "actors")
# Small models: the figures need a trained encoder, not the best possible scores.
USER_MODEL = {
    "encoder": "mean",
    "hybrid": "dot",
    "modulation": "film",
    "embedding_dim": 16,
    "encoder_hidden": [64],
    "hyper_hidden": [64],
    "hidden": [64, 64, 64],
    "label_hidden": [32],
    "learning_rate": 3e-3,
}
SOFT_MODEL = {
    **USER_MODEL,
    "modulation": "soft",
    "hyper_hidden": [64, 64],
    "soft_layers": 3,
    "soft_modules": 4,
    "soft_width": 16,
}
SCENARIO_MODEL = {**USER_MODEL}
NON_FEATURE_KEYS = ("task_key", "user_raw_id")
SPLIT_MARKERS = {"meta_test": "o", "meta_train": "^", "meta_valid": "s"}

Log = Callable[[str], None]


def make_log(stream=sys.stdout) -> Log:
    start = time.time()

    def log(message: str) -> None:
        print(f"[interpret {time.time() - start:6.0f} s] {message}", file=stream, flush=True)

    return log


# --- task records through the real data path -------------------------------------------------------------
@contextlib.contextmanager
def _quiet_logs():
    """Keeps the runner's one-line-per-component progress but drops the INFO flood of TFX / Beam.

    Also sets absl's verbosity *flag* to INFO: TensorFlow's checkpoint code (run by Transform)
    silences absl and then restores the flag's value (WARNING by default), which would otherwise
    hide the runner's 'Component ... is finished' records from Transform on."""
    from absl import logging as absl_logging

    root = logging.getLogger()
    saved = [(h, h.level) for h in root.handlers]
    verbosity = absl_logging.get_verbosity()
    for h, _ in saved:
        h.setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)
        for h, level in saved:
            h.setLevel(level)


def run_data_path(config, output: Path, log: Log) -> str:
    """Runs LogExampleGen → validation → Transform → TaskGen (cached on re-runs); returns TaskGen's folder."""
    from cmml.pipeline.runner import run_local

    with _quiet_logs():
        summary = run_local(config, str(output), data_only=True, progress=sys.stdout)
    tasks = summary.tasks
    log(
        f"task records: {tasks.get('tasks_meta_train', 0)} meta-train, {tasks.get('tasks_meta_valid', 0)} meta-valid, "
        f"{tasks.get('tasks_meta_test', 0)} meta-test"
    )
    return os.path.dirname(tasks["feature_specs_uri"])


def _beam(workers: int) -> dict:
    return (
        {"direct_running_mode": "in_memory", "direct_num_workers": 1}
        if workers <= 1
        else {"direct_running_mode": "multi_processing", "direct_num_workers": workers}
    )


def prepare_user_tasks(work: Path, users: int, seed: int, log: Log, beam_workers: int = 1) -> tuple[str, Path]:
    """Synthetic data with planted groups (generated once per size and seed) → user-setting task records."""
    from cmml.data import synthetic
    from cmml.pipeline.config import load_config

    data = work / f"synthetic-u{users}-s{seed}"
    cfg = synthetic.SyntheticConfig(users=users, seed=seed)
    stamp = data / "synthetic.json"
    if not (stamp.exists() and json.loads(stamp.read_text())["config"] == json.loads(json.dumps(cfg.__dict__))):
        log(f"generating synthetic data: {users} users (seed {seed}) in {data}")
        synthetic.generate(data, cfg, progress=None)
    config = load_config(
        overrides={
            "name": "interpret-users",
            "data": str(data),
            "setting": "user",
            "taskgen": {"num_shards": 2, "test_fraction": 0.2, "valid_fraction": 0.1},
            "beam": _beam(beam_workers),
        }
    )
    log("data path (user setting): LogExampleGen → validation → Transform → TaskGen")
    return run_data_path(config, work / "users", log), data


def prepare_scenario_tasks(work: Path, data: str, log: Log, beam_workers: int = 1, min_items: int = 10) -> str:
    """MovieLens themes (``genre=…``, ``genre=…|decade=…``) → scenario-setting task records."""
    from cmml.pipeline.config import load_config

    config = load_config(
        overrides={
            "name": "interpret-scenario",
            "data": str(data),
            "setting": "scenario",
            "taskgen": {
                "num_shards": 2,
                "test_fraction": 0.3,
                "valid_fraction": 0.1,
                "scenario_source": "themes",
                "themes": ["genre", "genre_decade"],
                "min_items": min_items,
                "eval_users_per_scenario": 20,
            },
            "beam": _beam(beam_workers),
        }
    )
    log(f"data path (scenario setting, themes of {data}): LogExampleGen → validation → Transform → TaskGen")
    return run_data_path(config, work / ("scenario-" + Path(str(data)).name), log)


# --- models -----------------------------------------------------------------------------------------------------------
def model_config(specs, overrides: Mapping[str, Any]) -> dict:
    names = {s.name for s in specs}
    return {**overrides, "features": [f for f in FEATURES if f in names]}


def build(root: str, setting: str, model: Mapping[str, Any], seed: int = 0):
    """A compiled CMML model for the records under ``root`` (weights initialised with ``seed``); returns (model, specs)."""
    import tensorflow as tf

    from cmml.models.training import build_model
    from cmml.schemas.episodes import load_feature_specs

    specs = load_feature_specs(root)
    tf.keras.utils.set_random_seed(seed)
    return build_model("cmml", specs, setting, model_config(specs, model)), specs


def train(root: str, setting: str, model: Mapping[str, Any], training: Mapping[str, Any], log: Log, seed: int = 0):
    """Episodic training with early stopping on the meta-valid tasks (the one training API)."""
    from cmml.models import training as T

    data = T.TaskData(root, setting)
    trained = T.train(
        data,
        "cmml",
        model_config(data.specs, model),
        {**training, "seed": seed},
        rating_range=(1, 5) if setting == "user" else None,
        log=log,
    )
    summary = trained.summary
    log(
        f"trained: best epoch {summary['best_epoch']} of {summary['epochs_run']}, validation {summary['best_validation']:.4f} "
        f"({'MAE' if setting == 'user' else '-Recall@20'}), {summary['seconds']:.0f} s"
    )
    return trained.model, data.specs, summary


# --- episodes with task keys ---------------------------------------------------------------------------------------
def user_batches(root: str, specs, split: str = "meta_test", batch_size: int = 128):
    """Fixed user episodes (stored support / query rows) with ``task_key``."""
    from cmml.models import episodes

    return episodes.evaluation_episodes(
        root, specs, setting="user", split=split, batch_size=batch_size, include_task_key=True
    )


def scenario_batches(root: str, specs, split: str, seed: int = 0, batch_size: int = 64, support_positives: int = 64):
    """Scenario episodes with ``task_key``: meta-test — the fixed support set (one row per evaluation
    user, all with the same support set); meta-train / meta-valid — one seeded support draw per scenario."""
    from cmml.models import episodes
    from cmml.schemas import tasks as T

    if split == "meta_test":
        return episodes.evaluation_episodes(
            root, specs, setting="scenario", split=split, batch_size=batch_size, include_task_key=True
        )
    files = episodes.task_files(T.split_pattern(root, split))
    return episodes.training_episodes(
        files,
        specs,
        setting="scenario",
        batch_size=batch_size,
        seed=seed,
        shuffle_buffer=0,
        repeat=False,
        include_task_key=True,
        support_positives=support_positives,
        query_positives=1,
    )


def _key(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _features(batch: Mapping[str, Any]) -> dict:
    return {k: v for k, v in batch.items() if k not in NON_FEATURE_KEYS}


def task_contexts(model, batches: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray]:
    """One context vector C per task: (task keys, ``[tasks, context_dim]``), first occurrence of each key."""
    import tensorflow as tf

    encode = tf.function(lambda f: model.encode_context(f), reduce_retracing=True)
    keys, rows, seen = [], [], set()
    for batch in batches:
        context = encode(_features(batch)).numpy()
        for k, c in zip(np.asarray(batch["task_key"]), context):
            k = _key(k)
            if k not in seen:
                seen.add(k)
                keys.append(k)
                rows.append(c)
    width = int(model.context_dim)
    return keys, np.asarray(rows, np.float32).reshape(-1, width)


def task_routes(model, batches: Iterable[Mapping[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Soft-M routing probabilities per task: (keys, routes ``[tasks, k-1, m, m]``, final ``[tasks, m]``).

    ``routes[t, l, i, j]`` is the weight of module i of layer l+1 in the input of module j of layer
    l+2 (sums to 1 over i); ``final[t, j]`` weighs module j of the last layer. With a per-row
    hybrid context (``hybrid: dot|mlp``) routes differ per query pair and are averaged over the
    task's valid query rows; with ``hybrid: none`` they are the task's own.
    """
    import tensorflow as tf

    from cmml.schemas.episodes import MASK, QUERY, key

    if getattr(model.config, "modulation", None) != "soft":
        raise ValueError("routes exist only for a Soft-M model (CMMLConfig.modulation = 'soft')")

    @tf.function(reduce_retracing=True)
    def routes_of(features):
        out = model.score(model.encode_context(features), features, training=False)
        mask = tf.cast(features[key(QUERY, MASK)], tf.float32)  # [B, Q]
        weight = mask / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        routes = tf.einsum("bq,bqlij->blij", weight, out["routes"])
        final = tf.einsum("bq,bqj->bj", weight, out["final_route"])
        return routes, final

    keys, all_routes, all_final, seen = [], [], [], set()
    for batch in batches:
        routes, final = (t.numpy() for t in routes_of(_features(batch)))
        for k, r, f in zip(np.asarray(batch["task_key"]), routes, final):
            k = _key(k)
            if k not in seen:
                seen.add(k)
                keys.append(k)
                all_routes.append(r)
                all_final.append(f)
    k_1, m = model.config.soft_layers - 1, model.config.soft_modules
    return (
        keys,
        np.asarray(all_routes, np.float32).reshape(-1, k_1, m, m),
        np.asarray(all_final, np.float32).reshape(-1, m),
    )


# --- analysis ---------------------------------------------------------------------------------------------------------
def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of the rows of ``x`` to 2-D (one point per row), fixed ``random_state``."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, np.float64)
    n = len(x)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(x)


def knn_accuracy(x: np.ndarray, labels: Sequence, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy (Euclidean; majority vote, ties to the nearest neighbour's label)."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    n = len(labels)
    k = max(1, min(k, n - 1))
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    correct = 0
    for i in range(n):
        nb = [j for j in idx[i] if j != i][:k]
        votes: dict = {}
        for rank, j in enumerate(nb):
            count, first = votes.get(labels[j], (0, rank))
            votes[labels[j]] = (count + 1, first)
        best = max(votes.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
        correct += best == labels[i]
    return correct / n


def separation(x: np.ndarray, labels: Sequence, k: int, seed: int = 0, permutations: int = 20) -> dict[str, float]:
    """How well ``labels`` separate in the space of ``x``: k-NN accuracy (vs. permuted labels) and silhouette."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([knn_accuracy(x, rng.permutation(labels), k) for _ in range(permutations)]))
    out = {
        "knn_k": k,
        "knn_accuracy": knn_accuracy(x, labels, k),
        "knn_chance": chance,
        "classes": int(len(set(labels.tolist()))),
    }
    out["silhouette"] = float(silhouette_score(x, labels)) if 2 <= out["classes"] < len(labels) else float("nan")
    return out


def route_vector(routes: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Every routing distribution of each task side by side: ``[tasks, (k-1)·m + 1, m]``."""
    t = routes.shape[0]
    cols = np.swapaxes(routes, -1, -2).reshape(t, -1, routes.shape[-1])  # [t, (k-1)*m (target j), m (source i)]
    return np.concatenate([cols, final[:, None, :]], axis=1)


def total_variation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean total-variation distance over the routing distributions of ``route_vector`` rows."""
    return 0.5 * np.abs(a - b).sum(-1).mean(-1)


def route_differences(routes: np.ndarray, final: np.ndarray, groups: Sequence[int]) -> dict[str, Any]:
    """Within- and between-group TV distances of tasks' routes, and the pair of groups (and of
    representative tasks, each its group's medoid) whose routes differ most."""
    vec = route_vector(routes, final)
    groups = np.asarray(groups)
    tv = total_variation(vec[:, None], vec[None, :])  # [t, t]
    same = groups[:, None] == groups[None, :]
    off = ~np.eye(len(groups), dtype=bool)
    uniq = sorted(set(groups.tolist()))
    means = {g: vec[groups == g].mean(0) for g in uniq}
    best = (-1.0, uniq[0], uniq[-1])
    for i, a in enumerate(uniq):
        for b in uniq[i + 1 :]:
            d = float(total_variation(means[a], means[b]))
            best = max(best, (d, a, b))
    picks = []
    for g in best[1:]:
        members = np.flatnonzero(groups == g)
        picks.append(int(members[np.argmin(total_variation(vec[members], means[g][None]))]))
    uniform = np.full_like(vec, 1.0 / vec.shape[-1])
    return {
        "tv_within_groups": float(tv[same & off].mean()) if (same & off).any() else float("nan"),
        "tv_between_groups": float(tv[~same].mean()) if (~same).any() else float("nan"),
        "tv_from_uniform": float(total_variation(vec, uniform).mean()),
        "group_pair": [int(best[1]), int(best[2])],
        "tv_group_means": best[0],
        "task_indices": picks,
        "tv_shown_tasks": float(tv[picks[0], picks[1]]),
    }


# --- plots ---------------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tsne(path: str | Path, panels: Sequence[Mapping[str, Any]], title: str, legend_title: str) -> None:
    """Scatter panels side by side. A panel: ``points`` [n, 2], ``labels`` (colour), optional
    ``markers`` (one marker key per point, see ``marker_names``), ``title``."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    classes = sorted(
        {str(l) for p in panels for l in p["labels"]}, key=lambda s: (len(s), s) if s.isdigit() else (0, s)
    )
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.2, 6.0), squeeze=False)
    marker_names: dict[str, str] = {}
    for ax, panel in zip(axes[0], panels):
        pts, labels = np.asarray(panel["points"]), [str(l) for l in panel["labels"]]
        markers = list(panel.get("markers") or ["o"] * len(labels))
        for marker in dict.fromkeys(markers):
            sel = np.array([m == marker for m in markers])
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                c=[colour[l] for l, s in zip(labels, sel) if s],
                marker=marker,
                s=22 if len(labels) > 100 else 60,
                alpha=0.85,
                edgecolors="black" if len(labels) <= 100 else "none",
                linewidths=0.4,
            )
        for text, (px, py) in zip(panel.get("annotations") or [], pts):
            ax.annotate(text, (px, py), xytext=(3, 3), textcoords="offset points", fontsize=6, color="0.25")
        marker_names.update(panel.get("marker_names") or {})
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[c], markersize=7, label=c) for c in classes]
    fig.legend(
        handles=handles, title=legend_title, loc="upper right", bbox_to_anchor=(1.0, 0.93), fontsize=8, title_fontsize=9
    )
    if marker_names:
        mh = [
            Line2D([], [], marker=m, linestyle="", color="grey", markeredgecolor="black", markersize=7, label=name)
            for m, name in marker_names.items()
        ]
        fig.legend(
            handles=mh, title="tasks", loc="lower right", bbox_to_anchor=(1.0, 0.06), fontsize=8, title_fontsize=9
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_routes(path: str | Path, tasks: Sequence[Mapping[str, Any]], title: str) -> None:
    """Heat maps of Soft-M routes: one row per task (``routes`` [k-1, m, m], ``final`` [m], ``title``),
    one column per routing step plus the final aggregation."""
    plt = _pyplot()

    steps, m = tasks[0]["routes"].shape[0], tasks[0]["routes"].shape[-1]
    cols = steps + 1
    fig, axes = plt.subplots(
        len(tasks),
        cols,
        figsize=(3.0 * steps + 3.2, 3.4 * len(tasks) + 0.9),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1] * steps + [0.3]},
    )
    image = None
    for r, task in enumerate(tasks):
        panels = [task["routes"][l] for l in range(steps)] + [np.asarray(task["final"])[:, None]]
        for c, (ax, mat) in enumerate(zip(axes[r], panels)):
            image = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis")
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
            ax.set_yticks(range(m))
            if c < steps:
                ax.set_xticks(range(m))
                ax.set_title(f"layer {c + 1} → layer {c + 2}", fontsize=9)
                ax.set_xlabel(f"to module j (layer {c + 2})", fontsize=8)
                ax.set_ylabel(f"from module i (layer {c + 1})", fontsize=8)
            else:
                ax.set_xticks([])
                ax.set_title("final\naggregation", fontsize=9)
                ax.set_ylabel(f"module (layer {steps + 1})", fontsize=8)
        axes[r][0].annotate(
            task.get("title", ""),
            xy=(-0.38, 0.5),
            xycoords="axes fraction",
            rotation=90,
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold",
        )
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="routing probability")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the three studies ------------------------------------------------------------------------------------------------
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


def study_user_contexts(root: str, groups: Mapping[str, int], out: Path, args, log: Log) -> dict:
    model, specs, summary = train(root, "user", USER_MODEL, _user_training(args), log, args.seed)
    keys, ctx = task_contexts(model, user_batches(root, specs).as_numpy_iterator())
    untrained, _ = build(root, "user", USER_MODEL, args.seed + 1)
    ukeys, uctx = task_contexts(untrained, user_batches(root, specs).as_numpy_iterator())
    assert ukeys == keys
    labels = [groups[k] for k in keys]
    log(f"encoded {len(keys)} meta-test users' support sets → contexts {ctx.shape}; t-SNE ...")
    trained_sep = separation(ctx, labels, k=10, seed=args.seed)
    untrained_sep = separation(uctx, labels, k=10, seed=args.seed)
    pts, upts = tsne_2d(ctx, args.seed), tsne_2d(uctx, args.seed)
    trained_sep["silhouette_tsne"] = float(_silhouette(pts, labels))
    untrained_sep["silhouette_tsne"] = float(_silhouette(upts, labels))
    log(f"user contexts, trained:   {_fmt(trained_sep)}")
    log(f"user contexts, untrained: {_fmt(untrained_sep)}")
    plot_tsne(
        out / USER_PNG,
        [
            {"points": pts, "labels": labels, "title": f"trained CMML (mean encoder, FiLM)\n{_fmt(trained_sep)}"},
            {"points": upts, "labels": labels, "title": f"same architecture, untrained\n{_fmt(untrained_sep)}"},
        ],
        f"t-SNE of the context vectors C of {len(keys)} meta-test users (synthetic data), coloured by planted latent group",
        "latent group",
    )
    log(f"wrote {out / USER_PNG}")
    return {
        "figure": USER_PNG,
        "tasks": len(keys),
        "context_dim": int(ctx.shape[1]),
        "model": model_config(specs, USER_MODEL),
        "training": _brief(summary),
        "trained": trained_sep,
        "untrained": untrained_sep,
    }


def _silhouette(x, labels) -> float:
    from sklearn.metrics import silhouette_score

    return silhouette_score(x, labels) if 2 <= len(set(labels)) < len(labels) else float("nan")


def _brief(summary: Mapping[str, Any]) -> dict:
    return {k: summary[k] for k in ("best_epoch", "epochs_run", "best_validation", "seconds")}


def _user_training(args) -> dict:
    return {"epochs": args.epochs, "patience": args.patience, "batch_tasks": 32, "query_size": 10, "ema_decay": 0.9}


def study_scenario_contexts(root: str, out: Path, args, log: Log) -> dict:
    training = {
        "epochs": args.scenario_epochs,
        "patience": args.patience + 2,
        "batch_tasks": 4,
        "support_positives": 32,
        "query_positives": 64,
        "ema_decay": 0.9,
    }
    model, specs, summary = train(root, "scenario", SCENARIO_MODEL, training, log, args.seed)
    untrained, _ = build(root, "scenario", SCENARIO_MODEL, args.seed + 1)
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
        sep["silhouette_tsne"] = float(_silhouette(pts, genres))
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
        f"t-SNE of the context vectors C of {len(keys)} scenarios (themes of {Path(str(args.scenario_data)).name}: genre, genre × decade), "
        "coloured by the theme's genre",
        "genre",
    )
    log(f"wrote {out / SCENARIO_PNG}")
    return {
        "figure": SCENARIO_PNG,
        "data": str(args.scenario_data),
        "tasks": len(keys),
        "tasks_by_split": {s: splits.count(s) for s in set(splits)},
        "context_dim": int(ctx.shape[1]),
        "model": model_config(specs, SCENARIO_MODEL),
        "training": _brief(summary),
        "trained": seps["trained"],
        "untrained": seps["untrained"],
        "keys": keys,
    }


def study_routes(root: str, groups: Mapping[str, int], out: Path, args, log: Log) -> dict:
    config = {**SOFT_MODEL, "hybrid": args.soft_hybrid}
    model, specs, summary = train(root, "user", config, _user_training(args), log, args.seed)
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
        "model": model_config(specs, config),
        "training": _brief(summary),
        "shown_users": [keys[a], keys[b]],
        "shown_groups": [labels[a], labels[b]],
        **diff,
        "group_from_routes": sep,
    }


# --- command line ------------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", default="docs", help="folder for the PNGs and interpret.json (default: docs)")
    parser.add_argument(
        "--work", default=DEFAULT_WORK, help=f"folder for generated data and pipeline outputs (default: {DEFAULT_WORK})"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default: all)"
    )
    parser.add_argument("--users", type=int, default=3000, help="synthetic users (default 3000)")
    parser.add_argument(
        "--scenario-data",
        default=DEFAULT_SCENARIO_DATA,
        help=f"MovieLens folder for the scenario figure (default: {DEFAULT_SCENARIO_DATA})",
    )
    parser.add_argument("--epochs", type=int, default=12, help="user setting: maximum training epochs (default 12)")
    parser.add_argument(
        "--scenario-epochs", type=int, default=20, help="scenario setting: maximum training epochs (default 20)"
    )
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default 3)")
    parser.add_argument(
        "--soft-hybrid",
        choices=("none", "dot", "mlp"),
        default="dot",
        help="hybrid context of the Soft-M model (default dot: routes per query pair, averaged over a task's query rows; "
        "none: one route per task)",
    )
    parser.add_argument(
        "--beam-workers", type=int, default=1, help="DirectRunner workers of the data path (default 1: in-memory)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import cmml  # noqa: F401  (Keras 2 before TensorFlow)

    tf.get_logger().setLevel(logging.ERROR)  # retracing notices of the per-batch shapes

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"interpret: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    log = make_log()
    start = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    path = out / JSON_FILE
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}  # parts not re-run are kept
    command = " ".join(sys.argv[1:]) if sys.argv[0].endswith("interpret.py") else " ".join(sys.argv[2:])
    report["run"] = {
        "command": f"python -m cmml.experiments.interpret {command}".strip(),
        "parts": parts,
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool))},
    }
    report.pop("command", None)

    def save(name: str | None = None, part: dict | None = None, since: float = 0.0):
        if name:
            report[name] = {**part, "seconds": round(time.time() - since, 1)}
        report["run"]["seconds"] = round(time.time() - start, 1)
        path.write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")

    if "users" in parts or "routes" in parts:
        from cmml.data.datasets import Synthetic

        since = time.time()
        root, data = prepare_user_tasks(work, args.users, args.seed, log, args.beam_workers)
        groups = Synthetic(data).latent_groups()
        report["user_data_seconds"] = round(time.time() - since, 1)
        if "users" in parts:
            since = time.time()
            log("user contexts: training CMML (mean encoder, dot hybrid, FiLM)")
            save("user_contexts", study_user_contexts(root, groups, out, args, log), since)
        if "routes" in parts:
            since = time.time()
            log(f"soft routes: training Soft-M CMML (hybrid {args.soft_hybrid})")
            save("soft_routes", study_routes(root, groups, out, args, log), since)
    if "scenario" in parts:
        if not Path(args.scenario_data).is_dir():
            print(
                f"interpret: scenario data not found at {args.scenario_data}; skipping the scenario figure",
                file=sys.stderr,
            )
        else:
            since = time.time()
            root = prepare_scenario_tasks(work, args.scenario_data, log, args.beam_workers)
            log("scenario contexts: training CMML (CTR head)")
            save("scenario_contexts", study_scenario_contexts(root, out, args, log), since)
    save()
    log(f"done in {time.time() - start:.0f} s; measurements in {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m cmml.experiments.interpret", description=__doc__.split("\n\n")[0])
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
