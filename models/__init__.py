"""The models (installed as ``cmml.models``): CMML, its layers and baselines, and how they train.

* ``layers/`` — Keras layers of CMML: embeddings, context encoders, hybrid context, modulation,
  soft routing;
* ``cmml`` / ``config`` — the CMML model and its configuration;
* ``dcn``, ``maml``, ``simple`` (+ ``baselines``, shared pieces) — DCN / DCN-F, MeLU / MetaCS-DNN, and
  the feed-forward floors (global mean, item mean, bias model, ItemPop);
* ``training`` — the one training API (build a model from a config, episodes, early stopping);
* ``episodes`` — TaskGen's per-task records → episode tensors (tf.data);
* ``preprocessing`` — the tf.Transform ``preprocessing_fn``; ``raw_inputs`` — that graph at serving time;
* ``export`` — the SavedModel and its serving signatures;
* ``losses``, ``metrics``, ``evaluation`` — losses, the per-task metrics, scoring evaluation episodes;
* ``testing`` — random episodes for tests and benchmarks.
"""
