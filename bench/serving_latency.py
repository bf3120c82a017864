"""Serving latency and throughput: CMML through TF Serving's API versus MeLU adapted client side.

    python -m bench.serving_latency [--support 64 --query 100 --requests 500 --concurrency 4]

One task of ``--support`` interactions and ``--query`` candidates, the feature set of the ML-1M
protocol (``bench.model_latency.BENCH_SPECS``), the shipped CMML model (``--model users-v1``, the default)
or the paper's (``--model paper``: GRU + dot + FiLM) with random weights, exported and pushed with
warm-up records. The server is the in-repo test double in its own process
(``python -m cmml.serving.cli serve``; NOT TensorFlow Serving), the client this process, over loopback. Rows:

  (a) ``serving_default``: support set + candidates in one call (adapt + score);
  (b) ``score`` only, with the context cached by the caller (the two-stage path), plus the
      calls that fill and refresh the cache (``encode_context``, ``update_context``);
  (c) MeLU with 5 inner SGD steps (``cmml.models.maml``, ``MAMLConfig.melu(5)``) adapting and
      scoring the same task in the client process: what a gradient meta-learner needs instead of
      a model server, since TF Serving cannot take gradient steps.

Latencies are per request from a client that waits for each answer (p50/p99 over ``--requests``
after a warm-up); requests/s is that client's rate, and for (a) also with ``--concurrency``
clients. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

MELU_STEPS = 5


def _timeit(fn: Callable[[], object], requests: int, warmup: int = 20) -> tuple[np.ndarray, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(requests)
    start = time.perf_counter()
    for k in range(requests):
        t0 = time.perf_counter()
        fn()
        times[k] = time.perf_counter() - t0
    return times * 1e3, requests / (time.perf_counter() - start)


def _concurrent(make_call: Callable[[], Callable[[], object]], clients: int, requests: int) -> tuple[np.ndarray, float]:
    """``clients`` threads, each with its own client, ``requests`` calls in all."""
    calls = [make_call() for _ in range(clients)]
    for call in calls:
        call()
    per = requests // clients
    times: list[float] = []
    lock = threading.Lock()

    def run(call):
        local = []
        for _ in range(per):
            t0 = time.perf_counter()
            call()
            local.append(time.perf_counter() - t0)
        with lock:
            times.extend(local)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(times) * 1e3, len(times) / (time.perf_counter() - start)


def _row(path: str, how: str, transport: str, concurrency: int, times: np.ndarray, rate: float) -> dict:
    return {
        "path": path,
        "how": how,
        "transport": transport,
        "concurrency": concurrency,
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
        "rate": rate,
    }


def _melu(episodes: dict):
    """MeLU-5 adapt + score, compiled, in this (the client's) process; or the reason it is not available."""
    try:
        from cmml.models.maml import MAMLConfig, MAMLModel
    except ImportError as exc:
        return None, f"cmml.models.maml is not available ({exc})"
    import tensorflow as tf

    from bench.model_latency import BENCH_SPECS

    tf.keras.utils.set_random_seed(0)
    model = MAMLModel(BENCH_SPECS, MAMLConfig.melu(steps=MELU_STEPS))
    features = {k: tf.constant(v) for k, v in episodes.items() if k != "query_label"}
    model(features)
    infer = tf.function(model.adapt_and_score, autograph=False)
    return (lambda: infer(features).numpy()), ""


def run(
    support: int = 64, query: int = 100, requests: int = 500, concurrency: int = 4, model_name: str = "users-v1"
) -> tuple[list[dict], list[str]]:
    import tensorflow as tf

    import cmml  # noqa: F401
    from bench.model_latency import BENCH_SPECS, USERS_V1
    from cmml.models.config import CMMLConfig
    from cmml.models.testing import random_episodes
    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.layout import install_version
    from cmml.serving.rest_client import RestClient
    from cmml.serving.testing import DoubleProcess, export_cmml_model, serving_inputs
    from cmml.serving.warmup import canned_requests, write_warmup_requests

    episodes = random_episodes(BENCH_SPECS, tasks=1, support=support, query=query, ragged=False, seed=1)
    notes: list[str] = []
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = {"paper": CMMLConfig(), "users-v1": USERS_V1}[model_name]
        notes.append(f"model: {model_name} ({config.encoder} encoder, {config.hybrid} hybrid, {config.modulation})")
        model, export_dir = export_cmml_model(Path(tmp) / "export", BENCH_SPECS, config, seed=0, episodes=episodes)
        write_warmup_requests(export_dir, canned_requests(export_dir, episodes))
        install_version(export_dir, Path(tmp) / "models" / "cmml")
        full = serving_inputs(episodes, "serving_default")
        support_only = serving_inputs(episodes, "encode_context")

        loaded = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        tensors = {k: tf.constant(v) for k, v in full.items()}
        rows.append(
            _row(
                "(a) serving_default",
                "SavedModel called in process (no server), for reference",
                "-",
                1,
                *_timeit(lambda: loaded(**tensors), requests),
            )
        )

        with DoubleProcess(Path(tmp) / "models" / "cmml", "cmml", poll_seconds=0) as double:
            with GrpcClient(double.grpc_target, "cmml") as g, RestClient(double.rest_url, "cmml") as r:
                for transport, client in (("gRPC", g), ("REST", r)):
                    rows.append(
                        _row(
                            "(a) serving_default",
                            f"{support} support + {query} candidates, one call",
                            transport,
                            1,
                            *_timeit(lambda c=client: c.predict(full), requests),
                        )
                    )
                rows.append(
                    _row(
                        "(a) serving_default",
                        f"{support} support + {query} candidates, one call",
                        "gRPC",
                        concurrency,
                        *_concurrent(
                            lambda: (lambda c: lambda: c.predict(full))(GrpcClient(double.grpc_target, "cmml")),
                            concurrency,
                            requests,
                        ),
                    )
                )
                enc = g.predict(support_only, "encode_context").outputs
                scored = serving_inputs(episodes, "score", context=enc["context"])
                new = serving_inputs(
                    {k: v[:, :1] for k, v in episodes.items() if k.startswith("support_")},
                    "update_context",
                    state=enc["state"],
                )
                for transport, client in (("gRPC", g), ("REST", r)):
                    rows.append(
                        _row(
                            "(b) score",
                            f"cached context + {query} candidates",
                            transport,
                            1,
                            *_timeit(lambda c=client: c.predict(scored, "score"), requests),
                        )
                    )
                rows.append(
                    _row(
                        "(b) encode_context",
                        f"{support} support, once per user / scenario",
                        "gRPC",
                        1,
                        *_timeit(lambda: g.predict(support_only, "encode_context"), requests),
                    )
                )
                rows.append(
                    _row(
                        "(b) update_context",
                        "cached state + 1 new interaction",
                        "gRPC",
                        1,
                        *_timeit(lambda: g.predict(new, "update_context"), requests),
                    )
                )
            notes.append(f"server: {double.ready_line}")

    melu, why = _melu(episodes)
    if melu is None:
        notes.append(f"(c) MeLU-{MELU_STEPS} not measured: {why}")
    else:
        rows.append(
            _row(
                f"(c) MeLU-{MELU_STEPS}",
                f"{MELU_STEPS} SGD steps on {support} support, then {query} candidates, compiled, in the client",
                "- (no server)",
                1,
                *_timeit(melu, requests),
            )
        )
    return rows, notes


def markdown(
    rows: list[dict], notes: list[str], command: str, load: tuple[tuple[float, ...], tuple[float, ...]]
) -> str:
    lines = [
        f"Command: `{command}`",
        f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load[0])} at the start, "
        f"{'/'.join(f'{x:.2f}' for x in load[1])} at the end.",
        "",
        "| path | what one request does | transport | clients | p50 (ms) | p99 (ms) | requests/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['how']} | {r['transport']} | {r['concurrency']} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['rate']:.0f} |"
        )
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--support", type=int, default=64)
    p.add_argument("--query", type=int, default=100)
    p.add_argument("--requests", type=int, default=500, help="timed requests per row (after 20 warm-up requests)")
    p.add_argument("--concurrency", type=int, default=4, help="client threads for the concurrent serving_default row")
    p.add_argument(
        "--model",
        choices=("users-v1", "paper"),
        default="users-v1",
        help="CMML configuration: the shipped one (default.yaml's model, as users-v1.yaml trains it) or the paper's "
        "(GRU + dot + FiLM)",
    )
    args = p.parse_args()
    start_load = os.getloadavg()
    rows, notes = run(args.support, args.query, args.requests, args.concurrency, args.model)
    command = (
        f"python -m bench.serving_latency --support {args.support} --query {args.query} --requests {args.requests} "
        f"--concurrency {args.concurrency} --model {args.model}"
    )
    print(markdown(rows, notes, command, (start_load, os.getloadavg())))


if __name__ == "__main__":
    main()
