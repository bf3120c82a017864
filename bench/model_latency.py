"""Forward latency of CMML per task: in process (tf.function) and through the loaded SavedModel.

    python -m bench.model_latency [--support 64 --query 100 --repeats 200]

Tasks have ``support`` interactions and ``query`` candidates, with the feature set of the
user-specific MovieLens protocol. Prints a markdown table (median and p99 per call, and per task).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import tensorflow as tf

import cmml  # noqa: F401
from cmml.models.config import CMMLConfig
from cmml.models.export import export_saved_model
from cmml.models.testing import random_episodes
from cmml.models.training import build_model
from cmml.schemas.episodes import FeatureSpec

# vocabulary sizes of the ML-1M protocol's features
BENCH_SPECS = (
    FeatureSpec("gender", "user", "categorical", 3),
    FeatureSpec("age", "user", "categorical", 8),
    FeatureSpec("occupation", "user", "categorical", 22),
    FeatureSpec("zip", "user", "categorical", 3403),
    FeatureSpec("item_id", "item", "categorical", 3586),
    FeatureSpec("rated", "item", "categorical", 7),
    FeatureSpec("genres", "item", "multi", 26, max_len=6),
    FeatureSpec("directors", "item", "multi", 2186, max_len=4),
    FeatureSpec("actors", "item", "multi", 8030, max_len=4),
)
# the architecture of the shipped model (pipeline/configs/default.yaml, as users-v1.yaml trains it on ML-1M), here
# on all nine bench features (the configs leave out zip)
USERS_V1 = CMMLConfig(
    encoder="mean", hybrid="mlp", embedding_dim=16, item_bias=True, support_bias=True, residual_labels=True
)
CONFIGS = {
    "paper (GRU + dot + FiLM)": CMMLConfig(),
    "Soft-M (GRU + dot + soft routing)": CMMLConfig(modulation="soft"),
    "mean encoder + dot + FiLM": CMMLConfig(encoder="mean"),
    "users-v1 (mean + MLP hybrid + FiLM, biases, emb 16)": USERS_V1,
}


def _timeit(fn, repeats: int) -> np.ndarray:
    for _ in range(10):
        fn()
    times = np.empty(repeats)
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        times[k] = time.perf_counter() - t0
    return times * 1e3


def run(support: int = 64, query: int = 100, repeats: int = 200, batches=(1, 32)) -> list[dict]:
    rows = []
    for name, cfg in CONFIGS.items():
        tf.keras.utils.set_random_seed(0)
        model = build_model("cmml", BENCH_SPECS, "user", cfg.to_dict())
        with tempfile.TemporaryDirectory() as tmp:
            for b in batches:
                episodes = random_episodes(BENCH_SPECS, tasks=b, support=support, query=query, ragged=False, seed=b)
                feats = {k: tf.constant(v) for k, v in episodes.items() if k != "query_label"}
                if b == batches[0]:
                    model(feats)
                    export_saved_model(model, f"{tmp}/m")
                    serving = tf.saved_model.load(f"{tmp}/m").signatures["serving_default"]
                compiled = tf.function(lambda f, m=model: m(f, training=False))
                calls = (
                    ("in process", lambda c=compiled, f=feats: c(f)),
                    ("SavedModel", lambda s=serving, f=feats: s(**f)),
                )
                for where, fn in calls:
                    ms = _timeit(fn, repeats if b == 1 else max(20, repeats // 4))
                    rows.append(
                        {
                            "config": name,
                            "where": where,
                            "tasks": b,
                            "median_ms": float(np.median(ms)),
                            "p99_ms": float(np.percentile(ms, 99)),
                            "per_task_ms": float(np.median(ms) / b),
                        }
                    )
                    print(
                        f"{name:38s} {where:11s} B={b:3d}: median {np.median(ms):7.3f} ms, "
                        f"p99 {np.percentile(ms, 99):7.3f} ms, per task {np.median(ms) / b:7.3f} ms",
                        flush=True,
                    )
    return rows


def markdown(rows: list[dict], support: int, query: int) -> str:
    lines = [
        f"Support {support}, query {query} per task; median and p99 per call over repeated calls; "
        "per task = median / tasks.",
        "",
        "| configuration | where | tasks per call | median per call (ms) | p99 per call (ms) | per task (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['where']} | {r['tasks']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['per_task_ms']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--support", type=int, default=64)
    p.add_argument("--query", type=int, default=100)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    rows = run(args.support, args.query, args.repeats)
    print()
    print(markdown(rows, args.support, args.query))


if __name__ == "__main__":
    main()
