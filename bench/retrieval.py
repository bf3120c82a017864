"""The retrieval stage of ``recommend``: agreement with the exhaustive ranking, latency, size, load time.

    python -m bench.retrieval measure --model <Trainer model>/Format-Serving --tasks <TaskGen output> \\
        [--users 500 --batch 4 --seed 0] [--latency --data <dataset> --requests 1000]
    python -m bench.retrieval train --tasks <TaskGen output> --transform <Transform graph> \\
        --config pipeline/configs/users-v1.yaml --out DIR [--retrieval '{"min_catalog_size": 1000}']

``expand`` exports a Trainer's model with a larger catalog (its items, then copies under new ids).
``train`` runs the CMML Trainer's ``run_fn`` (CMML, then the retrieval stage, then the export) on
a finished pipeline run's TaskGen and Transform outputs, with the pipeline config's sections (the
``retrieval`` section overridden by ``--retrieval``): the Trainer's model without re-running the
data components. It writes ``DIR/Format-Serving`` and ``DIR/training_summary.json``.

**Agreement**: for meta-test users (``--split``; their stored support sets and ratings, the user named
by id), the share of the exhaustive top ``k`` — CMML's scores of every catalog item through the
id-only scoring signature (``serving_default`` on items by id; ``serve_ids`` in older exports), support items left
out — that ``recommend`` (retrieval stage, then CMML on its N candidates) returns. In this process,
from the SavedModel alone.

**Latency** (``--latency``): ``bench.recommend_latency`` (the model served by the test double,
``cmml serve``, in its own process; one gRPC request at a time). Also: SavedModel size, load time
in this process and in the double, catalog size and N. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> dict:
    """CPU model and load average (the bench shares the machine)."""
    name = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        pass
    return {"cpu": name, "cores": len(os.sched_getaffinity(0)), "load_average": [round(x, 2) for x in os.getloadavg()]}


def support_sets(task_root: str, split: str, users: int, seed: int) -> list[dict]:
    """Stored support sets of a split's user tasks: ``{"user_id", "items", "ratings"}`` (raw ids), a
    seeded sample of ``users`` tasks."""
    import tensorflow as tf

    from cmml.models.episodes import task_files
    from cmml.schemas import tasks as T

    out = []
    for serialized in tf.data.TFRecordDataset(task_files(task_root, split), compression_type="GZIP").batch(256):
        parsed = T.parse_task_records(serialized)
        role, item, label = (parsed[k].to_list() for k in (T.ROW_ROLE, T.ROW_ITEM, T.ROW_LABEL))
        raw_items, raw_users = parsed[T.ITEM_RAW_ID].to_list(), parsed[T.USER_RAW_ID].to_list()
        for b in range(len(role)):
            rows = [r for r, x in enumerate(role[b]) if x == T.ROLE_SUPPORT]
            out.append(
                {
                    "user_id": raw_users[b][0] if raw_users[b] else b"",
                    "items": [raw_items[b][item[b][r]] for r in rows],
                    "ratings": [float(label[b][r]) for r in rows],
                }
            )
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(out), size=min(users, len(out)), replace=False)
    return [out[p] for p in sorted(picked)]


def _inputs(signature, tasks: list[dict]) -> dict:
    """A request for ``tasks`` (support items and ratings, "" pads; the user by id, no attributes)."""
    import tensorflow as tf

    width = max(len(t["items"]) for t in tasks)
    out = {
        "support_item_id": tf.constant([t["items"] + [b""] * (width - len(t["items"])) for t in tasks]),
        "support_label": tf.constant([t["ratings"] + [0.0] * (width - len(t["ratings"])) for t in tasks], tf.float32),
    }
    for name, spec in signature.structured_input_signature[1].items():
        if name == "user_id":
            out[name] = tf.constant([t["user_id"] for t in tasks])
        elif name.startswith("user_"):  # attributes: unknown (a known user's come from the user table)
            out[name] = (
                tf.zeros([len(tasks)], spec.dtype) if spec.dtype != tf.string else tf.constant([b""] * len(tasks))
            )
    return out


def agreement(model_dir: str, task_root: str, split: str, users: int, batch: int, k: int, seed: int) -> dict:
    """Two-stage top ``k`` (``recommend``) against the exhaustive top ``k`` on the split's users."""
    import tensorflow as tf

    t0 = time.perf_counter()
    loaded = tf.saved_model.load(model_dir)
    load_seconds = time.perf_counter() - t0
    fns = loaded.signatures
    # the id-only scoring signature: serving_default on items by id (serve_ids in older exports)
    score_name = "serve_ids" if "serve_ids" in fns else "serving_default"
    score = fns[score_name]
    if "query_item_id" not in score.structured_input_signature[1]:
        raise SystemExit(f"{model_dir}: no signature scores items named by id")
    keys = loaded.catalog.keys.numpy()
    n = len(keys)
    tasks = support_sets(task_root, split, users, seed)
    found, both, times = [], [], []
    for start in range(0, len(tasks), batch):
        part = tasks[start : start + batch]
        inputs = _inputs(fns["recommend"], part)
        t = time.perf_counter()
        two = fns["recommend"](**inputs, k=tf.fill(tf.shape(inputs["support_label"])[:1], k))["item_id"].numpy()
        times.append(time.perf_counter() - t)
        everything = tf.constant(np.broadcast_to(keys[None], (len(part), n)))
        scores = score(**_inputs(score, part), query_item_id=everything)["scores"].numpy()
        for b, task in enumerate(part):
            seen = set(task["items"])
            order = np.argsort(-scores[b], kind="stable")
            exhaustive = [keys[r] for r in order[: k + len(seen)] if keys[r] not in seen][:k]
            hits = len(set(exhaustive) & set(two[b]))
            found.append(hits / k)
            both.append(hits == k)
    return {
        "model": model_dir,
        "split": split,
        "users": len(tasks),
        "catalog_items": n,
        "k": k,
        "agreement": round(float(np.mean(found)), 4),
        "agreement_p10": round(float(np.percentile(found, 10)), 4),
        "users_with_identical_top_k": round(float(np.mean(both)), 4),
        "load_seconds_in_process": round(load_seconds, 1),
        "recommend_ms_per_batch_in_process": round(1e3 * float(np.median(times)), 1),
        "batch": batch,
        "retrieval": _training_summary(model_dir),
    }


