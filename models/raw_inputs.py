"""Raw features at serving time: the tf.Transform graph in front of an exported episode model.

Serving requests carry raw values per interaction row — ids and categorical values as strings
(ints for bucketised numbers such as ``age`` and ``year``), multi-valued features as lists padded
with ``""`` — shaped ``[B, R]`` / ``[B, R, L]``. The export flattens them to ``[B·R]`` rows, and
:class:`RawServingInputs.preprocess` turns rows into transformed ids with the Transform output's
``TransformFeaturesLayer`` (pruned to the features the model uses), exactly as TaskGen's ids were
made. ``example_spec`` parses serialized raw tf.Examples (the ``serve_tf_examples`` signature).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import tensorflow as tf

import cmml  # noqa: F401
from cmml.data import records as R


class RawPreprocess(tf.Module):
    """Flat raw rows ``{name: [N] or [N, L]}`` → transformed ids ``{name: [N] or [N, L]}``.

    A ``tf.Module`` so that an exporting module tracks the Transform layer (its lookup tables).
    """

    def __init__(self, layer, raw_spec: Mapping[str, object], features):
        super().__init__(name="raw_preprocess")
        self.layer = layer
        self._raw_spec = dict(raw_spec)
        self._features = [(s.name, s.kind) for s in features]

    def _layer_input(self, name: str, values: tf.Tensor):
        """Dense rows [N] / [N, L] -> what the Transform layer expects for this raw feature."""
        if isinstance(self._raw_spec[name], tf.io.FixedLenFeature):
            return tf.reshape(values, [-1, 1])
        # VarLen: "" (strings) and 0 (numbers, e.g. age) mean "no value", as in the examples
        return tf.sparse.from_dense(tf.reshape(values, [tf.shape(values)[0], -1]))

    def __call__(self, rows: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Rows of some or all of the model's raw features -> the transformed features computable from them."""
        transformed = self.layer({name: self._layer_input(name, value) for name, value in rows.items()})
        out = {}
        for name, kind in self._features:
            if name not in rows:
                continue
            value = transformed[name]
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value, default_value=0)
            out[name] = value if kind == "multi" else tf.reshape(value, [-1])
        return out


@dataclasses.dataclass
class RawServingInputs:
    specs: dict[str, tf.TensorSpec]  # per-row raw input spec of every model feature
    preprocess: RawPreprocess  # flat raw rows -> ids
    example_spec: dict[str, object]  # tf.io.parse_example spec of a raw interaction example


def raw_serving_inputs(transform_output: str, model) -> RawServingInputs:
    """Serving inputs and preprocessing for ``model``'s features from a Transform output folder."""
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(transform_output)
    raw_spec = tft_output.raw_feature_spec()
    layer = tft_output.transform_features_layer()
    features = list(model.feature_specs)
    missing = [s.name for s in features if s.name not in raw_spec]
    if missing:
        raise ValueError(f"the transform graph has no raw feature(s) {missing} that the model uses")

    specs: dict[str, tf.TensorSpec] = {}
    for s in features:
        dtype = raw_spec[s.name].dtype
        specs[s.name] = tf.TensorSpec([None] if s.kind == "multi" else [], dtype, name=s.name)

    preprocess = RawPreprocess(layer, raw_spec, features)
    # a raw interaction example: the interaction's label (support rows) and its user's and item's attributes
    example_spec: dict[str, object] = {R.LABEL: tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}
    for name in [s.name for s in features]:
        spec = raw_spec[name]
        if isinstance(spec, tf.io.FixedLenFeature):
            # defaults let an empty string (a padded row) parse; padded rows are masked anyway
            default = [""] if spec.dtype == tf.string else [0] * max(1, int(sum(spec.shape) or 1))
            spec = tf.io.FixedLenFeature(spec.shape, spec.dtype, default_value=default)
        example_spec[name] = spec
    return RawServingInputs(specs, preprocess, example_spec)
