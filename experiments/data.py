"""A suite's data: TaskGen records made by the pipeline's own data path, their counts, the protocol check.

The records come from ``cmml.pipeline.runner.run_local(config, output, data_only=True)``
(LogExampleGen → validation → Transform → TaskGen, with TFX caching, so a rerun reuses them);
:class:`Data` reads them through the training API's :class:`~cmml.models.training.TaskData`, so
every model of a table trains, validates and is scored on the Evaluator's episodes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import tensorflow as tf

from cmml.experiments.suites import ExperimentError, Suite, check_data
from cmml.models import episodes, evaluation
from cmml.models.training import TaskData, TrainingConfig
from cmml.schemas import tasks as T

Log = Callable[[str], None]


def prepare_tasks(
    suite: Suite, cache_dir: str | os.PathLike, log: Log = print, beam: Mapping[str, Any] | None = None
) -> str:
    """Runs the data part of the pipeline (cached) and returns TaskGen's output folder."""
    from cmml.pipeline.runner import run_local

    check_data(suite)
    config = suite.pipeline_config(beam)
    output = str(Path(cache_dir).resolve() / (suite.cache or suite.name))
    start = time.time()
    log(f"[{suite.name}] data: LogExampleGen -> validation -> Transform -> TaskGen into {output} (TFX cache)")
    summary = run_local(config, output, data_only=True, progress=None)  # warnings only
    root = taskgen_output(output, summary.pipeline)
    log(f"[{suite.name}] data ready in {time.time() - start:.0f} s: {root}")
    return root


def taskgen_output(output_dir: str, pipeline_name: str) -> str:
    """TaskGen's tasks artifact of the newest run of ``pipeline_name`` (newest TaskGen artifact as a fallback)."""
    from cmml.pipeline.pipeline import metadata_path
    from cmml.pipeline.runs import newest_run, open_store

    store = open_store(output_dir)
    newest = newest_run(store, pipeline_name)
    candidates = [a for a in store.get_artifacts_by_context(newest.id) if "/TaskGen/" in a.uri] if newest else []
    if not candidates:
        candidates = [a for a in store.get_artifacts_by_type("Examples") if "/TaskGen/" in a.uri]
    candidates = [a for a in candidates if os.path.isdir(a.uri)]
    if not candidates:
        raise ExperimentError(f"no TaskGen output recorded in {metadata_path(output_dir)}")
    uri = max(candidates, key=lambda a: a.id).uri
    return uri if os.path.isabs(uri) else os.path.join(os.getcwd(), uri)


def task_counts(root: str) -> dict[str, int]:
    """Tasks per split, from TaskGen's ``tasks.tsv``."""
    counts: dict[str, int] = {}
    path = Path(root) / "tasks.tsv"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) > 1:
                    counts[parts[1]] = counts.get(parts[1], 0) + 1
    return counts


def task_rows(root: str) -> int:
    """Interactions in all tasks, from TaskGen's ``tasks.tsv``."""
    path = Path(root) / "tasks.tsv"
    if not path.exists():
        return 0
    with open(path, encoding="utf-8") as f:
        next(f, None)
        return sum(int(line.split("\t")[2]) for line in f if line.strip())


def user_record(root: str, user: str) -> dict[str, Any] | None:
    """One user's stored task (meta-test / meta-valid / meta-train): rows in protocol order, roles, raw item ids."""
    for split in T.SPLITS:
        try:
            files = episodes.task_files(root, split)
        except FileNotFoundError:
            continue
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz") else "")
        for batch in ds.batch(512):
            parsed = T.parse_task_records(batch)
            keys = [k.decode() for k in parsed[T.TASK_KEY].numpy()]
            if user in keys:
                i = keys.index(user)
                items = parsed[T.ITEM_RAW_ID][i].numpy()
                rows = parsed[T.ROW_ITEM][i].numpy()
                role = parsed[T.ROW_ROLE][i].numpy()
                label = parsed[T.ROW_LABEL][i].numpy()
                query = role == T.ROLE_QUERY
                return {
                    "user": user,
                    "split": split,
                    "ratings": int(len(rows)),
                    "query_movies": [items[r].decode() for r in rows[query]],
                    "query_ratings": [float(v) for v in label[query]],
                }
    return None


