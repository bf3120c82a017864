"""tf.Transform module: the user and item tables -> model indices (the ``preprocessing_fn``).

Transform runs over LogExampleGen's entity examples — one row per user (split ``users``) and one
per item (``items``), each with its side features and ``interactions``, the number of
interactions ingested for it — so an attribute is analysed and transformed once per entity, not
once per rating. The vocabularies are weighted by ``interactions``: a value's frequency is the
number of interactions of the users or items that have it, exactly what analysing every joined
interaction row would count, so ``top_k`` and ``frequency_threshold`` keep that meaning and the
indices of values seen in interactions do not change.

Index convention (``schemas/episodes.md``): ``0`` = padding / missing, ``1 .. V`` = vocabulary,
``V+1 .. V+K`` = ``K`` out-of-vocabulary hash buckets. Every transformed categorical feature
carries that range in the transformed schema (``int_domain {min: 0 max: V+K}``), so its
``vocab_size`` is ``int_domain.max + 1`` (:func:`feature_vocab_sizes`).

* ``user_id``, ``item_id``: a vocabulary of the ids **with interactions** (an id's embedding is
  learned from its interactions; an item known only from the catalog falls into an OOV bucket but
  keeps its real attributes), shifted by one.
* the string side features: ``tft.vocabulary`` over every row of their table (values of items
  without interactions come after the others), then ``tft.apply_vocabulary``, shifted by one.
* multi-valued features (genres, directors, writers, actors, tags): the same, per value, as a
  sparse (variable-length) int64 feature.
* ``age`` and ``year``: bucketised with fixed boundaries (no analyzer): ``age`` into ML-1M's age
  groups (so ML-100K's years and ML-1M's codes land in the same buckets), ``year`` into decades.
* ``raw_user_id``, ``raw_item_id``: the raw ids, passed through for TaskGen (the entity tables'
  keys). Models ignore them.

Each output depends only on its own row (plus the analyzers' vocabularies), so the transform
graph can sit in front of the exported model and serving takes raw attributes of any user or item.

``custom_config`` (Transform's ``custom_config``) may override the defaults per feature, e.g.
``{"features": {"zip": {"num_oov_buckets": 16}, "tags": None}}`` (``None`` drops a feature).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from cmml.data import records as R

# TensorFlow / tf.Transform are imported inside the functions that need them: TaskGen's Beam
# workers import this module for its names and feature configuration only.

RAW_USER_ID = "raw_user_id"
RAW_ITEM_ID = "raw_item_id"
RAW_FEATURES = {RAW_USER_ID: R.USER_ID, RAW_ITEM_ID: R.ITEM_ID}
INTERACTIONS = "interactions"  # per entity row: interactions ingested for it (the vocabularies' weight)

AGE_BOUNDARIES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)  # ML-1M's age groups: <18, 18-24, ..., 56+
YEAR_BOUNDARIES = tuple(float(y) for y in range(1920, 2030, 10))  # <1920, 1920s, ..., 2010s, >=2020


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How one raw feature becomes a model feature.

    Attributes:
      name: raw and transformed feature name.
      side: 'user' or 'item'.
      kind: 'categorical' (one index) or 'multi' (a list of indices).
      transform: 'vocab' (vocabulary + OOV buckets) or 'buckets' (fixed boundaries).
      num_oov_buckets: K for 'vocab'.
      top_k / frequency_threshold: vocabulary size controls (frequencies counted over interactions).
      boundaries: bucket boundaries for 'buckets'; values <= 0 count as missing.
    """

    name: str
    side: str
    kind: str = "categorical"
    transform: str = "vocab"
    num_oov_buckets: int = 1
    top_k: int | None = None
    frequency_threshold: int | None = None
    boundaries: tuple[float, ...] = ()

    def __post_init__(self):
        if self.side not in ("user", "item"):
            raise ValueError(f"feature {self.name!r}: side must be 'user' or 'item'")
        if self.kind not in ("categorical", "multi"):
            raise ValueError(f"feature {self.name!r}: kind must be 'categorical' or 'multi'")
        if self.transform not in ("vocab", "buckets"):
            raise ValueError(f"feature {self.name!r}: transform must be 'vocab' or 'buckets'")
        if self.transform == "buckets" and (self.kind != "categorical" or not self.boundaries):
            raise ValueError(f"feature {self.name!r}: 'buckets' needs a categorical feature and boundaries")
        if self.num_oov_buckets < 0:
            raise ValueError(f"feature {self.name!r}: num_oov_buckets must be >= 0")

    @property
    def vocab_filename(self) -> str:
        return self.name


