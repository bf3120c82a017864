"""Keras layers of CMML, one concept per module.

* :mod:`~cmml.models.layers.core`: ``MLP`` (a stack of Dense layers) and ``expand_context``
  (per-task values repeated per query row).
* :mod:`~cmml.models.layers.embeddings`: ``FeatureEmbedding`` (user or item features → one
  vector) and ``LabelEmbedding`` (g(y)).
* :mod:`~cmml.models.layers.encoders`: the context encoders, ``PoolingContextEncoder`` (PE: mean
  or max pooling) and ``SequentialContextEncoder`` (SE: a GRU), both with an online-update state.
* :mod:`~cmml.models.layers.hybrid`: ``HybridContext`` (task context combined with each query
  pair's features).
* :mod:`~cmml.models.layers.modulation`: ``FiLM`` and the scorers modulated by the context:
  ``PlainMLP`` (no modulation), ``WeightModulatedMLP``, ``SigmoidModulatedMLP`` (S-LM) and
  ``FiLMModulatedMLP`` (F-LM).
* :mod:`~cmml.models.layers.routing`: ``SoftModularNetwork`` (Soft-M, soft modularization).
* :mod:`~cmml.models.layers.relevance`: ``CatalogRelevance`` (the catalog relevance head: how likely
  a task's user is to pick each catalog item, what ``recommend`` ranks by).

Shapes use B = tasks in a batch, S = support rows, Q = query rows, N = any number of rows,
D* = widths. Masks are float tensors with 1 for a real row and 0 for padding. Every layer is
small, serialisable (``get_config``) and built only from stock TensorFlow ops, so an exported
model runs in TF Serving without this package.
"""
