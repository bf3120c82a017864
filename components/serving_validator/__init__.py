"""ServingValidator: InfraValidator's job without Docker.

Copies the Trainer's serving model into ``<infra_blessing>/stamped_model`` (the layout TFX's Pusher
pushes from), builds canned requests from real raw interactions (``canned``: ExampleGen's examples
grouped by user, the support set and the last ``query`` rows as candidates), writes them as TF
Serving warm-up records (``assets.extra/tf_serving_warmup_requests``) and then serves them
(``checks``):

* with ``tensorflow_model_server`` when it is on PATH (the real server replays the warm-up records
  at load, then answers Predict over gRPC), or
* otherwise by loading the SavedModel in a fresh Python process in which this package cannot be
  imported (``fresh_process``, run by path), calling every signature, and checking shapes,
  finiteness and that the signatures agree with each other (two-stage = one call;
  ``update_context`` = ``encode_context``; raw tf.Examples = raw tensors).

The output is a standard ``InfraBlessing`` (``blessed``, ``has_model``), so the stock Pusher pushes
the stamped model, warm-up included, only when it passed. Modules: ``component`` (the component
and its spec), ``executor``, ``canned``, ``checks``, ``fresh_process``.
"""
