"""Full-catalog ranking for cold users: the metric a deployment's ``recommend`` is judged by.

For every cold user (a meta-test task of a user suite), each ranker scores the **whole item catalog**
(the table TaskGen writes beside the records, the one the SavedModel's ``recommend`` ranks); the
task's support items are left out, and Recall@K / NDCG@K (K = 10, 20) score the task's held-out
**liked** items: its query rows rated ≥ 4. Recall@K = liked items in the top K / liked items;
NDCG@K with gain 1 for a liked item (``cmml.models.metrics``, ties pessimistic: a tie never helps a
liked item). Tasks without a liked query item are left out of the averages (their count is recorded).

Rankers are callables ``(TaskBatch) -> scores [B, n_items]`` (higher first; ``-inf`` = not proposed,
so a two-stage ranker that scores only its N candidates plugs in unchanged: :class:`TwoStageRanker`
wraps a retrieval ranker and a re-ranker, and ``Options.cmml_rankers`` adds rows scored with each
trained CMML model, e.g. ``{"CMML two-stage": lambda model, catalog, exhaustive:
TwoStageRanker(retrieval, exhaustive, 200)}``):

* **CMML exhaustive** (:class:`CMMLCatalogRanker`): the trained model scores every catalog item from
  the task's context, exactly as the exported ``recommend`` signature does
  (``models/export.py``: catalog item embeddings and baselines computed once, then
  ``CMMLModel.encode_context`` + ``score_rows`` per batch of tasks);
  :func:`check_against_recommend` compares it with the exported signature itself.
* **DCN** (:class:`EpisodeModelRanker`): the pipeline's baseline scoring the catalog as its query set.
* **bias model**, **ItemPop** (:class:`FloorRanker`): the floors of ``models/simple.py`` scoring the
  catalog. The bias model's user offset b_u is one constant per task, so its ranking is the shrunk
  item mean's (b_i); it is scored unclipped (clipping to [1, 5] would only add ties).
* **EASE** (:class:`EASE`, Steck 2019): B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, zero diagonal;
  a task's row is its support set.
* **ALS** (:class:`ALS`): ``implicit``'s AlternatingLeastSquares; a cold user's factors are folded in
  from the support set by ``recommend(..., recalculate_user=True)``.

Choices are made on **meta_valid** only: the classic baselines' hyper-parameters by meta_valid
Recall@20 with the baselines fitted on the meta-train pool (meta_valid users are then cold too);
CMML and DCN train by :func:`cmml.models.training.train` (the path of ``cmml run`` / ``cmml
experiment``: the suites' rows, early stopping on meta_valid). For meta_test, the classic baselines
are refitted on every meta-train interaction (the meta-train pool and the meta_valid users, as the
floors of ``cmml experiment`` use) with the chosen settings.

Results go to ``docs/results/full-catalog.json`` (written after every run, so an interrupted run
resumes with ``--resume``) and the section "Full-catalog ranking (cold users)" of RESULTS.md.

    cmml full-catalog --suite users-v1 [--seeds 5] [--models ...] [--resume]
    python -m cmml.experiments.full_catalog --suite users-v1 ml-100k-users
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.experiments import results
from cmml.experiments.sections import write_section
from cmml.experiments.suites import ExperimentError, ModelSpec, Suite
from cmml.models import episodes, simple
from cmml.models import metrics as M
from cmml.models.cmml import CMMLModel
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, FeatureSpec, key

Log = Callable[[str], None]
Batch = Mapping[str, np.ndarray]

LIKED = 4.0  # a query row rated at least this is a held-out liked item
KS = (10, 20)
METRICS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in KS)
SELECTION_METRIC = "recall@20"  # meta_valid figure every choice maximises
SECTION = "full-catalog"
JSON_NAME = "full-catalog.json"
EVAL_BATCH = 32  # tasks per scoring batch: CMML scores B × n_items rows at once
# the suites' rows the trained rankers come from (suites.yaml); the CMML row is users-v1's shipped configuration
CMML_ROW = ("users-v1", "CMML FiLM, users-v1.yaml training")
CMML_LISTWISE_ROW = ("users-v1", "CMML FiLM + listwise loss, users-v1.yaml training")
DCN_ROW = "DCN"
# hyper-parameter grids of the classic baselines, searched on meta_valid
# item shrinkage > 0: an item nobody rated has b_i = 0 / (0 + λ)
BIAS_GRID = {"item_shrinkage": (2.0, 10.0, 50.0, 250.0, 1000.0, 5000.0, 25000.0)}
EASE_GRID = {"l2": (50.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0), "min_rating": (1.0, LIKED)}
ALS_GRID = {
    "factors": (64, 128),
    "regularization": (3.0, 10.0, 30.0, 100.0),
    "alpha": (1.0, 3.0, 10.0),
    "iterations": (15,),
    "min_rating": (1.0, LIKED),
}


# --- the catalog and the tasks ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Catalog:
    """The item catalog of a TaskGen output, row r = the r-th item of ``catalog/items.npz``.

    ``keys [n]`` raw item ids; ``features`` feature name → ``[n]`` / ``[n, L]`` transformed values
    (what the episodes gather for an item, what ``recommend`` holds); ``row_of_item_id [V]`` maps a
    transformed ``item_id`` to its catalog row (−1: no row, or an id several rows share — an OOV
    bucket of items without interactions, which no support or query row can name).
    """

    keys: np.ndarray
    features: dict[str, np.ndarray]
    row_of_item_id: np.ndarray

    @property
    def size(self) -> int:
        return len(self.keys)

    @classmethod
    def from_records(cls, root: str, specs: Sequence[FeatureSpec]) -> Catalog:
        from cmml.schemas import tasks as T

        keys, _ = T.read_catalog(T.catalog_path(root, "item"))
        item_specs = [s for s in specs if s.side == "item"]
        if not any(s.name == "item_id" for s in item_specs):
            raise ExperimentError(f"the records of {root} have no item_id feature: catalog rows cannot be named")
        tables = episodes.catalog_tables(root, item_specs)  # row 0 = "not in the catalog"
        features = {name: values[1:] for name, values in tables.items()}
        return cls(keys, features, cls.index(features["item_id"]))

    @staticmethod
    def index(item_ids: np.ndarray) -> np.ndarray:
        """transformed item_id → catalog row, −1 for ids with no row or several rows."""
        ids = np.asarray(item_ids, np.int64)
        table = np.full(int(ids.max(initial=0)) + 2, -1, np.int64)
        counts = np.bincount(ids, minlength=len(table))
        unique = counts[ids] == 1
        table[ids[unique]] = np.flatnonzero(unique)
        table[0] = -1  # padding
        return table

    def rows(self, item_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Catalog rows ``[...]`` of the real rows (``mask`` > 0) of ``item_ids``, −1 at padding.

        Raises when a real row names an item without a catalog row.
        """
        ids = np.asarray(item_ids, np.int64)
        real = np.asarray(mask) > 0
        rows = np.where(
            ids < len(self.row_of_item_id), self.row_of_item_id[np.minimum(ids, len(self.row_of_item_id) - 1)], -1
        )
        if np.any(real & (rows < 0)):
            bad = np.unique(ids[real & (rows < 0)])[:5]
            raise ExperimentError(f"item ids {bad.tolist()} of the records have no row in the catalog")
        return np.where(real, rows, -1)


