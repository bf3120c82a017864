"""Exporting a CMML model as a SavedModel with the serving signatures of SPEC §4.

Two contracts, by what the export holds:

**Items by id** (the pipeline's ``Format-Serving``: the tf.Transform graph and TaskGen's item
catalog inside the model). Every item is named by id; the task's user by ``user_id [B]`` (string;
with the user catalog, a known user's attributes come from the table; ``""`` = a new user) and its
attributes ``user_<field> [B]`` (raw values; ``""`` / 0 = unknown):

* ``serving_default``: ``support_item_id [B, S]`` (string, ``""`` pads), ``support_label [B, S]``,
  ``query_item_id [B, Q]`` and the user inputs → ``scores [B, Q]`` (adapt and score in one call);
* ``encode_context``: the support and user inputs → ``context [B, C]`` and the encoder ``state``;
* ``score``: ``context`` + ``query_item_id`` and the user inputs → ``scores``;
* ``update_context``: ``state`` + ``new_item_id``, ``new_label`` and the user inputs → new ``state``
  and ``context`` (online updates; from an empty state equal to ``encode_context``);
* ``recommend``: the support and user inputs and ``k [B]`` (int32, per task) → ``item_id [B, K]`` and
  ``scores [B, K]`` (K = max k; a task's columns past its own k hold ``""`` / -inf): the top of the
  whole catalog, the task's support items left out. A CMML model with the catalog relevance head
  (``catalog_weight`` > 0) ranks by the head's logits (plus ``catalog_rating_weight`` × the predicted
  rating); without it, by the predicted rating. With a retrieval stage (``retrieval``,
  :mod:`cmml.models.retrieval`) CMML scores only the N candidates its brute-force index proposes
  (k is then cut to N);
* ``rank_items`` (with the relevance head only): ``serving_default``'s inputs → ``scores [B, Q]``, what
  ``recommend`` ranks by, for the items named (re-ranking a candidate list the way ``recommend`` would);
* ``serve_tf_examples``: ``support_examples [B, S]`` and ``query_examples [B, Q]`` serialized raw
  interaction tf.Examples (``""`` pads) → ``scores``: items outside the catalog, with their attributes;
* ``serve_raw``: the episode tensors below with raw values → ``scores``: the same, as columns.

The transformed item (and user) table is inside the SavedModel (a hash table from id to row, a
variable per feature); an item id outside the catalog gets its id's transform (an OOV bucket) and no
attributes.

**Episode tensors** (no catalog: the ``Format-Ids`` model on transformed ids, or a model exported
with its preprocessing only): inputs are the tensors of ``schemas/episodes.md`` with batch axis B
= tasks (``support_<f>``, ``support_label``, ``support_mask``, ``query_<f>``, ``query_mask``):
``serving_default``, ``encode_context``, ``score``, ``update_context`` (``new_<f>``) as above, and
``serve_tf_examples`` when an ``example_spec`` is given.

Episode models other than CMML (the DCN baseline) have no context to encode: they export
``serving_default``, ``recommend``, ``serve_tf_examples`` and ``serve_raw`` only.

An optional ``preprocess`` callable maps raw interaction-level features to transformed ids (the
pipeline attaches the tf.Transform graph here so that serving takes raw features). The exported
graph uses stock TensorFlow ops only; :func:`graph_ops` lists them for checks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import tensorflow as tf

import cmml  # noqa: F401
from cmml.data.records import LABEL as EXAMPLE_LABEL  # label feature of a raw interaction example
from cmml.models.cmml import CMMLModel
from cmml.models.retrieval import (
    RetrievalStage,
    catalog_embeddings,
    catalog_relevance,
    exclude_rows,
    score_items,
    user_embedding,
)
from cmml.schemas.episodes import LABEL, MASK, QUERY, SUPPORT, key

NEW = "new"  # prefix of the interactions fed to update_context
SUPPORT_EXAMPLES = "support_examples"  # serve_tf_examples inputs: [B, S] / [B, Q] serialized tf.Examples
QUERY_EXAMPLES = "query_examples"
PY_FUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}

Preprocess = Callable[[Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]]


def _feature_specs(
    model: CMMLModel, part: str, raw_specs: Mapping[str, tf.TensorSpec] | None
) -> dict[str, tf.TensorSpec]:
    """Input specs of one part; ``raw_specs`` (name → per-row spec) replaces the id specs."""
    specs = {}
    if raw_specs is not None:
        for name, spec in raw_specs.items():
            specs[key(part, name)] = tf.TensorSpec([None, None] + list(spec.shape), spec.dtype, name=key(part, name))
    else:
        for s in model.feature_specs:
            shape = [None, None] if s.kind == "categorical" else [None, None, None]
            specs[key(part, s.name)] = tf.TensorSpec(shape, tf.int64, name=key(part, s.name))
    specs[key(part, MASK)] = tf.TensorSpec([None, None], tf.float32, name=key(part, MASK))
    if part != QUERY:
        specs[key(part, LABEL)] = tf.TensorSpec([None, None], tf.float32, name=key(part, LABEL))
    return specs


class CatalogTable(tf.Module):
    """A transformed user or item table inside the SavedModel: raw id → row, and each feature's values per row.

    Args:
      side: 'user' or 'item'.
      keys: raw ids, one per row.
      features: feature name → ``[n]`` (categorical) or ``[n, L]`` (multi, 0-padded) int64 indices.
    Row ``n`` (an id outside the catalog) holds zeros: missing.
    """

    def __init__(self, side: str, keys, features: Mapping[str, object]):
        super().__init__(name=f"{side}_catalog")
        import numpy as np

        n = self.size = len(keys)
        self.keys = tf.Variable(tf.constant(keys, tf.string), trainable=False, name="keys")
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.range(n, dtype=tf.int64)),
            default_value=tf.constant(n, tf.int64),
        )
        self.features = {
            name: tf.Variable(np.concatenate([v, np.zeros((1,) + v.shape[1:], v.dtype)]), trainable=False, name=name)
            for name, v in features.items()
        }

    def gather(self, name: str, rows: tf.Tensor, kind: str) -> tf.Tensor:
        """Values of ``name`` at ``rows`` ([N] / [N, L]); zeros for a feature the catalog lacks."""
        if name in self.features:
            return tf.gather(self.features[name], rows)
        return tf.zeros(tf.stack([tf.size(rows), 1]) if kind == "multi" else tf.shape(rows), tf.int64)


def _where_rows(use: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row i of ``a`` where ``use[i]``, else of ``b`` ([N] or [N, L]; L may differ: 0-padded to the wider)."""
    if a.shape.rank == 2:
        width = tf.maximum(tf.shape(a)[1], tf.shape(b)[1])
        a = tf.pad(a, [[0, 0], [0, width - tf.shape(a)[1]]])
        b = tf.pad(b, [[0, 0], [0, width - tf.shape(b)[1]]])
        use = use[:, None]
    return tf.where(use, a, b)


