"""A retrieval stage for ``recommend`` on large catalogs: N candidates from a brute-force index, re-ranked by CMML.

``recommend`` scores every catalog item with CMML (the task's context modulates the scorer on each
row), which grows with the catalog. Above a configured catalog size the Trainer also trains two
small towers whose dot product proposes N candidates for CMML to re-rank:

* :class:`QueryTower` — the cold user's query vector from the support set: the task context C that
  CMML's own (trained, frozen) context encoder reads off the support items and their ratings, and the
  embedding of the user's attributes e_u, ``[C; e_u]`` (:func:`query_features`) → ``[B, d]``;
* :class:`CandidateTower` — an item's vector from its transformed features as CMML embeds them,
  ``[x_i; b_i]`` (CMML's item embedding and baseline, :func:`candidate_features`) → ``[n, d]``;
* :class:`BruteForceIndex` — a ``tf.Module`` holding the catalog's candidate vectors ``[n, d]``
  as a variable; ``propose`` = one matmul and ``tf.math.top_k``, the support rows left out. Stock
  TensorFlow ops only: it lives inside the SavedModel (no ScaNN or other custom op).

Training (:func:`train_retrieval`) distills CMML's ranking, since agreement with the exhaustive
ranking is what the stage is for: support sets are drawn from meta-train tasks by the project's
episode builders (``TaskData.training``), CMML scores the whole catalog for each, and its top
``positives`` items (support items left out, as ``recommend`` leaves them out) are the positives of
a ``tfrs.tasks.Retrieval`` task with in-batch and uniformly sampled catalog negatives. The number of
candidates N is chosen on meta_valid tasks (never meta_test): the smallest N of ``candidate_grid``
whose top-N holds at least ``target_agreement`` of CMML's exhaustive top ``k``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import cmml  # noqa: F401  (Keras 2 before TensorFlow)
from cmml.models import episodes
from cmml.models.cmml import CMMLModel
from cmml.models.config import ConfigMixin
from cmml.models.layers.core import MLP
from cmml.schemas import tasks as T
from cmml.schemas.episodes import MASK, QUERY, SUPPORT, key

keras = tf.keras
Log = Callable[[str], None]
SCORED_ROWS_PER_CALL = 1 << 18  # teacher: (task, item) rows CMML scores per call, bounds its memory


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(ConfigMixin):
    """The retrieval stage (the ``retrieval:`` section of a pipeline config).

    ``min_catalog_size``: the Trainer trains the stage (and ``recommend`` uses it) when the item
    catalog has at least this many items; below, ``recommend`` scores the whole catalog.
    ``candidates``: N, or None to choose it on meta_valid: the smallest value of ``candidate_grid``
    whose top-N holds ``target_agreement`` of CMML's exhaustive top ``k`` (the largest if none does).
    Training: ``episodes_per_task`` support sets drawn from each meta-train task, CMML's top
    ``positives`` items of each as positives, ``negatives`` uniformly sampled catalog items per batch
    of ``batch_size`` (support set, positive) pairs, at most ``epochs`` passes with Adam at
    ``learning_rate``, stopped after ``patience`` passes without a better agreement (mean over the
    grid) or at full agreement, the best towers kept; at most ``max_valid_tasks`` meta_valid tasks
    measure the agreement. CMML scores the whole catalog for every support set: ``teacher_rows``
    bounds the (support set, item) pairs it scores, so a catalog of n items gets at most
    ``teacher_rows / n`` training support sets and a quarter of that
    (at least 32) validation tasks. Towers: ReLU MLP ``hidden`` then a linear layer of width ``dim``.
    """

    WHAT = "retrieval"

    min_catalog_size: int = 10_000
    candidates: int | None = None
    candidate_grid: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000)
    target_agreement: float = 0.95
    k: int = 10
    dim: int = 32
    hidden: tuple[int, ...] = (256,)
    positives: int = 20
    negatives: int = 2048
    episodes_per_task: int = 2
    teacher_rows: int = 50_000_000
    max_valid_tasks: int = 512
    epochs: int = 20
    patience: int = 3
    batch_size: int = 512
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        positive = {
            name: getattr(self, name)
            for name in (
                "min_catalog_size",
                "k",
                "dim",
                "positives",
                "negatives",
                "episodes_per_task",
                "teacher_rows",
                "max_valid_tasks",
                "epochs",
                "patience",
                "batch_size",
            )
        }
        if self.candidates is not None:
            positive["candidates"] = self.candidates
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RetrievalConfig.{name} = {value!r} must be a positive integer")
        if not self.candidate_grid or any(not isinstance(n, int) or n < 1 for n in self.candidate_grid):
            raise ValueError(f"RetrievalConfig.candidate_grid = {self.candidate_grid!r}: give positive integers")
        if list(self.candidate_grid) != sorted(set(self.candidate_grid)):
            raise ValueError(f"RetrievalConfig.candidate_grid = {self.candidate_grid!r} must be increasing")
        if min(self.candidate_grid + ((self.candidates,) if self.candidates else ())) < self.k:
            raise ValueError(f"RetrievalConfig: N (candidates, candidate_grid) must be at least k = {self.k}")
        if not 0.0 < self.target_agreement <= 1.0:
            raise ValueError(f"RetrievalConfig.target_agreement = {self.target_agreement} must be in (0, 1]")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"RetrievalConfig.hidden = {self.hidden!r}: give at least one positive width")
        if not self.learning_rate > 0:
            raise ValueError(f"RetrievalConfig.learning_rate = {self.learning_rate} must be positive")


# --- CMML's pieces, shared by the export (recommend) and the training -----------------------------------------
def catalog_embeddings(model: CMMLModel, items: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """CMML's item embeddings and baselines of catalog rows.

    Args:
      items: transformed item features, ``name → [n]`` (categorical) or ``[n, L]`` (multi).
    Returns:
      ``x_i [n, D_i]`` (:meth:`CMMLModel.embed`'s item part) and ``offset + b_i [n]``.
    """
    batch = {s.name: items[s.name][None] for s in model.item_specs}  # [1, n(, L)]
    n = tf.shape(batch[model.item_specs[0].name])[1]
    base = {key(QUERY, name): value for name, value in batch.items()}
    base[key(QUERY, MASK)] = tf.ones(tf.stack([1, n]), tf.float32)
    return model.item_embedding(batch)[0], model.baseline(base, QUERY)[0]


def user_embedding(model: CMMLModel, users: Mapping[str, tf.Tensor]) -> tf.Tensor | None:
    """e_u ``[B, D_u]`` of each task's transformed user attributes (``name → [B]`` / ``[B, L]``);
    None for a model without user features."""
    if model.user_embedding is None:
        return None
    return model.user_embedding({s.name: users[s.name][:, None] for s in model.user_specs})[:, 0]


def catalog_relevance(model: CMMLModel, item_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor] | None:
    """The relevance head's item vectors ``[n, d]`` and biases ``[n]`` of transformed item ids ``[n]``;
    None for a model without the head (``catalog_weight`` = 0)."""
    return None if model.relevance is None else model.relevance.items(item_id)


def score_items(
    model: CMMLModel,
    context: tf.Tensor,
    e_u: tf.Tensor | None,
    item_x: tf.Tensor | None,
    baseline: tf.Tensor | None,
    relevance: tuple[tf.Tensor, tf.Tensor] | None = None,
    support: Mapping[str, tf.Tensor] | None = None,
) -> tf.Tensor:
    """What ``recommend`` ranks items by, for each task's context.

    Without a relevance head: CMML's scores (:meth:`CMMLModel.call`'s on the same query rows). With
    one: its logits, plus ``catalog_rating_weight`` × the scores (computed only when that weight is set).

    Args:
      context: ``[B, context_dim]`` (:meth:`CMMLModel.encode_context`).
      e_u: ``[B, D_u]`` (:func:`user_embedding`) or None.
      item_x: ``[B, N, D_i]`` per task, or ``[1, N, D_i]`` for the same items in every task (None when
        the model ranks by its relevance head alone).
      baseline: ``[B, N]`` or ``[1, N]``, as ``item_x``.
      relevance: the items' ``(v, b)`` (:func:`catalog_relevance`), ``[B|1, N, d]`` and ``[B|1, N]``;
        needed when the model has the head.
      support: the tasks' transformed ``support_*`` episode tensors (the head's query pools the
        support items); needed when the model has the head.
    Returns:
      ``[B, N]`` scores.
    """
    logits = None
    if model.relevance is not None:
        if relevance is None or support is None:
            raise ValueError(
                "this model ranks by its relevance head: pass the items' vectors (catalog_relevance) and the "
                "support set"
            )
        query = model.relevance_query(context, e_u, support)  # [B, d]
        v, b = relevance
        if v.shape[0] == 1:  # the same items for every task: one matrix product
            logits = tf.matmul(query, v[0], transpose_b=True) + b
        else:
            logits = tf.reduce_sum(query[:, None, :] * v, axis=-1) + b
        if not model.ranks_by_score:
            return logits
    batch, n = tf.shape(context)[0], tf.shape(item_x)[1]
    x = tf.broadcast_to(item_x, tf.stack([batch, n, tf.shape(item_x)[2]]))
    if e_u is not None:
        x = tf.concat([tf.broadcast_to(e_u[:, None], tf.stack([batch, n, tf.shape(e_u)[1]])), x], axis=-1)
    scores = model.score_rows(context, x, tf.broadcast_to(baseline, tf.stack([batch, n])), training=False)["score"]
    return scores if logits is None else logits + model.config.catalog_rating_weight * scores


def exclude_rows(scores: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """``scores [B, n]`` with ``-inf`` at each task's ``rows [B, S]`` (a row outside ``[0, n)`` —
    padding, an item not in the catalog — excludes nothing)."""
    rows = tf.cast(rows, tf.int64)
    n = tf.shape(scores, out_type=tf.int64)[1]
    at = tf.where((rows >= 0) & (rows < n))
    index = tf.stack([at[:, 0], tf.gather_nd(rows, at)], axis=1)
    return tf.tensor_scatter_nd_update(
        scores, index, tf.fill(tf.shape(index)[:1], tf.constant(float("-inf"), scores.dtype))
    )


def query_features(model: CMMLModel, context: tf.Tensor, e_u: tf.Tensor | None) -> tf.Tensor:
    """The query tower's input ``[B, x_dim (+ D_u)]``: CMML's task context (its user offset, which
    does not change a ranking, left out) and the user's attribute embedding."""
    parts = [context[:, : model.x_dim]] + ([e_u] if e_u is not None else [])
    return tf.concat(parts, axis=-1)