@dataclasses.dataclass
class TaskBatch:
    """What a ranker sees of a batch of B cold-start tasks: their support sets only.

    ``features``: the episode tensors of the support sets (``support_<feature>``, ``support_label``,
    ``support_mask``; ``[B, S]`` / ``[B, S, L]``); ``support_rows [B, S]``: catalog rows of the
    support items (−1 = padding); ``support_labels [B, S]``: their ratings.
    """

    features: dict[str, np.ndarray]
    support_rows: np.ndarray
    support_labels: np.ndarray

    @property
    def size(self) -> int:
        return len(self.support_rows)


@dataclasses.dataclass
class HeldOut:
    """The held-out query sets of a batch: catalog rows ``[B, Q]`` (−1 = padding) and ratings ``[B, Q]``."""

    rows: np.ndarray
    labels: np.ndarray


Ranker = Callable[[TaskBatch], np.ndarray]  # a batch of tasks -> scores [B, n_items], -inf = not proposed


def split_batch(batch: Batch, catalog: Catalog) -> tuple[TaskBatch, HeldOut]:
    """An evaluation episode batch → (what rankers see, the held-out query sets)."""
    support = {k: np.asarray(v) for k, v in batch.items() if k.startswith(SUPPORT + "_")}
    s_mask, q_mask = np.asarray(batch[key(SUPPORT, MASK)]), np.asarray(batch[key(QUERY, MASK)])
    task = TaskBatch(
        features=support,
        support_rows=catalog.rows(batch[key(SUPPORT, "item_id")], s_mask),
        support_labels=np.asarray(batch[key(SUPPORT, LABEL)], np.float32),
    )
    held = HeldOut(catalog.rows(batch[key(QUERY, "item_id")], q_mask), np.asarray(batch[key(QUERY, LABEL)]))
    return task, held


def task_batches(
    root: str, specs: Sequence[FeatureSpec], split: str, catalog: Catalog, batch_size: int = EVAL_BATCH
) -> list[tuple[TaskBatch, HeldOut]]:
    """The fixed episodes of ``split`` (meta_valid / meta_test: stored support and query rows), in memory."""
    ds = episodes.evaluation_episodes(root, specs, setting="user", split=split, batch_size=batch_size)
    return [split_batch(b, catalog) for b in ds.as_numpy_iterator()]


def pool_batches(root: str, specs: Sequence[FeatureSpec]) -> list[Batch]:
    """Every meta-train pool interaction once (the meta-train users without meta_valid), as fixed episodes."""
    ds = episodes.evaluation_episodes(
        root, specs, setting="user", split="meta_train", batch_size=256, pool_query_size=10
    )
    return list(ds.as_numpy_iterator())


# --- metrics -----------------------------------------------------------------------------------------------------
def support_matrix(rows: np.ndarray, labels: np.ndarray, n_items: int, min_rating: float = 1.0) -> np.ndarray:
    """One row per task ``[B, n_items]``: 1 at the catalog rows of its support items rated ≥ ``min_rating``."""
    out = np.zeros((len(rows), n_items), np.float32)
    keep = (rows >= 0) & (labels >= min_rating)
    task = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)
    out[task[keep], rows[keep]] = 1.0
    return out


def ranking_metrics(
    scores: np.ndarray, support_rows: np.ndarray, held: HeldOut, liked: float = LIKED, ks: Sequence[int] = KS
) -> dict[str, np.ndarray]:
    """Per-task Recall@K and NDCG@K ``{"recall@10": [B], ...}`` of full-catalog ``scores [B, n]``.

    The support items are left out of the ranking (masked: they rank after every other item and
    carry no gain); the relevant items are the held-out query rows rated ≥ ``liked`` (gain 1).
    NaN for a task without a liked query item.
    """
    scores = np.asarray(scores, np.float64)
    batch, n = scores.shape
    relevant = support_matrix(held.rows, held.labels, n, liked)
    mask = 1.0 - support_matrix(support_rows, np.zeros(support_rows.shape, np.float32), n, min_rating=0.0)
    if np.any((relevant > 0) & (mask == 0)):
        raise ValueError("a held-out query item is also in its task's support set")
    return M.per_task_metrics(scores, relevant, mask, rating=False, ndcg_ks=ks, recall_ns=ks, positive_threshold=0.5)


def evaluate_ranker(ranker: Ranker, batches: Sequence[tuple[TaskBatch, HeldOut]]) -> dict[str, Any]:
    """Mean Recall@K / NDCG@K of ``ranker`` over the tasks of ``batches`` (with their 95 % half-widths)."""
    per_task = M.concat(ranking_metrics(ranker(task), task.support_rows, held) for task, held in batches)
    summary: dict[str, Any] = M.summarize(per_task)
    summary["tasks"] = int(np.sum(~np.isnan(per_task[METRICS[0]])))
    summary["tasks_without_liked"] = int(np.sum(np.isnan(per_task[METRICS[0]])))
    for name in METRICS:
        summary[f"{name}_halfwidth95"] = M.halfwidth95(per_task[name])
    return summary


# --- rankers on the episode tensors ------------------------------------------------------------------------------
def catalog_as_query(
    support: Mapping[str, tf.Tensor], catalog: Mapping[str, tf.Tensor], specs: Sequence[FeatureSpec]
) -> dict[str, tf.Tensor]:
    """The whole catalog as every task's query set: ``query_<item feature> [B, n(, L)]`` from the catalog,
    ``query_<user feature>`` the task's user (from its first support row), ``query_mask`` ones."""
    batch = tf.shape(support[key(SUPPORT, MASK)])[0]
    n = tf.shape(next(iter(catalog.values())))[0]
    out = {}
    for s in specs:
        value = catalog[s.name][None] if s.side == "item" else support[key(SUPPORT, s.name)][:, :1]
        out[key(QUERY, s.name)] = tf.broadcast_to(value, tf.concat([tf.stack([batch, n]), tf.shape(value)[2:]], 0))
    out[key(QUERY, MASK)] = tf.ones(tf.stack([batch, n]), tf.float32)
    return out


