"""LogExampleGen: interaction logs -> interaction tf.Examples and the user and item tables, with a
dead-letter output and row accounting.

A custom ExampleGen (a QueryBasedExampleGen whose "query" names the datasets to read). It reads
logs through the Foundation readers (:mod:`cmml.data`: MovieLens ``::`` and tab files, the
ML-1M-partial CSV, CSV logs with a column mapping, the synthetic generator) and writes two
artifacts, with the canonical feature names of ``schemas/example.pbtxt`` and ``schemas/entity.pbtxt``:

* ``examples`` — one narrow tf.Example per interaction (user, item, label, timestamp, scenario,
  task key, domain): the work on interactions scales with the log, never with the attributes;
* ``entities`` — splits ``users`` and ``items``: one tf.Example per user and per item with its side
  features and ``interactions``, the number of its ingested interactions (0 for an item known only
  from the catalog). The attributes are validated and transformed once per entity.

An interaction whose user or item has no row in its source's side table is kept (the id joins the
table without features) or quarantined, as configured (``unknown_entities``); either way it is
counted. Work is done per block of the log (an Arrow table of ~100k rows), never per row in
Python: tf.Examples are serialised by tfx_bsl's C++ encoder from Arrow record batches, each block
counts its ids, and the sums meet the side tables once. Splits of the interactions follow TFX's
output split config; by default they are partitioned 2:1 into ``train`` / ``eval`` by the hash of
``user_id`` with exactly the bucket function of TFX's own ExampleGen (sha256 of the serialised
partition feature).

Outputs, under the ``examples`` artifact URI:

* ``Split-<name>/data_tfrecord-*.gz`` — the interactions (TFX layout, read by StatisticsGen, TaskGen);
* ``dead_letter/rejected-*.jsonl`` — one JSON object per malformed or quarantined row: ``source``,
  ``file``, ``line``, ``kind``, ``reason``, ``text`` (the raw line);
* ``ingest_stats.json`` — rows in / ok / rejected by kind, examples per split.

and under the ``entities`` artifact URI ``Split-users/``, ``Split-items/`` and
``entity_stats.json`` (rows, rows from the side table, unknown ids kept, rows without interactions).

The same counts are set as MLMD custom properties (``rows_in``, ``rows_ok``, ``rows_rejected``,
``rejected_<kind>``, ``examples_<split>`` on ``examples``; ``users_rows``, ``items_unknown_kept``,
``items_without_interactions`` … on ``entities``). The executor fails if ``rows_in != rows_ok +
rows_rejected`` or if the examples written differ from ``rows_ok``.

Modules: ``sources`` (:class:`~cmml.components.example_gen.sources.Source` and the query codec),
``columns`` (Arrow columns for the encoder), ``entities`` (side tables, id counts, the entity
tables), ``interactions`` (interaction columns, the unknown-id rule, the output split),
``dead_letters`` (rejected rows and the ingest stats), ``executor`` (the Beam graph),
``component`` (:class:`~cmml.components.example_gen.component.LogExampleGen`).
"""
