"""Exporting a CMML model as a SavedModel with the serving signatures of SPEC §4.

Signatures (inputs are the episode tensors of ``schemas/episodes.md`` with batch axis B = tasks):

* ``serving_default``: support set + query pairs → ``scores [B, Q]`` (adapt and score in one call);
* ``encode_context``: support set → ``context [B, C]`` and the encoder ``state [B, S]``;
* ``score``: ``context`` + query pairs → ``scores`` (two-stage serving with a cached context);
* ``update_context``: ``state`` + new interactions (``new_*``) → new ``state`` and ``context``:
  online updates in O(new interactions); equal to ``encode_context`` on the whole support set;
* ``serve_tf_examples`` (when an ``example_spec`` is given): ``support_examples [B, S]`` and
  ``query_examples [B, Q]`` serialized raw interaction tf.Examples, ``""`` for padding → ``scores``;
* ``serve_ids`` (when the item catalog is given): items named by id only — ``support_item_id
  [B, S]`` (string, ``""`` pads), ``support_label [B, S]``, ``query_item_id [B, Q]``, the task's
  user ``user_id [B]`` (with the user catalog; ``""`` = a new user) and user attributes
  ``user_<field> [B]`` (raw values; ``""`` / 0 = unknown) → ``scores``. The transformed item (and
  user) table is inside the SavedModel (a hash table from id to row, a variable per feature); an
  item id outside the catalog gets its id's transform (an OOV bucket) and no attributes;
* ``recommend`` (with the item catalog): serve_ids' support and user inputs and ``k`` (int32
  scalar) → ``item_id [B, k]`` and ``scores [B, k]``: the top of the whole catalog, the task's
  support items left out.

Episode models other than CMML (the DCN baseline) export ``serving_default`` (and
``serve_tf_examples``, ``serve_ids``, ``recommend``) only: they have no context to encode.

An optional ``preprocess`` callable maps raw interaction-level features to transformed ids (the
pipeline attaches the tf.Transform graph here so that serving takes raw features). The exported
graph uses stock TensorFlow ops only; :func:`graph_ops` lists them for checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

import tensorflow as tf

import cmml  # noqa: F401
from cmml.data.records import LABEL as EXAMPLE_LABEL  # label feature of a raw interaction example
from cmml.models.cmml import CMMLModel
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


USER_ID_INPUT = "user_id"  # serve_ids: the task's user, looked up in the user catalog


def user_input_name(feature: str) -> str:
    """serve_ids' input of a user attribute: ``user_<field>`` (``gender`` → ``user_gender``, ``user_id`` itself)."""
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
    ):
        super().__init__(name="cmml_serving")
        if catalog is not None and raw_specs is None:
            raise ValueError("the item catalog needs preprocess and raw_specs (user attributes arrive raw)")
        if user_catalog is not None and catalog is None:
            raise ValueError("the user catalog serves serve_ids, which needs the item catalog")
        if (preprocess is None) != (raw_specs is None):
            raise ValueError("preprocess and raw_specs go together")
        if example_spec is not None and raw_specs is None:
            raise ValueError("example_spec needs preprocess and raw_specs (examples carry raw features)")
        self.model = model
        self.preprocess_layer = preprocess
        self.raw_specs = dict(raw_specs) if raw_specs else None
        self.example_spec = dict(example_spec) if example_spec else None
        self.catalog = catalog
        self.user_catalog = user_catalog
        self.is_cmml = isinstance(model, CMMLModel)

        # autograph=False: the serving functions and the model use static Python control flow only, and
        # converting them (with every Keras layer they call) took most of the export's time
        support = _feature_specs(model, SUPPORT, self.raw_specs)
        query = _feature_specs(model, QUERY, self.raw_specs)
        self.serving_default = tf.function(self._serve, input_signature=[{**support, **query}], autograph=False)
        if self.example_spec is not None:
            examples = {k: tf.TensorSpec([None, None], tf.string, name=k) for k in (SUPPORT_EXAMPLES, QUERY_EXAMPLES)}
            self.serve_tf_examples = tf.function(self._serve_examples, input_signature=[examples], autograph=False)
        if self.catalog is not None:
            ids = {
                "support_item_id": tf.TensorSpec([None, None], tf.string, name="support_item_id"),
                "support_label": tf.TensorSpec([None, None], tf.float32, name="support_label"),
                "query_item_id": tf.TensorSpec([None, None], tf.string, name="query_item_id"),
            }
            for s in model.feature_specs:
                if s.side == "user":
                    name, spec = user_input_name(s.name), self.raw_specs[s.name]
                    ids[name] = tf.TensorSpec([None] + list(spec.shape), spec.dtype, name=name)
            if self.user_catalog is not None:  # a known user is named by id; "" = a new user
                ids[USER_ID_INPUT] = tf.TensorSpec([None], tf.string, name=USER_ID_INPUT)
            self.serve_ids = tf.function(self._serve_ids, input_signature=[ids], autograph=False)
            top = {k: v for k, v in ids.items() if k != "query_item_id"}
            top["k"] = tf.TensorSpec([], tf.int32, name="k")
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
            if self.is_cmml:  # and their embeddings and baselines: a request only scores them
                items = {s.name: self.catalog_items[s.name][None] for s in model.item_specs}  # [1, n(, L)]
                self.catalog_x = tf.Variable(model.item_embedding(items)[0], trainable=False, name="catalog_x")
                base = {key(QUERY, name): value for name, value in items.items()}
                base[key(QUERY, MASK)] = tf.ones(tf.stack([1, tf.size(rows)]), tf.float32)
                self.catalog_baseline = tf.Variable(
                    model.baseline(base, QUERY)[0], trainable=False, name="catalog_base"
                )
            self.recommend = tf.function(self._recommend, input_signature=[top], autograph=False)
        if self.is_cmml:
            self.context_dim = model.context_dim
            self.state_dim = model.state_size
            new = _feature_specs(model, NEW, self.raw_specs)
            context = tf.TensorSpec([None, self.context_dim], tf.float32, name="context")
            state = tf.TensorSpec([None, self.state_dim], tf.float32, name="state")
            self.encode_context = tf.function(self._encode, input_signature=[support], autograph=False)
            self.score = tf.function(self._score, input_signature=[context, query], autograph=False)
            self.update_context = tf.function(self._update, input_signature=[state, new], autograph=False)

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

    def _serve_ids(self, inputs):
        """Items by id (attributes from the catalog), the task's user attributes broadcast to its rows."""
        users = self._task_users(inputs)
        features = {key(SUPPORT, LABEL): inputs["support_label"]}
        features.update(self._items_by_id(inputs["support_item_id"], users, SUPPORT))
        features.update(self._items_by_id(inputs["query_item_id"], users, QUERY))
        return {"scores": self.model(features, training=False)}

    def _model_on_catalog(self, features, users, batch, n):
        """Scores of every catalog item through the model's call: the query is the whole catalog."""
        features = dict(features)
        for s in self.model.feature_specs:  # the task's user on each row
            value = users[s.name][:, None] if s.side == "user" else self.catalog_items[s.name][None]
            shape = tf.concat([tf.stack([batch, n]), tf.shape(value)[2:]], 0)
            features[key(QUERY, s.name)] = tf.broadcast_to(value, shape)
        features[key(QUERY, MASK)] = tf.ones(tf.stack([batch, n]), tf.float32)
        return self.model(features, training=False)

    def _score_catalog(self, features, users, batch, n):
        """CMML's scores of every catalog item from the task's context and the catalog's embeddings
        computed at export: only the context-dependent part runs per request."""
        model = self.model
        context = model.encode_context(features)
        x = tf.broadcast_to(self.catalog_x[None], tf.stack([batch, n, tf.shape(self.catalog_x)[1]]))
        if model.user_embedding is not None:
            e_u = model.user_embedding({s.name: users[s.name][:, None] for s in model.user_specs})  # [B, 1, Du]
            x = tf.concat([tf.broadcast_to(e_u, tf.stack([batch, n, tf.shape(e_u)[2]])), x], axis=-1)
        baseline = tf.broadcast_to(self.catalog_baseline[None], tf.stack([batch, n]))
        return model.score_rows(context, x, baseline, training=False)["score"]

    def _recommend(self, inputs):
        """The top ``k`` items of the whole catalog for each task, its support items left out."""
        users = self._task_users(inputs)
        support = inputs["support_item_id"]
        batch = tf.shape(support)[0]
        n = self.catalog.size  # fixed at export
        features = {key(SUPPORT, LABEL): inputs["support_label"]}
        features.update(self._items_by_id(support, users, SUPPORT))
        if self.is_cmml:
            scores = self._score_catalog(features, users, batch, n)
        else:
            scores = self._model_on_catalog(features, users, batch, n)
        # leave out the support items: their rows (an id outside the catalog or padding has none)
        rows = self.catalog.rows.lookup(support)
        seen = tf.where(rows < n)
        at = tf.stack([seen[:, 0], tf.gather_nd(rows, seen)], axis=1)
        scores = tf.tensor_scatter_nd_update(
            scores, at, tf.fill(tf.shape(at)[:1], tf.constant(float("-inf"), scores.dtype))
        )
        top = tf.math.top_k(scores, k=tf.minimum(inputs["k"], n))
        return {"item_id": tf.gather(self.catalog.keys, top.indices), "scores": top.values}

    def _encode(self, features):
        f = self._ids(features, SUPPORT)
        state = self.model.update_state(self.model.initial_state(tf.shape(f[key(SUPPORT, MASK)])[0]), f)
        return {"context": self.model.context_from_state(state), "state": state}

    def _score(self, context, features):
        return {"scores": self.model.score(context, self._ids(features, QUERY), training=False)["score"]}

    def _update(self, state, features):
        f = self._rename(self._ids(features, NEW), NEW, SUPPORT)
        new_state = self.model.update_state(state, f)
        return {"state": new_state, "context": self.model.context_from_state(new_state)}

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        out = {"serving_default": self.serving_default.get_concrete_function()}
        if self.example_spec is not None:
            out["serve_tf_examples"] = self.serve_tf_examples.get_concrete_function()
        if self.catalog is not None:
            out["serve_ids"] = self.serve_ids.get_concrete_function()
            out["recommend"] = self.recommend.get_concrete_function()
        if self.is_cmml:
            out["encode_context"] = self.encode_context.get_concrete_function()
            out["score"] = self.score.get_concrete_function()
            out["update_context"] = self.update_context.get_concrete_function()
        return out