class _TracedRanker:
    """A ranker whose TensorFlow work runs in one function traced at the first batch (every dim open)."""

    def _scores(self, support: Mapping[str, tf.Tensor]) -> tf.Tensor:
        raise NotImplementedError

    def __call__(self, batch: TaskBatch) -> np.ndarray:
        if getattr(self, "_fn", None) is None:
            spec = {k: tf.TensorSpec([None] * v.ndim, tf.as_dtype(v.dtype)) for k, v in batch.features.items()}
            self._fn = tf.function(self._scores, autograph=False).get_concrete_function(spec)
        return self._fn(batch.features).numpy()


class CMMLCatalogRanker(_TracedRanker):
    """CMML exhaustive: every catalog item scored from the task's context.

    The computation of the exported ``recommend`` (``CMMLServingModule._score_catalog``): the catalog's
    item embeddings, baselines and relevance vectors computed once, then per batch of tasks the
    context (``encode_context``), the task's user embedding, and
    :func:`cmml.models.retrieval.score_items` (the relevance head's logits when the model has one).
    """

    def __init__(self, model: CMMLModel, catalog: Catalog):
        from cmml.models.retrieval import catalog_embeddings, catalog_relevance

        self.model = model
        self.catalog_x = self.catalog_baseline = None  # the rating network's inputs, when the ranking uses it
        if model.ranks_by_score:
            x, baseline = catalog_embeddings(
                model, {s.name: tf.constant(catalog.features[s.name]) for s in model.item_specs}
            )
            self.catalog_x, self.catalog_baseline = x[None], baseline[None]
        self.relevance = None
        if model.relevance is not None:
            v, b = catalog_relevance(model, tf.constant(catalog.features["item_id"]))
            self.relevance = (v[None], b[None])
        self._fn = None

    def _scores(self, support: Mapping[str, tf.Tensor]) -> tf.Tensor:
        from cmml.models.retrieval import score_items

        model = self.model
        context = model.encode_context(support)  # [B, C]
        e_u = model.task_user(support)
        return score_items(model, context, e_u, self.catalog_x, self.catalog_baseline, self.relevance, support)


class EpisodeModelRanker(_TracedRanker):
    """Any episode model or floor ``f(features) -> [B, Q]`` scoring the whole catalog as the query set
    (DCN as ``recommend`` scores it for a non-CMML model; the bias model; ItemPop)."""

    def __init__(
        self, model: Callable[[Mapping[str, tf.Tensor]], tf.Tensor], specs: Sequence[FeatureSpec], catalog: Catalog
    ):
        self.model, self.specs = model, list(specs)
        self.catalog = {s.name: tf.constant(catalog.features[s.name]) for s in self.specs if s.side == "item"}
        self._fn = None

    def _scores(self, support: Mapping[str, tf.Tensor]) -> tf.Tensor:
        features = {**support, **catalog_as_query(support, self.catalog, self.specs)}
        if isinstance(self.model, tf.keras.Model):
            return self.model(features, training=False)
        return self.model(features)


class TwoStageRanker:
    """A retrieval stage proposes ``candidates`` items per task (its top N, support items left out); the re-ranker's
    scores order them; every other item gets ``-inf`` (not proposed). The hook for "CMML two-stage": ``retrieve`` is
    the retrieval model's ranker, ``rerank`` the CMML exhaustive ranker (or one scoring only the candidates)."""

    def __init__(self, retrieve: Ranker, rerank: Ranker, candidates: int):
        if candidates < 1:
            raise ValueError("candidates must be at least 1")
        self.retrieve, self.rerank, self.candidates = retrieve, rerank, candidates

    def __call__(self, batch: TaskBatch) -> np.ndarray:
        first = np.asarray(self.retrieve(batch), np.float64)
        n = first.shape[1]
        support = support_matrix(batch.support_rows, np.zeros(batch.support_rows.shape), n, 0.0) > 0
        first = np.where(support, -np.inf, first)
        n_keep = min(self.candidates, n)
        proposed = np.argpartition(-first, n_keep - 1, axis=1)[:, :n_keep]  # [B, N]
        keep = np.zeros(first.shape, bool)
        np.put_along_axis(keep, proposed, True, axis=1)
        keep &= np.isfinite(first)
        return np.where(keep, np.asarray(self.rerank(batch), np.float64), -np.inf)


RerankerFactory = Callable[[CMMLModel, Catalog, Ranker], Ranker]  # (trained CMML, catalog, exhaustive) -> ranker


# --- classic full-catalog baselines --------------------------------------------------------------------------------
def interaction_matrix(batches: Iterable[Batch], catalog: Catalog, min_rating: float = 1.0):
    """Users × catalog items ``scipy.sparse.csr_matrix [U, n]`` (float32, 1 = rated ≥ ``min_rating``): one user per
    task row of ``batches``, from its support and query rows."""
    import scipy.sparse as sp

    users, items, offset = [], [], 0
    for batch in batches:
        ids = np.concatenate([batch[key(SUPPORT, "item_id")], batch[key(QUERY, "item_id")]], axis=1)
        mask = np.concatenate([batch[key(SUPPORT, MASK)], batch[key(QUERY, MASK)]], axis=1)
        labels = np.concatenate([batch[key(SUPPORT, LABEL)], batch[key(QUERY, LABEL)]], axis=1)
        rows = catalog.rows(ids, mask)
        task, column = np.nonzero((rows >= 0) & (labels >= min_rating))
        users.append(task + offset)
        items.append(rows[task, column])
        offset += len(ids)
    users, items = np.concatenate(users), np.concatenate(items)
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(offset, catalog.size))
    matrix.data[:] = 1.0  # a repeated (user, item) pair is still one interaction
    return matrix


def ease_weights(matrix, l2: float) -> np.ndarray:
    """EASE's item-item weights ``[n, n]``: B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, so diag(B) = 0."""
    gram = np.asarray((matrix.T @ matrix).todense(), np.float64)
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    weights = -p / np.diag(p)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