def _training_summary(model_dir: str) -> dict | None:
    """The Trainer's retrieval figures (training_summary.json beside Format-Serving), if any."""
    path = Path(model_dir).parent / "training_summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text()).get("retrieval")
    if summary:
        summary = {k: v for k, v in summary.items() if k != "history"}
    return summary


def latency(model_dir: str, data: str, requests: int, support: int, k: int, users: int) -> dict:
    """bench.recommend_latency on the model (a model base path with the model as version 1)."""
    from bench import recommend_latency

    base = Path(tempfile.mkdtemp(prefix="retrieval-bench-")) / "cmml"
    base.mkdir()
    (base / "1").symlink_to(Path(model_dir).resolve(), target_is_directory=True)
    try:
        return recommend_latency.run(str(base), data, requests, support, k, users)
    finally:
        shutil.rmtree(base.parent)


def train(config: str | None, tasks: str, transform: str, out: str, retrieval: dict) -> str:
    """The CMML Trainer's run_fn on a pipeline run's TaskGen and Transform outputs (the custom_config
    the pipeline gives it); returns the Format-Serving path."""
    from types import SimpleNamespace

    from cmml.components import trainer
    from cmml.pipeline.config import load_config
    from cmml.schemas import tasks as T

    cfg = load_config(config, {"retrieval": retrieval})
    setting = cfg.task_setting
    fn_args = SimpleNamespace(
        custom_config={
            "kind": "cmml",
            "setting": setting,
            "model": cfg.model,
            "training": cfg.training,
            "rating_range": cfg.evaluation.get("rating_range") if setting == "user" else None,
            "retrieval": cfg.retrieval,
        },
        train_files=[T.split_pattern(tasks, "meta_train")],
        serving_model_dir=os.path.join(out, "Format-Serving"),
        model_run_dir=os.path.join(out, "model_run"),
        transform_output=transform,
    )
    trainer.run_fn(fn_args)
    return fn_args.serving_model_dir