def candidate_features(item_x: tf.Tensor, baseline: tf.Tensor) -> tf.Tensor:
    """The candidate tower's input ``[n, D_i + 1]``: CMML's item embedding and baseline."""
    return tf.concat([item_x, baseline[:, None]], axis=-1)


# --- the towers and the index --------------------------------------------------------------------------------
class Tower(keras.layers.Layer):
    """Standardised input → ReLU MLP ``hidden`` → linear layer of width ``dim``.

    Args:
      dim: output width d.
      hidden: widths of the ReLU layers.
      **kwargs: passed to ``keras.layers.Layer`` (e.g. ``name``).

    Call args:
      x: ``[..., D]`` float.

    Returns:
      ``[..., dim]``.

    The standardisation (``keras.layers.Normalization``) is fitted once with :meth:`adapt` on the
    tower's training inputs: CMML's embeddings and baselines have unrelated scales.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (256,), **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden = int(dim), [int(h) for h in hidden]
        self.norm = keras.layers.Normalization(axis=-1, name="norm")
        self.mlp = MLP([*self.hidden, self.dim], activate_last=False, name="mlp")

    def adapt(self, x: tf.Tensor | np.ndarray) -> None:
        """Fits the standardisation to inputs ``[m, D]``."""
        self.norm.adapt(x)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self.mlp(self.norm(x), training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "hidden": list(self.hidden)}


class QueryTower(Tower):
    """The cold user's query vector: ``[C; e_u]`` (:func:`query_features`, ``[B, D_q]``) → ``[B, dim]``.

    C is CMML's context of the support set (its items and ratings, through CMML's encoder), so the
    query is computed from the support set alone; e_u embeds the user's attributes (zeros, i.e.
    missing, for a user who gives none).
    """


class CandidateTower(Tower):
    """An item's vector: ``[x_i; b_i]`` (:func:`candidate_features`, ``[n, D_i + 1]``) → ``[n, dim]``,
    from the item's transformed features as CMML embeds them."""