class EASE:
    """EASE (Steck 2019): ``fit(X)`` learns B from users × items; a task's scores are its support row × B.

    ``min_rating``: ratings below it are left out of the users' rows (at fit and at prediction).
    """

    def __init__(self, catalog: Catalog, l2: float, min_rating: float = 1.0):
        self.catalog, self.l2, self.min_rating = catalog, float(l2), float(min_rating)
        self.weights: np.ndarray | None = None

    def fit(self, batches: Iterable[Batch]) -> EASE:
        self.weights = ease_weights(interaction_matrix(batches, self.catalog, self.min_rating), self.l2)
        return self

    def __call__(self, batch: TaskBatch) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("EASE must be fitted before scoring")
        rows = support_matrix(batch.support_rows, batch.support_labels, self.catalog.size, self.min_rating)
        return rows @ self.weights


def _implicit_als():
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as exc:
        raise ExperimentError(
            "the ALS baseline needs the `implicit` library: pip install -c constraints.txt -e '.[eval]'"
        ) from exc
    return AlternatingLeastSquares


class ALS:
    """Implicit-feedback ALS (``implicit.cpu.als.AlternatingLeastSquares``) on users × items: confidence α for an
    interaction, 1 for any other cell (implicit ≥ 0.5 scales the 0/1 matrix by α). A cold task's user factors are
    folded in from its support set at scoring time (``recommend(..., recalculate_user=True)``: the exact
    least-squares solve f = (YᵀCY + λI)⁻¹ YᵀC p against the fixed item factors Y)."""

    def __init__(
        self,
        catalog: Catalog,
        factors: int,
        regularization: float,
        alpha: float,
        iterations: int,
        seed: int,
        min_rating: float = 1.0,
    ):
        from threadpoolctl import threadpool_limits

        self.catalog, self.min_rating = catalog, float(min_rating)
        with threadpool_limits(1, "blas"):  # implicit's own threads do the work (it warns about BLAS threads)
            self.model = _implicit_als()(
                factors=int(factors),
                regularization=float(regularization),
                alpha=float(alpha),
                iterations=int(iterations),
                random_state=int(seed),
                calculate_training_loss=False,
            )

    def fit(self, batches: Iterable[Batch]) -> ALS:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            self.model.fit(interaction_matrix(batches, self.catalog, self.min_rating), show_progress=False)
        return self

    def __call__(self, batch: TaskBatch) -> np.ndarray:
        import scipy.sparse as sp

        n = self.catalog.size
        rows = sp.csr_matrix(support_matrix(batch.support_rows, batch.support_labels, n, self.min_rating))
        ids, scores = self.model.recommend(
            np.arange(batch.size), rows, N=n, filter_already_liked_items=False, recalculate_user=True
        )
        out = np.full((batch.size, n), -np.inf, np.float32)
        np.put_along_axis(out, np.maximum(ids, 0), np.where(ids >= 0, scores, -np.inf), axis=1)
        return out


