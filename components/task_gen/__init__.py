"""TaskGen: transformed interactions -> per-task TFRecords (a custom TFX component on Apache Beam).

One job per module (import names from the module that defines them):

* ``component`` — :class:`TaskGen` and its spec; ``executor`` — the TFX executor (reads the
  transform graph, resolves the scenario source, records MLMD properties);
* ``config`` — :class:`TaskGenConfig`;
* ``beam_graph`` — the Beam pipeline and :func:`run_task_gen`; ``accounting`` — the row
  accounting and the stats, feature-spec and index files written at the end;
* ``columns`` — transformed-example column batches (features, parsing, writing);
  ``extract`` — a column batch -> shard rows, side tables, quarantined rows;
* ``keys`` — raw keys and their canonical order; ``splits`` — size filters, split rules, the task plan;
* ``tables`` — user / item / scenario feature tables and their merge; ``themes`` — derived scenarios;
* ``rows`` — a shard's interaction rows; ``user_tasks`` / ``scenario_tasks`` — the tasks of a shard
  in each setting; ``records`` — task blocks, their tf.Example encoding and the record files.
"""