class BruteForceIndex(tf.Module):
    """The catalog's candidate vectors ``[n, d]`` (a variable) and an exact top-N by dot product.

    Rows are catalog rows (the order of the item ``CatalogTable``). Stock ops only (MatMul, TopKV2,
    TensorScatterUpdate): the index is part of the served SavedModel.

    Args:
      candidates: ``[n, d]`` float32 candidate vectors.
    """

    def __init__(self, candidates: tf.Tensor | np.ndarray, name: str = "retrieval_index"):
        super().__init__(name=name)
        self.candidates = tf.Variable(tf.convert_to_tensor(candidates, tf.float32), trainable=False, name="candidates")
        self.size = int(self.candidates.shape[0])

    def propose(self, query: tf.Tensor, n: int | tf.Tensor, exclude: tf.Tensor | None = None) -> tf.Tensor:
        """The ``n`` rows of highest ``query · candidate`` for each task, best first.

        Args:
          query: ``[B, d]``.
          n: N (cut to the index size).
          exclude: ``[B, S]`` rows to leave out (the support items); values outside ``[0, size)``
            (padding, items outside the catalog) exclude nothing. Excluded rows come last, after
            every other row, so they appear only when N exceeds the rows left.
        Returns:
          ``[B, N]`` int64 rows.
        """
        scores = tf.matmul(query, self.candidates, transpose_b=True)
        if exclude is not None:
            scores = exclude_rows(scores, exclude)
        return tf.cast(tf.math.top_k(scores, k=tf.minimum(n, self.size)).indices, tf.int64)