# --- choosing on meta_valid ----------------------------------------------------------------------------------
def grid(values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``values`` (name → options), in order."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def choose_on_valid(
    options: Sequence[Mapping[str, Any]],
    build: Callable[[Mapping[str, Any]], Ranker],
    valid: Sequence[tuple[TaskBatch, HeldOut]],
    metric: str = SELECTION_METRIC,
    log: Log = print,
    name: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The option whose ranker (``build(option)``, fitted without the meta_valid users) has the best meta_valid
    ``metric``. Returns (the option, a selection record: every option and its meta_valid figures)."""
    scored = []
    for option in options:
        t = time.time()
        summary = evaluate_ranker(build(option), valid)
        scored.append({"option": dict(option), "valid": {m: summary[m] for m in METRICS}, "seconds": time.time() - t})
        log(f"    {name} {option}: meta_valid {metric} {summary[metric]:.4f} ({time.time() - t:.0f} s)")
    best = int(np.argmax([s["valid"][metric] for s in scored]))
    return dict(options[best]), {"metric": metric, "split": "meta_valid", "options": scored, "chosen": best}


# --- the exported recommend signature ------------------------------------------------------------------------------
def transform_output(output_dir: str, pipeline_name: str) -> str:
    """The Transform graph artifact of the newest run of ``pipeline_name`` under ``output_dir`` (TFX cache)."""
    from ml_metadata.proto import metadata_store_pb2

    from cmml.pipeline.runs import newest_run, open_store

    def complete(artifacts: list) -> list:  # an interrupted run leaves its outputs PENDING
        live = metadata_store_pb2.Artifact.LIVE
        return [
            a for a in artifacts if a.state == live and "/Transform/transform_graph/" in a.uri and os.path.isdir(a.uri)
        ]

    store = open_store(output_dir)
    run = newest_run(store, pipeline_name)
    found = complete(store.get_artifacts_by_context(run.id)) if run else []
    found = found or complete(store.get_artifacts_by_type("TransformGraph"))
    if not found:
        raise ExperimentError(f"no Transform graph recorded under {output_dir}")
    uri = max(found, key=lambda a: a.id).uri
    return uri if os.path.isabs(uri) else os.path.join(os.getcwd(), uri)


def check_against_recommend(
    model: CMMLModel,
    ranker: Ranker,
    root: str,
    transform_dir: str,
    batches: Sequence[tuple[TaskBatch, HeldOut]],
    catalog: Catalog,
    user_ids: np.ndarray,
    k: int = 20,
    tasks: int = 16,
) -> dict[str, Any]:
    """Exports ``model`` as the Trainer does (``export_models``: Transform graph, item and user catalogs) and compares
    its ``recommend`` top-``k`` with the top-``k`` of ``ranker`` on the first ``tasks`` tasks (support items by raw id,
    users by raw id). Returns the comparison; raises when the items or scores differ."""
    from cmml.models.export import export_models

    task, _ = batches[0]
    take = min(tasks, task.size)
    with tempfile.TemporaryDirectory() as tmp:
        serving = os.path.join(tmp, "model", "Format-Serving")
        export_models(model, serving, transform_dir, root)
        recommend = tf.saved_model.load(serving).signatures["recommend"]
        inputs: dict[str, tf.Tensor] = {}
        for name, spec in recommend.structured_input_signature[1].items():
            if name == "support_item_id":
                rows = task.support_rows[:take]
                ids = np.where(rows >= 0, catalog.keys[np.maximum(rows, 0)], b"")
                inputs[name] = tf.constant(ids.astype(bytes))
            elif name == "support_label":
                inputs[name] = tf.constant(task.support_labels[:take] * (task.support_rows[:take] >= 0))
            elif name == "user_id":
                inputs[name] = tf.constant(np.asarray(user_ids[:take], dtype=bytes))
            elif name == "k":
                inputs[name] = tf.fill([take], tf.constant(k, tf.int32))  # per task
            else:  # a raw user attribute: unknown, the user catalog supplies it
                shape = [take] + [1] * (spec.shape.rank - 1)
                inputs[name] = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
        served = recommend(**inputs)
    served_ids = served["item_id"].numpy()
    served_scores = served["scores"].numpy()
    ours = ranker(dataclasses.replace(task, features={n: v[:take] for n, v in task.features.items()}))
    support = support_matrix(task.support_rows[:take], np.zeros((take, task.support_rows.shape[1])), catalog.size, 0.0)
    ours = np.where(support > 0, -np.inf, ours)  # recommend leaves the support items out
    top = np.argsort(-ours, axis=1, kind="stable")[:, :k]
    our_scores = np.take_along_axis(ours, top, axis=1)
    score_gap = float(np.max(np.abs(our_scores - served_scores)))
    same = np.mean([len(set(a) & set(b)) / k for a, b in zip(catalog.keys[top], served_ids)])
    record = {"tasks": take, "k": k, "max_abs_score_difference": score_gap, "top_k_overlap": float(same)}
    if score_gap > 1e-4 or same < 1.0:
        raise ExperimentError(f"CMML exhaustive ranking differs from the exported recommend signature: {record}")
    return record


# --- the run ---------------------------------------------------------------------------------------------------------
ROWS = ("ItemPop", "bias model", "EASE", "ALS (fold-in)", "DCN", "CMML exhaustive", "CMML exhaustive + listwise")
LISTWISE = "CMML exhaustive + listwise"


@dataclasses.dataclass
class Options:
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    cache_dir: str = "runs/experiments"
    json_dir: str = "docs/results"
    out: str | None = "RESULTS.md"
    models: Sequence[str] = ()  # substrings of row names to (re)run (default: all)
    resume: bool = False
    listwise: bool = True  # also train the listwise CMML variant (all seeds only when it wins on meta_valid)
    check_recommend: bool = True
    reuse_records: bool = False  # read the newest TaskGen output under cache_dir instead of running the data path
    max_epochs: int | None = None  # quick runs only
    # more rows scored with each trained CMML model, e.g. "CMML two-stage": name -> factory(model, catalog, exhaustive)
    cmml_rankers: Mapping[str, RerankerFactory] = dataclasses.field(default_factory=dict)
    grids: Mapping[str, Mapping[str, Sequence[Any]]] = dataclasses.field(
        default_factory=lambda: {"bias model": BIAS_GRID, "EASE": EASE_GRID, "ALS (fold-in)": ALS_GRID}
    )
    command: str = "cmml full-catalog"
    log: Log = print


@dataclasses.dataclass
class TrainedRows:
    """The suites' rows the table's models come from: ``bias`` (the floor's user shrinkage), ``dcn``, ``cmml``
    (the shipped configuration) and ``listwise`` (CMML with the listwise ranking term; None: no such row)."""

    bias: ModelSpec
    dcn: ModelSpec
    cmml: ModelSpec
    listwise: ModelSpec | None = None

    @classmethod
    def from_suites(cls, suites: Mapping[str, Suite], suite: Suite) -> TrainedRows:
        def spec(suite_name: str, name: str) -> ModelSpec:
            found = [m for m in suites[suite_name].models if m.name == name]
            if not found:
                raise ExperimentError(f"suites.yaml: suite {suite_name} has no row {name!r}")
            return found[0]

        return cls(spec(suite.name, "bias model"), spec(suite.name, DCN_ROW), spec(*CMML_ROW), spec(*CMML_LISTWISE_ROW))


def _output_dir(suite: Suite, opts: Options) -> str:
    """The suite's TFX output folder under the cache dir (as :func:`cmml.experiments.data.prepare_tasks` names it)."""
    return str(Path(opts.cache_dir).resolve() / (suite.cache or suite.name))


def _wanted(name: str, opts: Options) -> bool:
    return not opts.models or any(m.lower() in name.lower() for m in opts.models)


def _capped(training: Mapping[str, Any], opts: Options) -> dict:
    out = dict(training)
    if opts.max_epochs is not None:
        out["epochs"] = min(int(out.get("epochs", opts.max_epochs)), opts.max_epochs)
    return out


def machine() -> dict[str, Any]:
    """CPU model, core count and load: the figures' wall times depend on them."""
    name = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), name)
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": name, "cores": os.cpu_count(), "load1_at_start": results.load_average()}