def export_saved_model(
    model: tf.keras.Model,
    export_dir: str | os.PathLike,
    preprocess: Preprocess | None = None,
    raw_specs: Mapping[str, tf.TensorSpec] | None = None,
    extra_signatures: Mapping[str, Callable] | None = None,
    example_spec: Mapping[str, object] | None = None,
    catalog: CatalogTable | None = None,
    user_catalog: CatalogTable | None = None,
) -> Path:
    """Writes the SavedModel with the signatures above (plus ``extra_signatures``). Returns the path.

    ``example_spec`` (a ``tf.io.parse_example`` spec of raw interaction examples, label included)
    adds ``serve_tf_examples`` and ``catalog`` (the item table) adds ``serve_ids`` and ``recommend``; both need
    ``preprocess`` and ``raw_specs``. ``user_catalog`` adds serve_ids' ``user_id`` input (known users'
    attributes from the table).
    """
    module = CMMLServingModule(model, preprocess, raw_specs, example_spec, catalog, user_catalog)
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
    model: tf.keras.Model, serving_dir: str, transform_output: str | None, catalog_root: str | None = None
) -> None:
    """A Trainer's two exports: ``serving_dir`` (raw features through the Transform graph, when
    ``transform_output`` is given; ``serve_ids`` too when ``catalog_root``, the TaskGen output, holds
    the transformed item and user tables) and ``Format-Ids`` beside it (transformed ids)."""
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
        export_saved_model(
            model,
            serving_dir,
            preprocess=raw.preprocess,
            raw_specs=raw.specs,
            example_spec=raw.example_spec,
            catalog=tables.get("item"),
            user_catalog=tables.get("user") if "item" in tables else None,
        )
    else:
        export_saved_model(model, serving_dir)


def load_ids_model(model_uri: str):
    """The ids model of a Trainer's Model artifact (signatures on transformed ids)."""
    return tf.saved_model.load(os.path.join(model_uri, IDS_DIR))