class RetrievalStage(tf.Module):
    """The trained towers and N, as the export takes them (``export_saved_model(retrieval=...)``).

    Args:
      query_tower / candidate_tower: trained towers.
      x_dim: CMML's ``x_dim`` (the width of the context's embedding part).
      candidates: N, the rows CMML re-ranks.
      summary: what the training measured (JSON-serialisable).
    """

    def __init__(
        self,
        query_tower: QueryTower,
        candidate_tower: CandidateTower,
        candidates: int,
        summary: Mapping[str, Any] | None = None,
    ):
        super().__init__(name="retrieval")
        self.query_tower, self.candidate_tower = query_tower, candidate_tower
        self.candidates = int(candidates)
        self._summary = json.dumps(dict(summary or {}))  # a string: nothing for the SavedModel to track

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self._summary)

    def describe(self) -> dict[str, Any]:
        """What :func:`rebuild_stage` needs to build the stage again (towers' config and N)."""
        return {
            "query_tower": self.query_tower.get_config(),
            "candidate_tower": self.candidate_tower.get_config(),
            "candidates": self.candidates,
        }

    def query(self, model: CMMLModel, context: tf.Tensor, e_u: tf.Tensor | None) -> tf.Tensor:
        """``[B, d]`` query vectors from CMML's context ``[B, context_dim]`` and e_u ``[B, D_u]``."""
        return self.query_tower(query_features(model, context, e_u), training=False)

    def index(self, item_x: tf.Tensor, baseline: tf.Tensor) -> BruteForceIndex:
        """The index of catalog rows from CMML's ``item_x [n, D_i]`` and ``baseline [n]``."""
        return BruteForceIndex(self.candidate_tower(candidate_features(item_x, baseline), training=False))


def rebuild_stage(description: Mapping[str, Any], model: CMMLModel) -> RetrievalStage:
    """The stage :meth:`RetrievalStage.describe` described, for ``model``, its variables built
    (untrained: restore them next, e.g. from the SavedModel's checkpoint as its ``retrieval``)."""
    query = QueryTower.from_config(description["query_tower"])
    candidate = CandidateTower.from_config(description["candidate_tower"])
    users = model.user_embedding.output_dim if model.user_embedding is not None else 0
    query(tf.zeros([1, model.x_dim + users]))
    candidate(tf.zeros([1, model.item_embedding.output_dim + 1]))
    return RetrievalStage(query, candidate, description["candidates"])


