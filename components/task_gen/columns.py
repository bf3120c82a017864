"""TaskGen's inputs as column batches: LogExampleGen's raw interactions, and Transform's transformed
user and item tables (the features TaskGen copies into the records).

A column batch maps a feature name to a numpy array, to (values, row_splits) for a multi-valued
feature, or to a pyarrow array of byte strings for the raw ids. TensorFlow is imported where
files are read or parsed, so Beam workers that do not read start quickly.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from cmml.components import common
from cmml.components.task_gen.keys import to_binary
from cmml.data import records as R
from cmml.models import preprocessing as TM

DOMAIN = "domain"  # the source's name on a multi-domain interaction


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """A transformed feature TaskGen copies into the records."""

    name: str
    side: str
    kind: str
    vocab_size: int


def parse_spec(with_scenario: bool, with_domain: bool) -> dict:
    """tf.io.parse_example spec of LogExampleGen's interaction examples, limited to what TaskGen reads."""
    import tensorflow as tf

    spec = {
        R.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        R.ITEM_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        R.LABEL: tf.io.FixedLenFeature([], tf.float32, default_value=float("nan")),
    }
    if with_scenario:
        spec[R.SCENARIO] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    if with_domain:
        spec[DOMAIN] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
    return spec


def entity_parse_spec(side: str, features: Sequence[FeatureInfo]) -> dict:
    """tf.io.parse_example spec of the transformed user (``side='user'``) or item table."""
    import tensorflow as tf

    spec = {(TM.RAW_USER_ID if side == "user" else TM.RAW_ITEM_ID): tf.io.FixedLenFeature([], tf.string)}
    for f in features:
        if f.side != side:
            continue
        if f.kind == "multi":
            spec[f.name] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
        else:
            spec[f.name] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    return spec


def read_columns(paths: Sequence[str], spec: dict, batch_size: int) -> Iterator[dict]:
    """TFRecord files of tf.Examples -> column batches (parsing in TensorFlow's C++ kernels)."""
    import tensorflow as tf

    for path in paths:
        compression = "GZIP" if path.endswith(".gz") else ""
        ds = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=8 << 20)
        ds = ds.batch(batch_size).map(lambda x: tf.io.parse_example(x, spec)).prefetch(1)
        for parsed in ds:
            yield columns_from_parsed(parsed)


def columns_from_parsed(parsed: dict) -> dict:
    """Parsed tensors -> column batch: numpy arrays, (values, row_splits) for lists, and pyarrow
    dictionary arrays for strings (``tf.unique`` first, so only distinct ids become Python objects)."""
    import tensorflow as tf

    out = {}
    for name, value in parsed.items():
        if isinstance(value, tf.RaggedTensor):
            out[name] = (value.flat_values.numpy(), value.row_splits.numpy())
        elif value.dtype == tf.string:
            uniq, idx = tf.unique(value, out_idx=tf.int32)
            out[name] = pa.DictionaryArray.from_arrays(pa.array(idx.numpy()), pa.array(uniq.numpy(), pa.large_binary()))
        else:
            out[name] = value.numpy()
    return out


def write_column_batches(batches: Iterable[dict], path: str, compression: str = "GZIP") -> int:
    """Writes column batches as transformed-example TFRecords (the inverse of reading them).

    For tests, benchmarks and backfills that produce transformed columns without running
    tf.Transform: each batch is encoded by tfx_bsl's C++ encoder from Arrow arrays (no Python per
    example). Returns the number of examples written.
    """
    from tfx_bsl.coders import example_coder

    records = []
    for cols in batches:
        arrays, names = [], []
        for name, value in cols.items():
            if isinstance(value, tuple):  # multi feature: (values, row_splits)
                values, splits = value
                arrays.append(
                    pa.LargeListArray.from_arrays(pa.array(splits.astype(np.int64)), pa.array(values.astype(np.int64)))
                )
            else:
                arr = value if isinstance(value, pa.Array) else pa.array(value)
                if pa.types.is_integer(arr.type):
                    arr = arr.cast(pa.int64())
                elif pa.types.is_floating(arr.type):
                    arr = arr.cast(pa.float32())
                else:
                    arr = to_binary(arr)
                arrays.append(pa.LargeListArray.from_arrays(pa.array(np.arange(len(arr) + 1, dtype=np.int64)), arr))
            names.append(name)
        records += example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays(arrays, names))
    common.write_tfrecords(path, records, compression)
    return len(records)


class ReadColumns(beam.DoFn):
    """TFRecord file of interaction examples -> column batches."""

    def __init__(self, with_scenario: bool, with_domain: bool, batch_size: int):
        self._args = (with_scenario, with_domain)
        self._batch_size = batch_size

    def process(self, path: str) -> Iterator[dict]:
        yield from read_columns([path], parse_spec(*self._args), self._batch_size)