def run_suite(suite: Suite, rows: TrainedRows, opts: Options, record: dict, save: Callable[[], None]) -> None:
    """Every row of the full-catalog table on one user suite's records, into ``record`` (saved after each result)."""
    from cmml.experiments.data import Data, prepare_tasks, taskgen_output
    from cmml.models.training import available_features, numpy_scorer, train

    log = opts.log
    if suite.setting != "user":
        raise ExperimentError(
            f"full-catalog ranking is defined for user suites; {suite.name} is a {suite.setting} suite"
        )
    if opts.reuse_records:
        root = taskgen_output(_output_dir(suite, opts), suite.pipeline_config().name)
        log(f"[{suite.name}] records of an earlier data run: {root}")
    else:
        root = prepare_tasks(suite, opts.cache_dir, log)
    data = Data(root, suite.setting, suite.episodes, suite.rating_range)
    catalog = Catalog.from_records(root, data.specs)
    valid = task_batches(root, data.specs, "meta_valid", catalog)
    test = task_batches(root, data.specs, "meta_test", catalog)
    pool = pool_batches(root, data.specs)  # the fit data while choosing on meta_valid: no meta_valid user
    fit = list(data.fit_batches())  # every meta-train interaction (pool + meta_valid users): the final fit
    record.update(
        {
            "records": os.path.relpath(root, os.getcwd()),
            "catalog_items": catalog.size,
            "tasks": {
                "meta_train pool": sum(len(b[key(SUPPORT, MASK)]) for b in pool),
                "meta_valid": sum(t.size for t, _ in valid),
                "meta_test": sum(t.size for t, _ in test),
            },
        }
    )
    runs: list[dict] = record.setdefault("runs", [])
    selections: dict = record.setdefault("selection", {})
    if opts.models:  # the rows asked for are (re)run; the others keep their figures
        runs[:] = [r for r in runs if not _wanted(r["model"], opts)]
        for name in [n for n in selections if _wanted(n, opts)]:
            del selections[name]
    done = {(r["model"], r["seed"]) for r in runs}
    log(f"[{suite.name}] catalog {catalog.size} items; tasks {record['tasks']}")

    def add(model: str, seed: int | None, ranker: Ranker, extra: Mapping[str, Any]) -> None:
        t = time.time()
        metrics = evaluate_ranker(ranker, test)
        entry = {"model": model, "seed": seed, "metrics": metrics, "eval_seconds": time.time() - t, **extra}
        entry["load1"] = results.load_average()
        runs[:] = [r for r in runs if (r["model"], r["seed"]) != (model, seed)] + [entry]
        done.add((model, seed))
        save()
        brief = ", ".join(f"{m} {metrics[m]:.4f}" for m in METRICS)
        log(f"[{suite.name}] {model}{'' if seed is None else f' seed {seed}'}: {brief}")

    def select(name: str, build: Callable[[Mapping[str, Any]], Ranker]) -> dict:
        if name in selections and opts.resume:
            return selections[name]["config"]
        options = grid(opts.grids[name])
        log(f"[{suite.name}] choosing {name} on meta_valid ({len(options)} options)")
        chosen, sel = choose_on_valid(options, build, valid, log=log, name=name)
        selections[name] = {**sel, "config": chosen}
        save()
        return chosen

    # the floors, EASE and ALS: chosen with a fit on the meta-train pool, refitted on every meta-train interaction
    if _wanted("ItemPop", opts) and ("ItemPop", None) not in done:
        t = time.time()
        pop = simple.ItemPop().fit(fit)
        ranker: Ranker = EpisodeModelRanker(pop, data.specs, catalog)
        add("ItemPop", None, ranker, {"fit_seconds": time.time() - t, "config": {}})
    if _wanted("bias model", opts) and ("bias model", None) not in done:
        user_shrinkage = rows.bias.config.get("user_shrinkage", 5.0)

        def bias(option: Mapping[str, Any], batches: Sequence[Batch] = pool) -> Ranker:
            model = simple.BiasModel(option["item_shrinkage"], user_shrinkage, clip=None).fit(batches)
            return EpisodeModelRanker(model, data.specs, catalog)

        chosen = select("bias model", bias)
        t = time.time()
        ranker = bias(chosen, fit)
        config = {**chosen, "user_shrinkage": user_shrinkage, "clip": None}
        add("bias model", None, ranker, {"fit_seconds": time.time() - t, "config": config})
    if _wanted("EASE", opts) and ("EASE", None) not in done:
        chosen = select("EASE", lambda o: EASE(catalog, **o).fit(pool))
        t = time.time()
        ranker = EASE(catalog, **chosen).fit(fit)
        add("EASE", None, ranker, {"fit_seconds": time.time() - t, "config": chosen})
    als_seeds = [s for s in opts.seeds if ("ALS (fold-in)", s) not in done]
    if _wanted("ALS", opts) and als_seeds:
        chosen = select("ALS (fold-in)", lambda o: ALS(catalog, seed=opts.seeds[0], **o).fit(pool))
        for seed in als_seeds:
            t = time.time()
            ranker = ALS(catalog, seed=seed, **chosen).fit(fit)
            add("ALS (fold-in)", seed, ranker, {"fit_seconds": time.time() - t, "config": chosen})

    # trained models: the suites' rows through the one training API (early stopping on meta_valid MAE)
    def trained_row(name: str, spec: ModelSpec, seed: int) -> dict[str, Any]:
        config = available_features(spec.config, data.specs)
        t = time.time()
        trained = train(data, spec.kind, config, data.training_config(_capped(spec.training, opts), seed), data.clip)
        seconds = time.time() - t
        model = trained.model
        if spec.kind == "cmml":
            ranker: Ranker = CMMLCatalogRanker(model, catalog)
        else:
            ranker = EpisodeModelRanker(model, data.specs, catalog)
        valid_figures = {m: v for m, v in evaluate_ranker(ranker, valid).items() if m in METRICS}
        extra = {
            "row": spec.name,
            "config": trained.config,
            "training": _capped(spec.training, opts),
            "train_seconds": seconds,
            "epochs_run": trained.summary["epochs_run"],
            "best_epoch": trained.summary["best_epoch"],
            "best_validation_mae": trained.summary["best_validation"],
            "valid": valid_figures,
            "query_mae": data.evaluate(numpy_scorer(model))["mae"],
        }
        if spec.kind == "cmml" and opts.check_recommend and "recommend_check" not in record:
            graph = transform_output(_output_dir(suite, opts), suite.pipeline_config().name)
            user_ids = _user_ids(root, data.specs)
            record["recommend_check"] = check_against_recommend(model, ranker, root, graph, test, catalog, user_ids)
            record["recommend_check"]["seed"] = seed
            log(f"[{suite.name}] CMML exhaustive = exported recommend: {record['recommend_check']}")
        add(name, seed, ranker, extra)
        if spec.kind == "cmml" and name == "CMML exhaustive":
            for other, factory in opts.cmml_rankers.items():  # the same trained model behind another ranking
                t = time.time()
                derived = factory(model, catalog, ranker)
                setup = time.time() - t
                figures = {m: v for m, v in evaluate_ranker(derived, valid).items() if m in METRICS}
                add(other, seed, derived, {**extra, "valid": figures, "setup_seconds": setup})
        return extra

    for seed in opts.seeds:
        for name, spec in (("DCN", rows.dcn), ("CMML exhaustive", rows.cmml)):
            if _wanted(name, opts) and (name, seed) not in done:
                trained_row(name, spec, seed)

    # a ranking-aware objective: CMML with the listwise term, all seeds only if it beats the rating-only CMML on
    # meta_valid (first seed)
    if opts.listwise and rows.listwise is not None and _wanted(LISTWISE, opts):
        first = opts.seeds[0]
        base = next((r for r in runs if r["model"] == "CMML exhaustive" and r["seed"] == first), None)
        if (LISTWISE, first) not in done:
            trained_row(LISTWISE, rows.listwise, first)
        mine = next(r for r in runs if r["model"] == LISTWISE and r["seed"] == first)
        wins = base is not None and mine["valid"][SELECTION_METRIC] > base["valid"][SELECTION_METRIC]
        selections[LISTWISE] = {
            "metric": SELECTION_METRIC,
            "split": "meta_valid",
            "seed": first,
            "listwise": mine["valid"][SELECTION_METRIC],
            "rating_only": base["valid"][SELECTION_METRIC] if base else None,
            "wins": bool(wins),
        }
        save()
        if wins:
            for seed in opts.seeds[1:]:
                if (LISTWISE, seed) not in done:
                    trained_row(LISTWISE, rows.listwise, seed)
        else:
            log(f"[{suite.name}] {LISTWISE}: not better than the rating-only CMML on meta_valid; other seeds skipped")