DEFAULT_FEATURES: tuple[FeatureConfig, ...] = (
    FeatureConfig(R.USER_ID, "user", num_oov_buckets=32),
    FeatureConfig("gender", "user"),
    FeatureConfig("age", "user", transform="buckets", boundaries=AGE_BOUNDARIES, num_oov_buckets=0),
    FeatureConfig("occupation", "user", num_oov_buckets=2),
    FeatureConfig("zip", "user", num_oov_buckets=8),
    FeatureConfig(R.ITEM_ID, "item", num_oov_buckets=32),
    FeatureConfig("year", "item", transform="buckets", boundaries=YEAR_BOUNDARIES, num_oov_buckets=0),
    FeatureConfig("rated", "item", num_oov_buckets=2),
    FeatureConfig("genres", "item", kind="multi", num_oov_buckets=2),
    FeatureConfig("directors", "item", kind="multi", num_oov_buckets=8),
    FeatureConfig("writers", "item", kind="multi", num_oov_buckets=8),
    FeatureConfig("actors", "item", kind="multi", num_oov_buckets=8),
    FeatureConfig("tags", "item", kind="multi", num_oov_buckets=4),
)


def resolve_features(custom_config: Mapping[str, Any] | None = None) -> list[FeatureConfig]:
    """The default feature list with ``custom_config['features']`` overrides applied."""
    overrides = dict((custom_config or {}).get("features") or {})
    out = []
    for f in DEFAULT_FEATURES:
        if f.name in overrides:
            change = overrides.pop(f.name)
            if change is None:
                if f.name in (R.USER_ID, R.ITEM_ID):
                    raise ValueError(f"feature {f.name!r} cannot be dropped: it is the task/candidate key")
                continue
            if "boundaries" in change:
                change = {**change, "boundaries": tuple(float(b) for b in change["boundaries"])}
            f = dataclasses.replace(f, **change)
        out.append(f)
    for name, change in overrides.items():  # new features (e.g. from a CSV log's side files)
        if change is not None:
            out.append(FeatureConfig(name=name, **change))
    return out


def bucket_names(boundaries: tuple[float, ...], name: str) -> list[str]:
    """Readable names of the buckets 1..len(boundaries)+1 (index 0 is 'missing')."""
    b = [int(x) if float(x).is_integer() else x for x in boundaries]
    if name == "year":
        return [f"<{b[0]}"] + [f"{lo}s" for lo in b[:-1]] + [f">={b[-1]}"]
    return [f"<{b[0]}"] + [f"{lo}-{hi}" for lo, hi in zip(b[:-1], b[1:])] + [f">={b[-1]}"]


# --- the preprocessing function ----------------------------------------------------------------------------
def _dense_scalar(x, default):
    """A [batch] (dense [batch, 1]) or [batch, <=1] sparse feature -> dense [batch] with ``default``."""
    import tensorflow as tf

    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.reset_shape(x, [x.dense_shape[0], 1])
        x = tf.sparse.to_dense(x, default_value=default)
    return tf.reshape(x, [-1])


def _sparse(x):
    import tensorflow as tf

    if isinstance(x, tf.SparseTensor):
        return x
    if isinstance(x, tf.RaggedTensor):
        return x.to_sparse()
    return tf.sparse.from_dense(tf.reshape(x, [tf.shape(x)[0], -1]))


def _set_range(values, max_value) -> None:
    import tensorflow as tf
    from tensorflow_transform import schema_inference

    schema_inference.set_tensor_schema_override(values, tf.constant(0, tf.int64), tf.cast(max_value, tf.int64))


