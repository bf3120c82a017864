"""Data validation: StatisticsGen + ImportSchemaGen (curated schema) + ExampleValidator + a gate.

TFDV computes statistics of every split of LogExampleGen's two outputs and ExampleValidator
compares them with the curated schemas: ``schemas/example.pbtxt`` for the interactions,
``schemas/entity.pbtxt`` for the user and item tables (required features, types, value ranges,
value counts). The
gate (:class:`~cmml.components.validation.component.ValidationGate`) turns its verdict into a
decision: when a split has an anomaly — or when ExampleGen sent more than
``max_rejected_fraction`` of the rows to the dead-letter output — it writes a readable report and
**fails**, so nothing downstream (Transform, TaskGen, Trainer) runs. Make the downstream
components depend on the gate with ``transform.add_upstream_node(gate)``
(:func:`~cmml.components.validation.component.validation_components` returns the seven
components, wired).

Report (the exception message, also logged; on success ``report.txt`` / ``report.json`` in the
gate's ``report`` artifact), e.g.::

    Data validation failed: 2 problems.
      split 'train', feature 'label': Out-of-range values. Unexpectedly high value: 9>5(upto six significant digits)
      split 'train', feature 'user_id': Unexpected data type. Expected data of type: BYTES but got INT

Modules: ``component`` (the gate, its spec and artifact, :func:`validation_components`),
``executor`` (the gate's executor), ``report`` (anomalies -> readable lines).
"""
