"""TFX Trainer module: ``run_fn`` for the stock Trainer, a thin caller of :mod:`cmml.models.training`.

Used as ``Trainer(run_fn="cmml.components.trainer.run_fn", examples=task_gen.outputs["tasks"], ...)``
with ``custom_config`` = ``{"kind": "cmml" | "dcn", "setting": "user" | "scenario", "model": {...},
"training": {...}, "rating_range": [lo, hi] | None, "retrieval": {...}}`` (``retrieval``: the
:class:`~cmml.models.retrieval.RetrievalConfig` of ``recommend``'s retrieval stage, CMML only).

Exports, inside the Model artifact (:func:`cmml.models.export.export_models`):

* ``Format-Serving/`` (``fn_args.serving_model_dir``): the model with the tf.Transform graph and
  TaskGen's transformed item and user tables inside, so requests name items and known users by id:
  signatures ``serving_default``, ``recommend`` (the top of the whole catalog), ``encode_context``,
  ``score``, ``update_context`` (CMML), ``rank_items`` (CMML with the catalog relevance head), and
  ``serve_tf_examples`` / ``serve_raw`` (raw attributes, for items outside the catalog). A CMML model
  whose ``recommend`` needs the rating network on every item (no relevance head, or
  ``catalog_rating_weight`` > 0) gets, for a catalog of at least ``retrieval.min_catalog_size`` items,
  a retrieval stage trained here, after CMML, on CMML's own ranking (:mod:`cmml.models.retrieval`):
  ``recommend`` re-ranks its N candidates. The relevance head alone is already a dot product per item,
  the brute-force index such a stage would add, so a model ranking by it gets none;
* ``Format-Ids/``: the same model on transformed ids, which the Evaluator scores on TaskGen's
  episodes;
* ``training_summary.json`` (best epoch, validation curve) next to them.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
from absl import logging

import cmml  # noqa: F401
from cmml.models import retrieval, training
from cmml.models.export import SUMMARY_FILE, export_models


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    config = dict(fn_args.custom_config or {})
    kind, setting = config.get("kind", "cmml"), config.get("setting", "user")
    data = training.TaskData(training.task_root(fn_args.train_files[0]), setting)
    logging.info("Training %s (%s setting) on %s", kind, setting, data.root)
    trained = training.train(
        data,
        kind,
        config.get("model") or {},
        config.get("training") or {},
        rating_range=config.get("rating_range"),
        log=logging.info,
        tensorboard_dir=os.path.join(fn_args.model_run_dir, "logs"),
    )
    stage = None
    if kind == "cmml" and config.get("retrieval") is not None and fn_args.transform_output:
        stage = _retrieval_stage(trained, data, config, logging.info)
    # TaskGen's transformed item and user tables go inside the model: items and known users served by id
    export_models(trained.model, fn_args.serving_model_dir, fn_args.transform_output, data.root, retrieval=stage)
    model_root = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    for folder in (model_root, fn_args.model_run_dir):
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, SUMMARY_FILE), "w") as f:
            f.write(json.dumps(trained.summary, indent=1, default=float))


def _retrieval_stage(
    trained: training.Trained, data: training.TaskData, config: dict, log
) -> retrieval.RetrievalStage | None:
    """The retrieval stage for a catalog of at least ``min_catalog_size`` items (its figures go into
    the training summary), else None: ``recommend`` scores the whole catalog."""
    settings = retrieval.RetrievalConfig.from_dict(config["retrieval"])
    size = retrieval.catalog_size(data.root)
    if not getattr(trained.model, "ranks_by_score", True):
        log(
            f"Catalog of {size:,} items: recommend ranks it by the relevance head, one dot product per item "
            "(the brute-force index a retrieval stage would add): no retrieval stage"
        )
        return None
    if size < settings.min_catalog_size:
        log(
            f"Catalog of {size:,} items, below retrieval.min_catalog_size {settings.min_catalog_size:,}: "
            "recommend scores the whole catalog"
        )
        return None
    log(f"Training the retrieval stage for a catalog of {size:,} items")
    stage = retrieval.train_retrieval(
        trained.model, data, training.TrainingConfig.from_dict(config.get("training") or {}), settings, log
    )
    trained.summary["retrieval"] = stage.summary
    return stage