def _user_ids(root: str, specs: Sequence[FeatureSpec]) -> np.ndarray:
    """The raw user id of each meta_test task, in the order of :func:`task_batches`."""
    ds = episodes.evaluation_episodes(
        root, specs, setting="user", split="meta_test", batch_size=256, include_task_key=True
    )
    return np.concatenate([b["task_key"] for b in ds.as_numpy_iterator()])


# --- the results file -------------------------------------------------------------------------------------------
def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean over seeds (sample std / √n); NaN for fewer than two values."""
    v = np.asarray(values, np.float64)
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def summarize_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, in :data:`ROWS` order: mean and standard error over its seeds of every metric."""
    out = []
    names = list(ROWS) + sorted({r["model"] for r in runs} - set(ROWS))  # then rows such as "CMML two-stage"
    for name in names:
        mine = [r for r in runs if r["model"] == name]
        if not mine:
            continue
        row: dict[str, Any] = {"model": name, "seeds": sorted(r["seed"] for r in mine if r["seed"] is not None)}
        for m in METRICS:
            values = [r["metrics"][m] for r in mine]
            row[m] = (float(np.mean(values)), standard_error(values))
        row["config"] = mine[0].get("config", {})
        seconds = [r.get("train_seconds", r.get("fit_seconds", 0.0)) for r in mine]
        row["fit_seconds"] = float(np.mean(seconds))
        row["eval_seconds"] = float(np.mean([r["eval_seconds"] for r in mine]))
        row["query_mae"] = float(np.mean([r["query_mae"] for r in mine])) if "query_mae" in mine[0] else None
        out.append(row)
    return out


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _cell(mean: float, se: float) -> str:
    return f"{mean:.4f}" if np.isnan(se) else f"{mean:.4f} ± {se:.4f}"


def _config_text(config: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in config.items() if k not in ("features",)}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "–"


