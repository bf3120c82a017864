"""Latency of ``recommend`` (top-k of the whole catalog) on a model the pipeline pushed.

    python -m bench.recommend_latency --model_base_path /tmp/run/serving/cmml --data ../shared/data/ml-1m-partial \\
        [--requests 500 --support 20 --k 10 --users 200]

Serves the pushed model with the test double in its own process (``cmml serve``; NOT TensorFlow
Serving) and calls ``recommend`` over gRPC from this process, one request at a time, each for one
user of the dataset: the user's first ``--support`` rated items (log order) and their ratings as
the support set, the user unknown to the model (``user_id`` ``""``, no attributes). Prints p50 /
p99 latency, requests/s, the catalog size, N (the candidates CMML re-ranks when the model has a
retrieval stage, else null), the SavedModel's size and the double's load time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _tasks(data: str, users: int, support: int, seed: int) -> list[tuple[list[str], list[float]]]:
    from cmml.data import open_dataset

    log = open_dataset(data).read_interactions().table
    order = np.argsort(np.asarray(log.column("user_id").to_pylist(), dtype=object), kind="stable")
    user = np.asarray(log.column("user_id").to_pylist(), dtype=object)[order]
    item = np.asarray(log.column("item_id").to_pylist(), dtype=object)[order]
    label = log.column("label").to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)]
    eligible = [(s, e) for s, e in zip(starts, ends) if e - s > support]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(eligible), size=min(users, len(eligible)), replace=False)
    return [
        ([str(i) for i in item[s : s + support]], [float(x) for x in label[s : s + support]])
        for s, _ in (eligible[p] for p in picked)
    ]


def _catalog_and_index(model_dir: Path) -> tuple[int, int | None]:
    """(catalog items, catalog rows of the retrieval index or None) from the SavedModel's variables."""
    import tensorflow as tf

    shapes = tf.train.load_checkpoint(str(model_dir / "variables" / "variables")).get_variable_to_shape_map()
    catalog = shapes["catalog/keys/.ATTRIBUTES/VARIABLE_VALUE"][0]
    index = shapes.get("retrieval_index/candidates/.ATTRIBUTES/VARIABLE_VALUE")
    return int(catalog), None if index is None else int(index[0])


def run(model_base_path: str, data: str, requests: int, support: int, k: int, users: int, seed: int = 0) -> dict:
    from tensorflow.core.framework import types_pb2

    from cmml.serving.grpc_client import GrpcClient
    from cmml.serving.tensors import numpy_dtype
    from cmml.serving.testing import DoubleProcess

    base = Path(model_base_path)
    version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    size_mib = sum(f.stat().st_size for f in version.rglob("*") if f.is_file()) / 2**20
    tasks = _tasks(data, users, support, seed)
    t0 = time.perf_counter()
    with DoubleProcess(base, "cmml", poll_seconds=0) as double:
        load_seconds = time.perf_counter() - t0
        with GrpcClient(double.grpc_target, "cmml", timeout=60) as client:
            _, signatures = client.metadata()
            sig = signatures["recommend"]

            def request(items: list[str], ratings: list[float]) -> dict:
                inputs = {
                    "support_item_id": np.array([[i.encode() for i in items]], dtype=object),
                    "support_label": np.array([ratings], dtype=np.float32),
                    "k": np.array([k], dtype=np.int32),
                }
                for name, spec in sig.inputs.items():
                    if name not in inputs:  # user_id and user attributes: a new, unknown user
                        inputs[name] = (
                            np.array([b""], dtype=object)
                            if spec.dtype == types_pb2.DT_STRING
                            else np.zeros([1], dtype=numpy_dtype(spec.dtype))
                        )
                return inputs

            batches = [request(*tasks[n % len(tasks)]) for n in range(requests + 20)]
            for inputs in batches[:20]:
                client.predict(inputs, "recommend")
            times = np.empty(requests)
            start = time.perf_counter()
            for n, inputs in enumerate(batches[20:]):
                t = time.perf_counter()
                out = client.predict(inputs, "recommend")
                times[n] = time.perf_counter() - t
            rate = requests / (time.perf_counter() - start)
            everything = client.predict({**batches[0], "k": np.array([2**31 - 1], np.int32)}, "recommend")
            ranked = int(everything.outputs["item_id"].shape[1])  # k is cut to the catalog size, or to N
    catalog, candidates = _catalog_and_index(version)
    ms = times * 1e3
    return {
        "model": str(version),
        "saved_model_mib": round(size_mib, 1),
        "double_load_seconds": round(load_seconds, 1),
        "catalog_items": catalog,
        "candidates": candidates if candidates is None else ranked,
        "support": support,
        "k": k,
        "requests": requests,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "requests_per_second": round(rate, 1),
        "top_example": [x.decode() for x in out.outputs["item_id"][0]],
        "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_base_path", required=True, help="<serving base>/<model name>: numbered versions inside")
    p.add_argument("--data", required=True, help="the dataset the model was trained on (users' rated items)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--support", type=int, default=20)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--users", type=int, default=200)
    args = p.parse_args()
    print(json.dumps(run(args.model_base_path, args.data, args.requests, args.support, args.k, args.users)))


if __name__ == "__main__":
    main()