def expand(config: str | None, trainer_model: str, tasks: str, transform: str, items: int, out: str) -> str:
    """A Trainer's CMML model (and retrieval stage, if any) exported with a catalog of ``items`` items: the
    TaskGen catalog's rows, then copies of them under new ids (``x<row>``: ids the Transform never
    saw, so each falls into an item_id OOV bucket and keeps its copy's attributes) — what a catalog
    refresh with new items gives. The index is computed at export through the trained candidate tower.
    Returns the Format-Serving path."""
    import numpy as np
    import tensorflow as tf

    from cmml.models import retrieval as R
    from cmml.models import training
    from cmml.models.export import CatalogTable, export_by_id
    from cmml.models.raw_inputs import raw_serving_inputs
    from cmml.pipeline.config import load_config
    from cmml.schemas import tasks as T

    cfg = load_config(config)
    data = training.TaskData(tasks, cfg.task_setting)
    model = training.build_model("cmml", data.specs, data.setting, training.available_features(cfg.model, data.specs))
    training.build_variables(model, data.training(training.TrainingConfig.from_dict(cfg.training), 0)(0))
    summary = json.loads((Path(trainer_model) / "training_summary.json").read_text()).get("retrieval")
    served = str(Path(trainer_model) / "Format-Serving")
    loaded = tf.saved_model.load(served)
    stage = None  # a model ranking by its relevance head has none: recommend scores every item
    if hasattr(loaded, "retrieval_description"):
        stage = R.rebuild_stage(json.loads(loaded.retrieval_description.numpy()), model)
    parts = {"model": model, **({"retrieval": stage} if stage is not None else {})}
    tf.train.Checkpoint(**parts).read(
        str(Path(served) / "variables" / "variables")
    ).expect_partial().assert_existing_objects_matched()

    keys, features = T.read_catalog(T.catalog_path(tasks, "item"))
    n = len(keys)
    copies = np.arange(items) % n
    new_keys = list(keys) + [f"x{r}".encode() for r in range(n, items)]
    catalog = CatalogTable("item", new_keys, {name: value[copies] for name, value in features.items()})
    user_keys, user_features = T.read_catalog(T.catalog_path(tasks, "user"))
    raw = raw_serving_inputs(transform, model)
    path = os.path.join(out, "Format-Serving")
    export_by_id(model, path, raw, catalog, CatalogTable("user", user_keys, user_features), stage)
    (Path(out) / "training_summary.json").write_text(json.dumps({"retrieval": summary} if summary else {}, indent=1))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="the CMML Trainer's run_fn on a pipeline run's outputs")
    t.add_argument("--tasks", required=True, help="TaskGen output")
    t.add_argument("--transform", required=True, help="Transform graph output")
    t.add_argument("--config", help="pipeline config file (merged over the default)")
    t.add_argument("--retrieval", default="{}", help="JSON: retrieval config keys overridden")
    t.add_argument("--out", required=True)
    x = sub.add_parser("expand", help="a Trainer's model exported with a larger catalog (copies of its items)")
    x.add_argument("--model", required=True, help="the Trainer's model folder (Format-Serving, training_summary.json)")
    x.add_argument("--tasks", required=True, help="TaskGen output")
    x.add_argument("--transform", required=True, help="Transform graph output")
    x.add_argument("--config", help="pipeline config file of the run")
    x.add_argument("--items", type=int, required=True)
    x.add_argument("--out", required=True)
    m = sub.add_parser("measure", help="agreement, latency, size, load time")
    m.add_argument("--model", required=True, help="a Format-Serving SavedModel")
    m.add_argument("--tasks", help="the TaskGen output the model was trained on (agreement on --split users)")
    m.add_argument("--split", default="meta_test")
    m.add_argument("--users", type=int, default=500)
    m.add_argument("--batch", type=int, default=4, help="users per call in the agreement run")
    m.add_argument("--k", type=int, default=10)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--latency", action="store_true", help="also recommend's latency through the gRPC double")
    m.add_argument("--data", help="--latency: the dataset (users' rated items as support sets)")
    m.add_argument("--requests", type=int, default=1000)
    m.add_argument("--support", type=int, default=20)
    args = parser.parse_args()
    if args.command == "train":
        print(train(args.config, args.tasks, args.transform, args.out, json.loads(args.retrieval)))
        return
    if args.command == "expand":
        print(expand(args.config, args.model, args.tasks, args.transform, args.items, args.out))
        return
    if args.latency and not args.data:
        m.error("--latency needs --data")
    out = {"machine_before": machine()}
    size = sum(f.stat().st_size for f in Path(args.model).rglob("*") if f.is_file())
    out["saved_model_mib"] = round(size / 2**20, 1)
    if args.tasks:
        out["agreement"] = agreement(args.model, args.tasks, args.split, args.users, args.batch, args.k, args.seed)
    if args.latency:
        out["latency"] = latency(args.model, args.data, args.requests, args.support, args.k, users=200)
    out["machine_after"] = machine()
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