def _vocab_feature(x, f: FeatureConfig, row_weight):
    """Sparse [batch, n] strings -> shifted indices (sparse for 'multi', dense [batch] otherwise).

    ``row_weight``: [batch] interactions of each row's entity, the weight of each of its values.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    sp = _sparse(x)
    if sp.dtype != tf.string:
        sp = tf.SparseTensor(sp.indices, tf.strings.as_string(sp.values), sp.dense_shape)
    value_weight = tf.gather(row_weight, sp.indices[:, 0])
    analysed, weights = sp, value_weight
    if f.name in (R.USER_ID, R.ITEM_ID):  # ids without interactions have nothing to learn from: OOV
        seen = value_weight > 0
        analysed, weights = tf.sparse.retain(sp, seen), tf.boolean_mask(value_weight, seen)
    vocab = tft.vocabulary(
        analysed,
        top_k=f.top_k,
        frequency_threshold=f.frequency_threshold,
        vocab_filename=f.vocab_filename,
        weights=weights,
        name=f"vocab_{f.name}",
    )
    ids = tft.apply_vocabulary(sp, vocab, default_value=-1, num_oov_buckets=f.num_oov_buckets)
    max_value = tft.experimental.get_vocabulary_size_by_name(f.vocab_filename) + f.num_oov_buckets
    if f.kind == "multi":
        values = ids.values + 1
        _set_range(values, max_value)
        return tf.SparseTensor(ids.indices, values, ids.dense_shape)
    dense = _dense_scalar(ids, tf.constant(-1, tf.int64)) + 1
    _set_range(dense, max_value)
    return dense


def _bucket_feature(x, f: FeatureConfig):
    import tensorflow as tf

    values = tf.cast(_dense_scalar(x, tf.zeros([], x.dtype)), tf.float32)
    buckets = tf.raw_ops.Bucketize(input=values, boundaries=list(f.boundaries))
    out = tf.where(values > 0, tf.cast(buckets, tf.int64) + 1, tf.zeros_like(buckets, tf.int64))
    _set_range(out, tf.constant(len(f.boundaries) + 1, tf.int64))
    return out


def preprocessing_fn(inputs: dict, custom_config: Mapping[str, Any] | None = None) -> dict:
    """TFX Transform entry point (``preprocessing_fn='cmml.models.preprocessing.preprocessing_fn'``)."""
    import tensorflow as tf

    if INTERACTIONS not in inputs:
        raise ValueError(
            f"no {INTERACTIONS!r} feature: Transform reads LogExampleGen's entity examples (its 'entities' output)"
        )
    row_weight = tf.cast(_dense_scalar(inputs[INTERACTIONS], tf.zeros([], inputs[INTERACTIONS].dtype)), tf.float32)
    outputs = {}
    for f in resolve_features(custom_config):
        if f.name not in inputs:
            raise ValueError(
                f"feature {f.name!r} is not in the entity examples' schema; drop it with "
                f"custom_config={{'features': {{'{f.name}': None}}}} or add it to the schema"
            )
        x = inputs[f.name]
        outputs[f.name] = _bucket_feature(x, f) if f.transform == "buckets" else _vocab_feature(x, f, row_weight)
    for raw, name in RAW_FEATURES.items():
        outputs[raw] = _dense_scalar(inputs[name], tf.constant(b"", tf.string))
    return outputs


# --- reading the result -------------------------------------------------------------------------------------
EMPTY_VOCABULARY_SENTINEL = b"49d0cd50-04bb-48c0-bc6f-5b575dce351a"  # what tf.Transform writes for an empty vocabulary


def feature_vocab_sizes(transformed_schema) -> dict[str, int]:
    """feature -> vocab_size (``V + K + 1``) from the transformed schema's int domains."""
    sizes = {}
    for feature in transformed_schema.feature:
        if feature.HasField("int_domain") and feature.int_domain.min == 0 and feature.int_domain.max > 0:
            sizes[feature.name] = int(feature.int_domain.max) + 1
    return sizes


def vocabulary(tft_output, f: FeatureConfig) -> list[str]:
    """Values of indices 1..V of a feature ('' for values that are not valid UTF-8)."""
    if f.transform == "buckets":
        return bucket_names(f.boundaries, f.name)
    words = tft_output.vocabulary_by_name(f.vocab_filename)
    if list(words) == [EMPTY_VOCABULARY_SENTINEL]:
        return []
    return [w.decode("utf-8", errors="replace") if isinstance(w, bytes) else str(w) for w in words]