class RetrievalModel(tfrs.models.Model):
    """Trains the towers with ``tfrs.tasks.Retrieval``: a batch is ``b`` (support set, positive row)
    pairs; the candidates are the b positives and ``negatives`` uniformly drawn catalog rows. A
    candidate with the positive's row is not a negative (accidental hits removed), nor is another
    positive of the same support set (masked): each positive competes with items outside CMML's top.

    Args:
      query_tower / candidate_tower: the towers trained.
      queries: ``[T, D_q]`` query features of the T support sets (:func:`query_features`).
      catalog: ``[n, D_i + 1]`` candidate features of every catalog row (:func:`candidate_features`).
      negatives: sampled catalog rows per batch.
      seed: seeds the negative sampler.
    """

    def __init__(
        self,
        query_tower: QueryTower,
        candidate_tower: CandidateTower,
        queries: tf.Tensor | np.ndarray,
        catalog: tf.Tensor,
        negatives: int,
        seed: int,
    ):
        super().__init__(name="retrieval_training")
        self.query_tower, self.candidate_tower = query_tower, candidate_tower
        self.queries = tf.convert_to_tensor(queries, tf.float32)
        self.catalog = tf.convert_to_tensor(catalog, tf.float32)
        self.negatives = int(negatives)
        self.sampler = tf.random.Generator.from_seed(seed)
        self.task = tfrs.tasks.Retrieval(remove_accidental_hits=True)

    def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``inputs``: ``support_set [b]`` int64 (rows of ``queries``) and ``positive [b]`` int64 catalog rows."""
        n = tf.shape(self.catalog, out_type=tf.int64)[0]
        negative = self.sampler.uniform([self.negatives], 0, n, dtype=tf.int64)
        rows = tf.concat([tf.cast(inputs["positive"], tf.int64), negative], axis=0)
        owner = tf.cast(inputs["support_set"], tf.int64)
        candidate_owner = tf.concat([owner, -tf.ones_like(negative)], axis=0)
        own = tf.eye(tf.size(owner), tf.size(rows), dtype=tf.bool)
        mask = tf.logical_or(own, owner[:, None] != candidate_owner[None, :])
        query = self.query_tower(tf.gather(self.queries, owner), training=training)
        candidates = self.candidate_tower(tf.gather(self.catalog, rows), training=training)
        return self.task(query, candidates, candidate_ids=rows, compute_metrics=False, score_mask=mask)


# --- distillation ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Distilled:
    """Support sets with CMML's ranking of the catalog: query features ``[T, D_q]``, CMML's top rows
    ``[T, P]`` (best first) and the support rows ``[T, S]`` (-1 = none)."""

    query: np.ndarray
    top: np.ndarray
    support: np.ndarray


class Teacher:
    """CMML's exhaustive top rows of the catalog for support sets (what ``recommend`` returns without
    the retrieval stage), with the query tower's inputs.

    Args:
      model: the trained CMML model.
      items: the catalog's transformed item features (``name → [n]`` / ``[n, L]``, catalog rows).
      row_of_item_id: transformed ``item_id`` → catalog row (-1 for none), to leave the support items
        out; None when the model has no ``item_id`` feature (nothing is left out).
    """

    def __init__(self, model: CMMLModel, items: Mapping[str, np.ndarray], row_of_item_id: np.ndarray | None):
        self.model = model
        x, base = catalog_embeddings(model, {k: tf.constant(v) for k, v in items.items()})
        self.item_x, self.baseline = x, base
        self.relevance = catalog_relevance(model, tf.constant(items["item_id"])) if model.relevance else None
        self.size = int(x.shape[0])
        self.row_of_item_id = None if row_of_item_id is None else tf.constant(row_of_item_id, tf.int64)
        self._chunk_scores = tf.function(self._scores, autograph=False, reduce_retracing=True)

    def _scores(self, context, e_u, item_x, baseline, relevance=None, support=None):
        relevance = None if relevance is None else (relevance[0][None], relevance[1][None])
        return score_items(self.model, context, e_u, item_x[None], baseline[None], relevance, support)

    def support_rows(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """``[B, S]`` catalog rows of the support items (-1 for padding and items without a row)."""
        mask = features[key(SUPPORT, MASK)] > 0
        if self.row_of_item_id is None:
            return -tf.ones(tf.shape(mask), tf.int64)
        ids = tf.cast(features[key(SUPPORT, "item_id")], tf.int64)
        size = tf.shape(self.row_of_item_id, out_type=tf.int64)[0]
        rows = tf.gather(self.row_of_item_id, tf.clip_by_value(ids, 0, size - 1))
        return tf.where(mask & (ids < size), rows, -1)

    def __call__(self, features: Mapping[str, tf.Tensor], top: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """A batch of episodes → (query features ``[B, D_q]``, CMML's top ``top`` rows ``[B, top]``,
        support rows ``[B, S]``)."""
        model = self.model
        context = model.encode_context(features)
        e_u = model.task_user(features)
        chunk = max(1, SCORED_ROWS_PER_CALL // max(1, int(context.shape[0])))
        scores = tf.concat(
            [
                self._chunk_scores(
                    context,
                    e_u,
                    self.item_x[i : i + chunk],
                    self.baseline[i : i + chunk],
                    None if self.relevance is None else tuple(t[i : i + chunk] for t in self.relevance),
                    None if self.relevance is None else features,
                )
                for i in range(0, self.size, chunk)
            ],
            axis=1,
        )
        support = self.support_rows(features)
        best = tf.math.top_k(exclude_rows(scores, support), k=min(top, self.size)).indices
        return query_features(model, context, e_u), tf.cast(best, tf.int64), support

    def distill(
        self, batches: Iterable[Mapping[str, tf.Tensor]], top: int, limit: int | None, log: Log | None = None
    ) -> Distilled:
        """The teacher over episode batches, at most ``limit`` support sets (progress to ``log``)."""
        query, best, support, count, start, said = [], [], [], 0, time.time(), time.time()
        for features in batches:
            if log is not None and time.time() - said > 60:
                log(f"  retrieval: CMML ranked the catalog for {count:,} support sets ({time.time() - start:.0f} s)")
                said = time.time()
            features = {k: v for k, v in features.items() if k.startswith(SUPPORT + "_")}
            if limit is not None and count >= limit:
                break
            q, b, s = (t.numpy() for t in self(features, top))
            take = len(q) if limit is None else min(len(q), limit - count)
            query.append(q[:take]), best.append(b[:take]), support.append(s[:take])
            count += take
        if not count:
            raise ValueError("no episodes to distill CMML's ranking from")
        width = max(s.shape[1] for s in support)
        support = [np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=-1) for s in support]
        return Distilled(np.concatenate(query), np.concatenate(best), np.concatenate(support))


def catalog_items(root: str, model: CMMLModel) -> tuple[list, dict[str, np.ndarray]]:
    """The item catalog of a TaskGen output as the model's transformed item features per catalog row
    (the rows of the served ``CatalogTable``): (raw ids, ``name → [n]`` / ``[n, L]``)."""
    keys, _ = T.read_catalog(T.catalog_path(root, "item"))
    tables = episodes.catalog_tables(root, model.item_specs)  # row 0: outside the catalog
    return list(keys), {s.name: tables[s.name][1:] for s in model.item_specs}


def catalog_size(root: str) -> int:
    """Items in the catalog of a TaskGen output."""
    keys, _ = T.read_catalog(T.catalog_path(root, "item"))
    return len(keys)


def row_of_item_id(items: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Transformed ``item_id`` → catalog row for ids held by one row only (vocabulary ids; an OOV
    bucket shared by several items maps to -1); None without an ``item_id`` feature."""
    if "item_id" not in items:
        return None
    ids = np.asarray(items["item_id"], np.int64)
    out = np.full(int(ids.max(initial=0)) + 1, -1, np.int64)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    single = counts == 1
    out[values[single]] = first[single]
    return out


