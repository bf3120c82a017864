"""Serving CMML with TF Serving's API: clients, a PredictionService test double, warm-up records.

* :mod:`cmml.serving.client` — gRPC and REST clients, ranking, the two-stage context cache;
* :mod:`cmml.serving.server` — the test double (``cmml serve``; NOT TensorFlow Serving), built
  from :mod:`~cmml.serving.grpc_service`, :mod:`~cmml.serving.rest` and :mod:`~cmml.serving.model_store`;
* :mod:`cmml.serving.warmup` — ``assets.extra/tf_serving_warmup_requests`` writer and reader;
* :mod:`cmml.serving.layout` — the ``<model_base_path>/<version>/`` layout and atomic installs;
* :mod:`cmml.serving.protocol`, :mod:`cmml.serving.signatures` — wire formats and request validation;
* :mod:`cmml.serving.task_inputs` — requests built from a dataset (user history + candidates);
* :mod:`cmml.serving.cli` — ``cmml serve`` and ``cmml predict``; :mod:`cmml.serving.testing` — test helpers.

See ``docs/serving.md`` and BUILD.md, "Deploying with TF Serving".
"""
