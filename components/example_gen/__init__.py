"""LogExampleGen: interaction logs -> joined tf.Examples, with a dead-letter output and row accounting.

A custom ExampleGen (a QueryBasedExampleGen whose "query" names the datasets to read). It reads
logs through the Foundation readers (:mod:`cmml.data`: MovieLens ``::`` and tab files, the
ML-1M-partial CSV, CSV logs with a column mapping, the synthetic generator), joins the user and
item side features (small tables, Beam side inputs) and writes one tf.Example per interaction
with the canonical feature names of ``schemas/example.pbtxt``.

Work is done per block of the log (an Arrow table of ~100k rows), never per row in Python:
joins are Arrow ``index_in`` / ``take``, and tf.Examples are serialised by tfx_bsl's C++ encoder
from Arrow record batches. Splits follow TFX's output split config; by default the examples are
partitioned 2:1 into ``train`` / ``eval`` by the hash of ``user_id`` with exactly the bucket
function of TFX's own ExampleGen (sha256 of the serialised partition feature).

Outputs, under the ``examples`` artifact URI:

* ``Split-<name>/data_tfrecord-*.gz`` — the examples (TFX layout, read by StatisticsGen, Transform);
* ``dead_letter/rejected-*.jsonl`` — one JSON object per malformed row: ``source``, ``file``,
  ``line``, ``kind``, ``reason``, ``text`` (the raw line);
* ``ingest_stats.json`` — rows in / ok / rejected by kind, examples per split, join coverage.

The same counts are set as MLMD custom properties of the examples artifact (``rows_in``,
``rows_ok``, ``rows_rejected``, ``rejected_<kind>``, ``examples_<split>``). The executor fails if
``rows_in != rows_ok + rows_rejected`` or if the examples written differ from ``rows_ok``.

Modules: ``sources`` (:class:`~cmml.components.example_gen.sources.Source` and the query codec),
``join`` (side tables, the per-block join, the output split), ``dead_letters`` (rejected rows and
the ingest stats), ``executor`` (the Beam graph), ``component``
(:class:`~cmml.components.example_gen.component.LogExampleGen`).
"""