def agreement(top: np.ndarray, proposed: np.ndarray, grid: Sequence[int]) -> dict[int, float]:
    """Share of each task's exhaustive top ``top [T, k]`` found in the first N of ``proposed [T, M]``,
    for each N of ``grid`` (N ≤ M): the two-stage top-k's agreement with the exhaustive top-k."""
    match = top[:, :, None] == proposed[:, None, :]  # [T, k, M]
    position = np.where(match.any(-1), match.argmax(-1), proposed.shape[1])  # [T, k]
    return {int(n): float((position < n).mean()) for n in grid}


def train_retrieval(
    model: CMMLModel,
    data,
    training,
    config: RetrievalConfig | Mapping[str, Any] | None = None,
    log: Log = print,
) -> RetrievalStage:
    """Trains the retrieval stage for a trained CMML ``model`` on TaskGen's output.

    Args:
      model: the trained CMML model (frozen here: its ranking is the target).
      data: :class:`cmml.models.training.TaskData` (meta-train episodes, meta_valid episodes, catalog).
      training: the CMML :class:`~cmml.models.training.TrainingConfig` (episode sizes, batch of tasks).
      config: :class:`RetrievalConfig` or its mapping.
    Returns:
      the :class:`RetrievalStage`, ``summary`` holding the agreement on meta_valid for every N of the
      grid (and for random candidates), N, the support sets and the time taken.
    """
    config = config if isinstance(config, RetrievalConfig) else RetrievalConfig.from_dict(config or {})
    start = time.time()
    tf.keras.utils.set_random_seed(config.seed)
    _, items = catalog_items(data.root, model)
    teacher = Teacher(model, items, row_of_item_id(items))
    n = teacher.size
    grid = [g for g in config.candidate_grid if g < n] or [n]

    draws = dataclasses.replace(training, episodes_per_task=config.episodes_per_task, steps_per_epoch=None)
    budget = max(1, config.teacher_rows // n)  # support sets CMML ranks the whole catalog for
    train = teacher.distill(data.training(draws, config.seed)(0), config.positives, budget, log)
    valid = teacher.distill(data.valid, config.k, min(config.max_valid_tasks, max(32, budget // 4)), log)
    log(
        f"  retrieval: CMML's top {config.positives} of {n:,} items for {len(train.query):,} meta-train support sets "
        f"and its top {config.k} for {len(valid.query):,} meta_valid tasks ({time.time() - start:.0f} s)"
    )

    query_tower = QueryTower(config.dim, config.hidden, name="query_tower")
    candidate_tower = CandidateTower(config.dim, config.hidden, name="candidate_tower")
    catalog = candidate_features(teacher.item_x, teacher.baseline)
    query_tower.adapt(train.query)
    candidate_tower.adapt(catalog)
    net = RetrievalModel(query_tower, candidate_tower, train.query, catalog, config.negatives, config.seed)
    net.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    pairs = {
        "support_set": np.repeat(np.arange(len(train.query)), train.top.shape[1]),
        "positive": train.top.reshape(-1),
    }
    dataset = (
        tf.data.Dataset.from_tensor_slices(pairs)
        .shuffle(len(pairs["positive"]), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    valid_query = tf.constant(valid.query, tf.float32)

    def measure() -> dict[int, float]:
        index = BruteForceIndex(candidate_tower(catalog, training=False))
        proposed = index.propose(query_tower(valid_query, training=False), max(grid), valid.support).numpy()
        return agreement(valid.top, proposed, grid)

    untrained = measure()
    best, best_weights, history, waited = -1.0, None, [], 0
    for epoch in range(config.epochs):
        loss = net.fit(dataset, epochs=1, verbose=0).history["loss"][-1]
        measured = measure()
        mean = float(np.mean(list(measured.values())))  # over the grid: every N counts
        history.append({"epoch": epoch + 1, "loss": float(loss), "agreement": measured})
        if mean > best:
            best, best_weights, waited = mean, (query_tower.get_weights(), candidate_tower.get_weights()), 0
        else:
            waited += 1
        log(
            f"  retrieval epoch {epoch + 1:3d}/{config.epochs}: loss {loss:.4f}, meta_valid top-{config.k} agreement "
            + ", ".join(f"N={g} {measured[g]:.3f}" for g in grid)
            + (" *" if waited == 0 else "")
        )
        if waited >= config.patience or best >= 1.0:
            break
    query_tower.set_weights(best_weights[0])
    candidate_tower.set_weights(best_weights[1])
    final = measure()
    if config.candidates is not None:
        chosen = min(config.candidates, n)
    else:
        reached = [g for g in grid if final[g] >= config.target_agreement]
        chosen = reached[0] if reached else grid[-1]
        if not reached:
            log(
                f"  retrieval: no N of {grid} reaches the target agreement {config.target_agreement} on meta_valid; "
                f"N = {chosen} ({final[chosen]:.3f})"
            )
    rng = np.random.default_rng(config.seed)
    random_rows = np.stack([rng.permutation(n)[: max(grid)] for _ in range(len(valid.top))])
    summary = {
        "catalog_items": n,
        "candidates": chosen,
        "k": config.k,
        "meta_train_support_sets": len(train.query),
        "meta_valid_tasks": len(valid.query),
        "agreement": {str(g): v for g, v in final.items()},
        "agreement_untrained": {str(g): v for g, v in untrained.items()},
        "agreement_random": {str(g): v for g, v in agreement(valid.top, random_rows, grid).items()},
        "history": history,
        "seconds": time.time() - start,
    }
    log(
        f"  retrieval: N = {chosen}, meta_valid top-{config.k} agreement {final.get(chosen, 1.0):.3f} "
        f"({time.time() - start:.0f} s)"
    )
    return RetrievalStage(query_tower, candidate_tower, chosen, summary)
