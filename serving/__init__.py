"""Serving CMML with TF Serving's API: clients, a PredictionService test double, warm-up records.

* clients: :mod:`~cmml.serving.grpc_client`, :mod:`~cmml.serving.rest_client` (same methods),
  :mod:`~cmml.serving.results` (what they return, ranking), :mod:`~cmml.serving.context_cache`
  (the two-stage path with a cached context);
* :mod:`cmml.serving.server` — the test double (``cmml serve``; NOT TensorFlow Serving), built
  from :mod:`~cmml.serving.grpc_service`, :mod:`~cmml.serving.rest` and :mod:`~cmml.serving.model_store`;
* :mod:`cmml.serving.warmup` — ``assets.extra/tf_serving_warmup_requests`` writer and reader;
* :mod:`cmml.serving.layout` — the ``<model_base_path>/<version>/`` layout and atomic installs;
* wire formats: :mod:`~cmml.serving.tensors` (TensorProto), :mod:`~cmml.serving.json_codec` (REST
  JSON), :mod:`~cmml.serving.errors` (status codes, size limits); :mod:`cmml.serving.signatures` —
  signature definitions and request validation;
* :mod:`cmml.serving.requests` — raw rows per task -> padded episode inputs (the one layout), used
  by :mod:`~cmml.serving.task_inputs` (requests built from a dataset: user history + candidates)
  and the ServingValidator's canned requests;
* :mod:`cmml.serving.cli` — ``cmml serve`` and ``cmml predict``; :mod:`cmml.serving.ports` — free
  loopback ports; :mod:`cmml.serving.testing` — test helpers.

See ``docs/serving.md`` and BUILD.md, "Deploying with TF Serving".
"""