def render(record: Mapping[str, Any]) -> str:
    """The RESULTS.md section "Full-catalog ranking (cold users)" from the JSON record."""
    from cmml.experiments.sections import BEGIN, END

    lines = [BEGIN.format(SECTION), "## Full-catalog ranking (cold users)", ""]
    mach = record.get("machine", {})
    loads = [
        r["load1"] for s in record.get("suites", {}).values() for r in s.get("runs", []) if r.get("load1") is not None
    ]
    calls = record.get("invocations") or [
        {
            "command": record.get("command"),
            "wall_seconds": record.get("wall_seconds", 0.0),
            "commit": record.get("commit"),
        }
    ]
    lines.append(
        "Commands (from the repository root; some invocations ran at the same time, on separate results files "
        "merged into this one):"
        if len(calls) > 1
        else "Command:"
    )
    lines += [f"- `{c['command']}` — {_seconds(c.get('wall_seconds', 0.0))}, code {c.get('commit')}" for c in calls]
    lines += [
        "",
        f"Run: {record.get('date')}, seeds {', '.join(map(str, record.get('seeds', [])))} asked for the trained models "
        "and ALS (the seeds column counts those finished; the other rows are deterministic), "
        f"machine: {mach.get('cpu')}, {mach.get('cores')} "
        f"cores shared with other jobs (1-min load average after each result: median "
        f"{np.median(loads) if loads else float('nan'):.1f}, max {max(loads) if loads else float('nan'):.1f}).",
        "",
        *[f"{note}\n" for note in record.get("notes", [])],
        "Each cold user (meta-test task) gets a ranking of **the whole item catalog** minus its support items, as "
        "the SavedModel's `recommend` signature returns it; Recall@K = share of the user's held-out liked items "
        f"(query rows rated ≥ {LIKED:g}) in the top K, NDCG@K with gain 1 per liked item (ties rank pessimistically); "
        "averaged over the users with at least one liked query item; mean ± standard error over seeds. Every choice "
        "was made on meta_valid (Recall@20, baselines fitted without the meta_valid users); the classic baselines are "
        "then refitted on every meta-train interaction (meta-train pool + meta_valid users, as the floors of "
        "`cmml experiment`), the "
        "test users' support sets entering at prediction time only. Code: `experiments/full_catalog.py`.",
        "",
    ]
    for name, suite in record.get("suites", {}).items():
        tasks = suite.get("tasks", {})
        lines += [
            f"### {name}: {suite.get('catalog_items')} catalog items, {tasks.get('meta_test')} meta-test users",
            "",
            f"Records: `{suite.get('records')}`; tasks: {', '.join(f'{k} {v}' for k, v in tasks.items())}. "
            f"Users with a liked query item: "
            f"{next((r['metrics']['tasks'] for r in suite.get('runs', [])), 0)}.",
            "",
            "| model | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | seeds | query-set MAE | fit / train time "
            "| configuration |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows = summarize_rows(suite.get("runs", []))
        best = {m: max(r[m][0] for r in rows) for m in METRICS} if rows else {}
        for r in rows:
            cells = [("**" + _cell(*r[m]) + "**") if r[m][0] == best[m] else _cell(*r[m]) for m in METRICS]
            seeds = str(len(r["seeds"])) if r["seeds"] else "deterministic"
            mae = f"{r['query_mae']:.4f}" if r["query_mae"] is not None else "–"
            shown = (
                _config_text(r["config"])
                if r["model"] in CHOSEN_SHOWN
                else f"suites.yaml row '{_row_of(suite, r['model'])}'"
            )
            lines.append(
                f"| {r['model']} | {' | '.join(cells)} | {seeds} | {mae} | {_seconds(r['fit_seconds'])} | {shown} |"
            )
        lines.append("")
        lines += [f"- {line}" for line in findings(rows)]
        missing = [m for m in ("DCN", "CMML exhaustive") if not any(r["model"] == m for r in rows)]
        if missing:
            lines.append(
                f"- Not run on this suite yet: {', '.join(missing)} (`cmml full-catalog --suite {name} --models "
                f"{' '.join(shlex.quote(m) for m in missing)} --resume` adds them)."
            )
        for model, sel in suite.get("selection", {}).items():
            if "options" in sel:
                values = [o["valid"][sel["metric"]] for o in sel["options"]]
                lines.append(
                    f"- {model}: {len(sel['options'])} options on meta_valid ({sel['metric']} from "
                    f"{min(values):.4f} to {max(values):.4f}) → {_config_text(sel['config'])}."
                    + (f" {sel['note']}" if sel.get("note") else "")
                )
            elif sel.get("rating_only") is not None:
                verdict = "kept" if sel.get("wins") else "not better: seeds after the first not trained"
                lines.append(
                    f"- {model}: meta_valid {sel['metric']} {sel['listwise']:.4f} vs {sel['rating_only']:.4f} for the "
                    f"rating-only CMML (seed {sel['seed']}) → {verdict}."
                )
        check = suite.get("recommend_check")
        if check:
            lines.append(
                "- CMML exhaustive against the exported `recommend` signature (the Trainer's export with the "
                f"Transform graph and the catalogs, seed {check.get('seed', 0)}): top-{check['k']} of "
                f"{check['tasks']} meta-test users identical ({check['top_k_overlap']:.0%} overlap), largest score "
                f"difference {check['max_abs_score_difference']:.1e}."
            )
        lines.append("")
    lines += [
        "The bias model's user offset is one constant per user, so its full-catalog ranking is that of the shrunk item "
        "mean b_i. DCN is the rating model of the tables above (MSE on ratings of items the user did rate), scored on "
        "items the user may never have seen. CMML ranks as its `recommend` signature does: by its catalog relevance "
        "head (`catalog_weight` > 0 in the shipped configuration, `pipeline/configs/default.yaml`), a dot product "
        "between a query from the task's context and support items and a vector per item, trained beside the rating "
        "model on a sampled softmax of each task's liked query items against items drawn from the catalog; the head's "
        "input is held fixed, so the rating model (and its MAE) is the one it would be without the head. "
        "The query-set MAE column is the model's usual figure (MAE over each meta-test user's 10 query ratings), a "
        "check that the trained models are those of the suites' tables.",
        "",
    ]
    if not any(r["model"] == "CMML two-stage" for s in record.get("suites", {}).values() for r in s.get("runs", [])):
        lines += [
            "No CMML two-stage row: with the relevance head, `recommend` scores every item with one dot product, "
            "which is the brute-force index a retrieval stage would add, so the Trainer trains none "
            "(`components/trainer.py`). The retrieval stage distilled from CMML's rating ranking, for models "
            'that rank by the rating network, is measured in BENCHMARKS.md ("Retrieval stage"); it plugs in '
            "here as `TwoStageRanker(retrieval, exhaustive, N)` through `Options.cmml_rankers`.",
            "",
        ]
    lines += [
        END.format(SECTION),
    ]
    return "\n".join(lines) + "\n"


def findings(rows: Sequence[Mapping[str, Any]], metric: str = SELECTION_METRIC) -> list[str]:
    """What the table says, computed from it: the best row, and CMML exhaustive against each other row."""
    if not rows:
        return []
    by = {r["model"]: r for r in rows}
    best = max(rows, key=lambda r: r[metric][0])
    label = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
    out = [f"Best {label}: {best['model']} ({best[metric][0]:.4f})."]
    ours = by.get("CMML exhaustive")
    if ours is not None:
        parts = []
        for name, r in by.items():
            if name == "CMML exhaustive":
                continue
            diff = ours[metric][0] - r[metric][0]
            se = np.sqrt(np.nansum([ours[metric][1] ** 2, r[metric][1] ** 2]))
            ratio = f", {ours[metric][0] / r[metric][0]:.2f}×" if r[metric][0] > 0 else ""
            spread = f" (± {se:.4f} s.e.)" if se > 0 else ""
            parts.append(f"{name} {diff:+.4f}{spread}{ratio}")
        out.append(f"CMML exhaustive {label} minus each other row's: " + "; ".join(parts) + ".")
    return out


CHOSEN_SHOWN = ("ItemPop", "bias model", "EASE", "ALS (fold-in)")


def _row_of(suite: Mapping[str, Any], model: str) -> str:
    return next((r.get("row", model) for r in suite.get("runs", []) if r["model"] == model), model)


def run(suite_names: Sequence[str], opts: Options, data_root: str | None = None) -> dict:
    """Runs the full-catalog table on each user suite; writes the JSON file and the RESULTS.md section."""
    from cmml.experiments.suites import check_data, load_suites

    suites = load_suites(data_root)
    unknown = [n for n in suite_names if n not in suites]
    if unknown:
        raise ExperimentError(f"unknown suite(s) {', '.join(unknown)}; suites.yaml has {', '.join(suites)}")
    for name in suite_names:
        check_data(suites[name])
    path = Path(opts.json_dir) / JSON_NAME
    old = results.load_json(path) if opts.resume else None
    record: dict[str, Any] = old or {"suites": {}}
    earlier = float(record.get("wall_seconds", 0.0)) if old else 0.0
    record.update(
        {
            "title": "Full-catalog ranking (cold users)",
            "command": opts.command if not old else f"{record.get('command')}; {opts.command}",
            "date": results.now(),
            "commit": results.git_commit(),
            "seeds": list(opts.seeds),
            "machine": machine(),
            "protocol": {"liked": LIKED, "ks": list(KS), "selection": f"meta_valid {SELECTION_METRIC}"},
        }
    )
    start = time.time()
    call = {"command": opts.command, "date": results.now(), "commit": record["commit"], "wall_seconds": 0.0}
    record.setdefault("invocations", []).append(call)

    def save() -> None:
        call["wall_seconds"] = time.time() - start
        record["wall_seconds"] = earlier + time.time() - start
        results.write_json(path, record)
        if opts.out:
            write_section(opts.out, SECTION, render(record))

    for name in suite_names:
        rows = TrainedRows.from_suites(suites, suites[name])
        run_suite(suites[name], rows, opts, record["suites"].setdefault(name, {}), save)
    save()
    opts.log(f"wrote {path}" + (f" and the '{SECTION}' section of {opts.out}" if opts.out else ""))
    return record


if __name__ == "__main__":
    import sys

    from cmml.experiments.cli import full_catalog_main

    sys.exit(full_catalog_main())