USER_ID_INPUT = "user_id"  # items-by-id signatures: the task's user, looked up in the user catalog


def user_input_name(feature: str) -> str:
    """The items-by-id input of a user attribute: ``user_<field>`` (``gender`` → ``user_gender``;
    ``user_id`` stays itself)."""
    return feature if feature.startswith("user_") else f"user_{feature}"


class CMMLServingModule(tf.Module):
    """Holds the model (and optional preprocessing) and the serving functions.

    ``model`` is a :class:`CMMLModel` (all signatures) or any episode model with ``feature_specs``
    whose ``call(features) → [B, Q]`` scores the query rows (``serving_default`` only).
    """

    def __init__(
        self,
        model: tf.keras.Model,
        preprocess: Preprocess | None = None,
        raw_specs: Mapping[str, tf.TensorSpec] | None = None,
        example_spec: Mapping[str, object] | None = None,
        catalog: CatalogTable | None = None,
        user_catalog: CatalogTable | None = None,
        retrieval: RetrievalStage | None = None,
    ):
        super().__init__(name="cmml_serving")
        if catalog is not None and raw_specs is None:
            raise ValueError("the item catalog needs preprocess and raw_specs (user attributes arrive raw)")
        if user_catalog is not None and catalog is None:
            raise ValueError("the user catalog serves the items-by-id signatures, which need the item catalog")
        if (preprocess is None) != (raw_specs is None):
            raise ValueError("preprocess and raw_specs go together")
        if example_spec is not None and raw_specs is None:
            raise ValueError("example_spec needs preprocess and raw_specs (examples carry raw features)")
        if retrieval is not None and (catalog is None or not isinstance(model, CMMLModel)):
            raise ValueError("a retrieval stage serves recommend: it needs a CMML model and the item catalog")
        self.model = model
        self.preprocess_layer = preprocess
        self.raw_specs = dict(raw_specs) if raw_specs else None
        self.example_spec = dict(example_spec) if example_spec else None
        self.catalog = catalog
        self.user_catalog = user_catalog
        self.is_cmml = isinstance(model, CMMLModel)

        # autograph=False: the serving functions and the model use static Python control flow only, and
        # converting them (with every Keras layer they call) took most of the export's time
        def fn(python_function, *signature):
            return tf.function(python_function, input_signature=list(signature), autograph=False)

        support = _feature_specs(model, SUPPORT, self.raw_specs)
        query = _feature_specs(model, QUERY, self.raw_specs)
        if self.example_spec is not None:
            examples = {k: tf.TensorSpec([None, None], tf.string, name=k) for k in (SUPPORT_EXAMPLES, QUERY_EXAMPLES)}
            self.serve_tf_examples = fn(self._serve_examples, examples)
        if self.is_cmml:
            self.context_dim = model.context_dim
            self.state_dim = model.state_size
            context = tf.TensorSpec([None, self.context_dim], tf.float32, name="context")
            state = tf.TensorSpec([None, self.state_dim], tf.float32, name="state")
        if self.catalog is None:  # episode tensors
            self.serving_default = fn(self._serve, {**support, **query})
            if self.is_cmml:
                self.encode_context = fn(self._encode, support)
                self.score = fn(self._score, context, query)
                self.update_context = fn(self._update, state, _feature_specs(model, NEW, self.raw_specs))
            return
        # items by id
        from cmml.models.training import describe_model

        # what a catalog refresh rebuilds the model from (pipeline/catalog_refresh.py)
        self.model_description = tf.Variable(json.dumps(describe_model(model)), trainable=False, name="model_json")
        self.serve_raw = fn(self._serve, {**support, **query})
        user = {}
        for s in model.feature_specs:
            if s.side == "user":
                name, spec = user_input_name(s.name), self.raw_specs[s.name]
                user[name] = tf.TensorSpec([None] + list(spec.shape), spec.dtype, name=name)
        if self.user_catalog is not None:  # a known user is named by id; "" = a new user
            user[USER_ID_INPUT] = tf.TensorSpec([None], tf.string, name=USER_ID_INPUT)

        def by_id(part: str, label: bool) -> dict[str, tf.TensorSpec]:
            out = {f"{part}_item_id": tf.TensorSpec([None, None], tf.string, name=f"{part}_item_id")}
            if label:
                out[key(part, LABEL)] = tf.TensorSpec([None, None], tf.float32, name=key(part, LABEL))
            return {**out, **user}

        self.serving_default = fn(self._serve_ids, {**by_id(SUPPORT, True), **by_id(QUERY, False)})
        if self.is_cmml:
            self.encode_context = fn(self._encode_ids, by_id(SUPPORT, True))
            self.score = fn(self._score_ids, context, by_id(QUERY, False))
            self.update_context = fn(self._update_ids, state, by_id(NEW, True))
        # every catalog item's transformed attributes, computed once here rather than in every request
        everything = self.catalog.keys.read_value()
        rows = tf.range(tf.shape(everything, out_type=tf.int64)[0])
        own_id = self._transform({s.name: everything for s in model.feature_specs if s.name == "item_id"})
        self.catalog_items = {
            s.name: tf.Variable(
                own_id[s.name] if s.name in own_id else self.catalog.gather(s.name, rows, s.kind),
                trainable=False,
                name=f"catalog_{s.name}",
            )
            for s in model.feature_specs
            if s.side == "item"
        }
        self.retrieval_index = None
        # recommend runs the rating network on catalog rows unless it ranks by the relevance head alone
        rating_rows = self.is_cmml and model.ranks_by_score
        if retrieval is not None and self.is_cmml and not rating_rows:
            raise ValueError("this model ranks by its relevance head alone: a retrieval stage would have nothing to do")
        self.catalog_x = self.catalog_baseline = self.catalog_relevance = None
        if rating_rows:  # and their embeddings and baselines: a request only scores them
            x, baseline = catalog_embeddings(model, self.catalog_items)
            self.catalog_x = tf.Variable(x, trainable=False, name="catalog_x")
            self.catalog_baseline = tf.Variable(baseline, trainable=False, name="catalog_base")
        if self.is_cmml and model.relevance is not None:  # recommend's ranking: the head's item vectors
            v, b = catalog_relevance(model, self.catalog_items["item_id"])
            self.catalog_relevance = (
                tf.Variable(v, trainable=False, name="catalog_relevance_v"),
                tf.Variable(b, trainable=False, name="catalog_relevance_b"),
            )
        if retrieval is not None:  # the towers, and the catalog's candidate vectors: N rows per request
            self.retrieval = retrieval
            # what a catalog refresh rebuilds the stage from (retrieval.rebuild_stage), beside model_description
            self.retrieval_description = tf.Variable(
                json.dumps(retrieval.describe()), trainable=False, name="retrieval_json"
            )
            self.retrieval_index = retrieval.index(self.catalog_x, self.catalog_baseline)
            self.candidates = min(retrieval.candidates, self.catalog.size)
        if self.is_cmml and model.relevance is not None:
            self.rank_items = fn(self._rank_ids, {**by_id(SUPPORT, True), **by_id(QUERY, False)})
        top = by_id(SUPPORT, True)
        # k per task ([B], not a scalar): TF Serving batches only inputs with a batch dimension
        top["k"] = tf.TensorSpec([None], tf.int32, name="k")
        self.recommend = fn(self._recommend, top)

    def _ids(self, features: Mapping[str, tf.Tensor], part: str) -> dict[str, tf.Tensor]:
        """Raw → transformed ids for one part, keeping label and mask."""
        out = {k: v for k, v in features.items() if k in (key(part, LABEL), key(part, MASK))}
        if self.preprocess_layer is None:
            out.update({k: v for k, v in features.items() if k.startswith(part + "_")})
            return out
        raw = {name: features[key(part, name)] for name in self.raw_specs}
        # [B, R, ...] → [B·R, ...] for the per-interaction transform, then back
        lead = tf.shape(features[key(part, MASK)])
        flat = {name: tf.reshape(v, tf.concat([[-1], tf.shape(v)[2:]], 0)) for name, v in raw.items()}
        ids = self.preprocess_layer(flat)
        for s in self.model.feature_specs:
            v = ids[s.name]
            out[key(part, s.name)] = tf.reshape(v, tf.concat([lead, tf.shape(v)[1:]], 0))
        return out

    def _rename(self, features: Mapping[str, tf.Tensor], part: str, to: str) -> dict[str, tf.Tensor]:
        return {to + k[len(part) :]: v for k, v in features.items()}

    def _serve(self, features):
        f = {**self._ids(features, SUPPORT), **self._ids(features, QUERY)}
        return {"scores": self.model(f, training=False)}

    def _parse(self, serialized: tf.Tensor, part: str) -> dict[str, tf.Tensor]:
        """[B, R] serialized raw examples ("" = padding) → the raw episode inputs of one part."""
        lead = tf.shape(serialized)
        parsed = tf.io.parse_example(tf.reshape(serialized, [-1]), self.example_spec)
        out = {}
        for name, spec in self.raw_specs.items():
            value = parsed[name]
            if isinstance(value, tf.SparseTensor):
                if not spec.shape.rank:  # at least one column: no example of the batch may have the feature
                    width = tf.maximum(value.dense_shape[1], 1)
                    value = tf.sparse.reset_shape(value, tf.stack([value.dense_shape[0], width]))
                value = tf.sparse.to_dense(value, default_value="" if spec.dtype == tf.string else 0)
            if spec.shape.rank:
                value = tf.reshape(value, tf.concat([lead, tf.shape(value)[1:]], 0))
            else:
                value = tf.reshape(value[:, 0] if value.shape.rank == 2 else value, lead)
            out[key(part, name)] = tf.cast(value, spec.dtype)
        out[key(part, MASK)] = tf.cast(tf.strings.length(serialized) > 0, tf.float32)
        if part != QUERY:
            out[key(part, LABEL)] = tf.reshape(tf.cast(parsed[EXAMPLE_LABEL], tf.float32), lead)
        return out

    def _serve_examples(self, examples):
        return self._serve(
            {**self._parse(examples[SUPPORT_EXAMPLES], SUPPORT), **self._parse(examples[QUERY_EXAMPLES], QUERY)}
        )

    def _transform(self, rows: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self.preprocess_layer(rows) if rows else {}

    def _task_users(self, inputs) -> dict[str, tf.Tensor]:
        """The task's transformed user attributes ([B] / [B, L]): a user of the user catalog gets the
        table's, any other user the request's raw ones through the transform."""
        user_specs = [s for s in self.model.feature_specs if s.side == "user"]
        users = self._transform({s.name: inputs[user_input_name(s.name)] for s in user_specs})
        if self.user_catalog is not None and user_specs:
            rows = self.user_catalog.rows.lookup(inputs[USER_ID_INPUT])
            known = rows < self.user_catalog.size
            for s in user_specs:
                users[s.name] = _where_rows(known, self.user_catalog.gather(s.name, rows, s.kind), users[s.name])
        return users

    def _items_by_id(self, ids: tf.Tensor, users: Mapping[str, tf.Tensor], part: str) -> dict[str, tf.Tensor]:
        """One part's episode tensors for items named by id ([B, R] strings, "" pads): item attributes
        from the catalog, the task's user attributes broadcast to its rows."""
        lead = tf.shape(ids)
        flat = tf.reshape(ids, [-1])
        rows = self.catalog.rows.lookup(flat)
        own_id = self._transform({s.name: flat for s in self.model.feature_specs if s.name == "item_id"})
        task_of_row = tf.repeat(tf.range(lead[0]), lead[1])
        features = {}
        for s in self.model.feature_specs:
            if s.side == "user":
                value = tf.gather(users[s.name], task_of_row)
            else:
                value = own_id[s.name] if s.name in own_id else self.catalog.gather(s.name, rows, s.kind)
            features[key(part, s.name)] = tf.reshape(value, tf.concat([lead, tf.shape(value)[1:]], 0))
        features[key(part, MASK)] = tf.cast(tf.strings.length(ids) > 0, tf.float32)
        return features

    def _support_by_id(self, inputs, users, part: str = SUPPORT) -> dict[str, tf.Tensor]:
        """The support set's episode tensors from items named by id (``new_*`` for update_context)."""
        features = {key(SUPPORT, LABEL): inputs[key(part, LABEL)]}
        features.update(self._items_by_id(inputs[f"{part}_item_id"], users, SUPPORT))
        return features

    def _serve_ids(self, inputs):
        """Items by id (attributes from the catalog), the task's user attributes broadcast to its rows."""
        users = self._task_users(inputs)
        features = self._support_by_id(inputs, users)
        features.update(self._items_by_id(inputs["query_item_id"], users, QUERY))
        return {"scores": self.model(features, training=False)}

    def _encode_ids(self, inputs):
        return self._encoded(self._support_by_id(inputs, self._task_users(inputs)))

    def _score_ids(self, context, inputs):
        query = self._items_by_id(inputs["query_item_id"], self._task_users(inputs), QUERY)
        return {"scores": self.model.score(context, query, training=False)["score"]}

    def _rank_ids(self, inputs):
        """What recommend ranks by (the relevance head's score), for the query items named by id."""
        users = self._task_users(inputs)
        features = self._support_by_id(inputs, users)
        query = self._items_by_id(inputs["query_item_id"], users, QUERY)
        model = self.model
        ids = query[key(QUERY, "item_id")]
        item_x = baseline = None  # the rating network's inputs, only when the ranking blends the score in
        if model.ranks_by_score:
            item_x = model.item_embedding({s.name: query[key(QUERY, s.name)] for s in model.item_specs})
            baseline = model.baseline(query, QUERY)
        scores = score_items(
            model,
            model.encode_context(features),
            user_embedding(model, users),
            item_x,
            baseline,
            catalog_relevance(model, ids),
            features,
        )
        return {"scores": scores}

    def _update_ids(self, state, inputs):
        return self._updated(state, self._support_by_id(inputs, self._task_users(inputs), NEW))

    def _model_on_catalog(self, features, users, batch, n):
        """Scores of every catalog item through the model's call: the query is the whole catalog."""
        features = dict(features)
        for s in self.model.feature_specs:  # the task's user on each row
            value = users[s.name][:, None] if s.side == "user" else self.catalog_items[s.name][None]
            shape = tf.concat([tf.stack([batch, n]), tf.shape(value)[2:]], 0)
            features[key(QUERY, s.name)] = tf.broadcast_to(value, shape)
        features[key(QUERY, MASK)] = tf.ones(tf.stack([batch, n]), tf.float32)
        return self.model(features, training=False)

    def _score_catalog(self, features, users, support_rows):
        """CMML's scores from the task's context and the catalog's embeddings computed at export (only
        the context-dependent part runs per request): of every catalog item ``[B, n]`` (rows None), or
        with a retrieval stage of the N rows its index proposes ``[B, N]`` (and those rows)."""
        model = self.model
        context = model.encode_context(features)
        e_u = user_embedding(model, users)
        relevance = self.catalog_relevance
        if self.retrieval_index is None:
            if relevance is not None:
                relevance = (relevance[0][None], relevance[1][None])
            rows = (None, None) if self.catalog_x is None else (self.catalog_x[None], self.catalog_baseline[None])
            return score_items(model, context, e_u, *rows, relevance, features), None
        query = self.retrieval.query(model, context, e_u)
        rows = self.retrieval_index.propose(query, self.candidates, exclude=support_rows)
        item_x, baseline = tf.gather(self.catalog_x, rows), tf.gather(self.catalog_baseline, rows)
        if relevance is not None:
            relevance = (tf.gather(relevance[0], rows), tf.gather(relevance[1], rows))
        return score_items(model, context, e_u, item_x, baseline, relevance, features), rows

    def _recommend(self, inputs):
        """The top ``k`` items of the whole catalog for each task, its support items left out (with a
        retrieval stage: the top ``k`` of the N candidates it proposes, k cut to N)."""
        users = self._task_users(inputs)
        support = inputs["support_item_id"]
        batch = tf.shape(support)[0]
        n = self.catalog.size  # fixed at export
        features = self._support_by_id(inputs, users)
        # the support items' rows, left out (an id outside the catalog, or padding, has none: row n)
        support_rows = self.catalog.rows.lookup(support)
        if not self.is_cmml:
            return self._top(exclude_rows(self._model_on_catalog(features, users, batch, n), support_rows), inputs["k"])
        scores, rows = self._score_catalog(features, users, support_rows)
        if rows is None:
            return self._top(exclude_rows(scores, support_rows), inputs["k"])
        # a support row proposed (only when N exceeds the rows left) is still left out
        seen = tf.reduce_any(rows[:, :, None] == support_rows[:, None, :], axis=-1)
        return self._top(tf.where(seen, tf.constant(float("-inf"), scores.dtype), scores), inputs["k"], rows)

    def _top(self, scores: tf.Tensor, k: tf.Tensor, rows: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Each task's top ``k[b]`` of ``scores [B, M]`` (column j = catalog row j, or ``rows[b, j]``):
        ``max(k)`` columns (cut to M); a task's columns past its own k hold ``""`` and ``-inf``."""
        width = tf.minimum(tf.maximum(tf.reduce_max(k), 0), tf.shape(scores)[1])
        top = tf.math.top_k(scores, k=width)
        chosen = top.indices if rows is None else tf.gather(rows, top.indices, batch_dims=1)
        past = tf.range(width)[None, :] >= k[:, None]
        return {
            "item_id": tf.where(past, tf.constant(""), tf.gather(self.catalog.keys, chosen)),
            "scores": tf.where(past, tf.constant(float("-inf"), scores.dtype), top.values),
        }

    def _encoded(self, support: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """encode_context on the support set's transformed episode tensors."""
        state = self.model.update_state(self.model.initial_state(tf.shape(support[key(SUPPORT, MASK)])[0]), support)
        return {"context": self.model.context_from_state(state), "state": state}

    def _updated(self, state: tf.Tensor, new: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """update_context with new interactions as support-set episode tensors."""
        new_state = self.model.update_state(state, new)
        return {"state": new_state, "context": self.model.context_from_state(new_state)}

    def _encode(self, features):
        return self._encoded(self._ids(features, SUPPORT))

    def _score(self, context, features):
        return {"scores": self.model.score(context, self._ids(features, QUERY), training=False)["score"]}

    def _update(self, state, features):
        return self._updated(state, self._rename(self._ids(features, NEW), NEW, SUPPORT))

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        names = ["serving_default", "serve_tf_examples", "serve_raw", "recommend", "rank_items"]
        if self.is_cmml:
            names += ["encode_context", "score", "update_context"]
        return {name: getattr(self, name).get_concrete_function() for name in names if hasattr(self, name)}


def export_saved_model(
    model: tf.keras.Model,
    export_dir: str | os.PathLike,
    preprocess: Preprocess | None = None,
    raw_specs: Mapping[str, tf.TensorSpec] | None = None,
    extra_signatures: Mapping[str, Callable] | None = None,
    example_spec: Mapping[str, object] | None = None,
    catalog: CatalogTable | None = None,
    user_catalog: CatalogTable | None = None,
    retrieval: RetrievalStage | None = None,
) -> Path:
    """Writes the SavedModel with the signatures above (plus ``extra_signatures``). Returns the path.

    ``example_spec`` (a ``tf.io.parse_example`` spec of raw interaction examples, label included)
    adds ``serve_tf_examples``; ``catalog`` (the item table) switches to the items-by-id contract
    (``serve_raw`` keeps the raw episode tensors); both need ``preprocess`` and ``raw_specs``.
    ``user_catalog`` adds the ``user_id`` input (known users' attributes from the table).
    ``retrieval`` (with ``catalog``, CMML only) puts the retrieval stage in front of ``recommend``:
    its towers and the catalog's brute-force index.
    """
    module = CMMLServingModule(model, preprocess, raw_specs, example_spec, catalog, user_catalog, retrieval)
    signatures = module.signatures()
    for name, fn in (extra_signatures or {}).items():
        signatures[name] = fn
    export_dir = Path(export_dir)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    try:
        with _without_keras_traces():
            tf.saved_model.save(
                module,
                str(export_dir),
                signatures=signatures,
                options=tf.saved_model.SaveOptions(save_debug_info=False),
            )
    finally:
        absl_logger.setLevel(level)  # saving Keras layers lowers absl's verbosity to WARNING and leaves it there
    return export_dir


def export_by_id(
    model: tf.keras.Model,
    export_dir: str | os.PathLike,
    raw,
    catalog: CatalogTable | None,
    user_catalog: CatalogTable | None = None,
    retrieval: RetrievalStage | None = None,
) -> Path:
    """The serving export with the transform graph of ``raw``
    (:func:`cmml.models.raw_inputs.raw_serving_inputs`) in front: items by id when ``catalog`` is given."""
    return export_saved_model(
        model,
        export_dir,
        preprocess=raw.preprocess,
        raw_specs=raw.specs,
        example_spec=raw.example_spec,
        catalog=catalog,
        user_catalog=user_catalog,
        retrieval=retrieval,
    )


def _without_keras_traces():
    """Saving leaves out Keras' own traces of every layer's call (what ``Model.save(save_traces=False)``
    leaves out): the signatures are the serving API and the variables restore without them, and
    tracing every layer took most of an export's time (about 30 of 40 s for a CMML model)."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another Keras version: traces are saved (a slower export, the same model)
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False)


def graph_ops(export_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs, including its function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    ops = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


def non_stock_ops(export_dir: str | os.PathLike) -> set[str]:
    """Ops a stock TensorFlow / TF Serving build would not know: Python callbacks and any op type
    (other than a call to a function defined in the graph) missing from TensorFlow's registry."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(export_dir) / "saved_model.pb").read_bytes())
    functions = {fn.signature.name for meta in proto.meta_graphs for fn in meta.graph_def.library.function}
    bad = set()
    for op in graph_ops(export_dir):
        if op in PY_FUNC_OPS or (op not in functions and op_def_registry.get(op) is None):
            bad.add(op)
    return bad


IDS_DIR = "Format-Ids"  # beside TFX's Format-Serving: the model on transformed ids (the Evaluator's input)
SUMMARY_FILE = "training_summary.json"


def export_models(
    model: tf.keras.Model,
    serving_dir: str,
    transform_output: str | None,
    catalog_root: str | None = None,
    retrieval: RetrievalStage | None = None,
) -> None:
    """A Trainer's two exports: ``serving_dir`` (raw features through the Transform graph, when
    ``transform_output`` is given; items by id when ``catalog_root``, the TaskGen output, holds
    the transformed item and user tables; ``recommend`` behind the ``retrieval`` stage when given) and
    ``Format-Ids`` beside it (transformed ids)."""
    from cmml.models.raw_inputs import raw_serving_inputs
    from cmml.schemas import tasks as T

    model_root = os.path.dirname(serving_dir.rstrip("/"))
    export_saved_model(model, os.path.join(model_root, IDS_DIR))
    if transform_output:
        raw = raw_serving_inputs(transform_output, model)
        tables = {}
        for side in ("item", "user") if catalog_root else ():
            path = T.catalog_path(catalog_root, side)
            if os.path.exists(path):
                tables[side] = CatalogTable(side, *T.read_catalog(path))
        with_items = "item" in tables
        export_by_id(
            model,
            serving_dir,
            raw,
            tables.get("item"),
            tables.get("user") if with_items else None,
            retrieval if with_items else None,
        )
    else:
        export_saved_model(model, serving_dir)


def load_ids_model(model_uri: str):
    """The ids model of a Trainer's Model artifact (signatures on transformed ids)."""
    return tf.saved_model.load(os.path.join(model_uri, IDS_DIR))