def check_users_v1(root: str, targets: Mapping[str, Any], log: Log = print) -> dict[str, Any]:
    """The users-v1 records against the reference file's check value and kept-user counts; raises on a mismatch."""
    counts = task_counts(root)
    result: dict[str, Any] = {"tasks": counts, "rows": task_rows(root)}
    expected = targets.get("check")
    if not expected:
        why = f"no check value in {targets['path']}" if targets.get("path") else "no reference figures file (--targets)"
        log(f"  protocol check skipped: {why}")
        result["status"] = f"skipped ({why})"
        return result
    found = user_record(root, expected["user"])
    result["found"] = found
    problems = []
    if found is None:
        problems.append(f"user {expected['user']} not in the records")
    else:
        for name in ("ratings", "query_movies", "query_ratings"):
            if found[name] != expected[name]:
                problems.append(f"{name}: records {found[name]} vs reference {expected[name]}")
        if found["split"] != "meta_test":
            problems.append(f"user {expected['user']} is {found['split']}, not meta_test")
    kept = targets.get("kept")
    if kept:
        users = sum(counts.values())
        if users != kept["users"] or result["rows"] != kept["ratings"]:
            problems.append(
                f"kept {users} users / {result['rows']} ratings vs reference {kept['users']} / {kept['ratings']}"
            )
    if problems:
        raise ExperimentError("the records do not follow protocol users-v1: " + "; ".join(problems))
    name = Path(targets["path"]).name
    result["status"] = f"matches {name}"
    log(
        f"  protocol check: user {expected['user']} has {found['ratings']} ratings, "
        f"query movies {found['query_movies']}, query ratings {[int(r) for r in found['query_ratings']]} "
        f"— matches {name}; "
        f"{sum(counts.values())} users, {result['rows']} ratings"
    )
    return result


class Data(TaskData):
    """A table's TaskGen records: the training API's :class:`TaskData` (training episodes, meta_valid,
    meta_test), the episode sizes of the suite, the rating range, and the floors' fit batches."""

    def __init__(self, root: str, setting: str, episode_sizes: Mapping[str, Any], rating_range: Sequence[float] | None):
        super().__init__(root, setting)
        self.episodes = dict(episode_sizes)
        self.clip = tuple(rating_range) if (rating_range and setting == "user") else None

    def training_config(self, training: Mapping[str, Any], seed: int) -> TrainingConfig:
        """The suite's episode sizes with a model's training block, at ``seed``."""
        return TrainingConfig.from_dict({**self.episodes, **dict(training), "seed": seed})

    def fit_batches(self) -> Iterator[Mapping[str, Any]]:
        """Every meta-train interaction once, for the floors (user setting: the meta_train pool as fixed
        episodes + the meta_valid users; scenario: one epoch of training episodes, seed 0)."""
        if self.setting == "user":
            yield from episodes.evaluation_episodes(
                self.root, self.specs, setting="user", split="meta_train", batch_size=256, pool_query_size=10
            ).as_numpy_iterator()
            try:
                yield from self.valid.as_numpy_iterator()
            except FileNotFoundError:
                return
        else:
            yield from self.training(TrainingConfig(batch_tasks=32), seed=0)(0).as_numpy_iterator()

    def evaluate(self, predict: Callable[[Mapping[str, Any]], Any], batches=None) -> dict[str, float]:
        """The Evaluator's metrics of ``predict`` on meta_test (or on ``batches``)."""
        summary, _ = evaluation.evaluate_episodes(
            predict, batches if batches is not None else self.test_batches(), self.setting, self.clip
        )
        return {k: float(v) for k, v in summary.items()}
