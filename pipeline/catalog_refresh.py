"""Catalog refresh without retraining: a new item file → the served model's item table → a new version.

A recommender's catalog changes faster than its model is retrained: new items arrive daily and a
new item's attributes are all CMML needs to score it (its id falls in an OOV bucket until the next
training). :func:`refresh_catalog` rebuilds the pushed SavedModel around a new item table:

1. the item side files of the configured data sources are read exactly as LogExampleGen reads them
   (same readers, same domain prefixes, bad rows counted and shown, never dropped silently);
2. their raw attributes go through the run's tf.Transform graph, the one inside the served model;
3. the model (and ``recommend``'s retrieval stage, when it has one) is rebuilt from the description
   inside the served version and its variables restored from that version (no training, the same
   weights); the retrieval index is recomputed over the new catalog at export;
4. it is exported with the new item table (items missing from the new file keep their previous
   row, so nothing disappears from the catalog by accident), the user table and warm-up records of
   the served version, and installed as a new version under the serving base path, atomically.

TF Serving (or ``cmml serve``) loads the new version on its next poll and swaps without dropping
requests; ``recommend`` then ranks the new items too: by their attributes for a model ranking by
the predicted rating; a model ranking by the catalog relevance head (the default) knows items by id,
so until the next training every new item has its OOV bucket's relevance (docs/serving.md).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
import time
from typing import Callable

import numpy as np

from cmml.pipeline.config import PipelineConfig

Log = Callable[[str], None]


@dataclasses.dataclass
class RefreshReport:
    """What a refresh did: the new version and how the item table changed."""

    version: int
    path: str
    previous_version: int
    items: int  # items in the new table
    added: int  # in the new file, not in the served table
    changed: int  # in both, with other transformed attributes
    unchanged: int
    kept: int  # in the served table only: kept with their previous attributes
    rejected_rows: int  # rows of the item files the readers refused (shown in ``rejections``)
    rejections: list[str]
    warmup: dict[str, int]  # the served version's warm-up records: kept, refilled, left out

    def render(self) -> str:
        lines = [
            f"catalog refreshed: version {self.version} (was {self.previous_version}) at {self.path}",
            f"  items: {self.items} = {self.added} added + {self.changed} changed + {self.unchanged} unchanged "
            f"+ {self.kept} kept from the served table (not in the new file)",
        ]
        lines.append(
            "  warm-up records: {kept} kept, {refilled} refilled for the new signatures, {left_out} left out".format(
                **self.warmup
            )
        )
        if self.rejected_rows:
            lines.append(f"  rejected rows of the item files: {self.rejected_rows}")
            lines += [f"    {r}" for r in self.rejections]
        return "\n".join(lines)


def _latest(pattern: str, what: str) -> str:
    found = sorted(glob.glob(pattern), key=lambda p: (len(os.path.basename(p)), os.path.basename(p)))
    if not found:
        raise FileNotFoundError(f"no {what} under {os.path.dirname(pattern)}: run `cmml run` with this --output first")
    return found[-1]


def read_item_examples(config: PipelineConfig) -> tuple[list[bytes], list[str], int]:
    """The item tables of the config's data sources as serialized raw tf.Examples (LogExampleGen's
    entity examples: same readers, same id prefixes). Returns (examples, rejections shown, rejected count)."""
    from tfx_bsl.coders import example_coder

    from cmml.components.example_gen.entities import ITEMS, entity_examples, entity_table, load_side_tables
    from cmml.pipeline.config import data_sources

    sources = data_sources(config)
    examples, shown, rejected = [], [], 0
    for source in sources if isinstance(sources, list) else [sources]:
        tables, rejects, _ = load_side_tables(source)
        items = tables.table(ITEMS)
        rejected += len(rejects)
        shown += [f"{source.label()}: {r}" for r in rejects[:10]]
        if items.num_rows == 0:
            raise ValueError(f"data source {source.label()} has no item file: there is no catalog to refresh from it")
        table, _ = entity_table(items, None, ITEMS)
        examples += example_coder.RecordBatchToExamples(entity_examples(table))
    return examples, shown, rejected


def transformed_items(examples: list[bytes], raw, model) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw item examples → (raw ids, {feature: [n] / [n, L] transformed ids}) of ``model``'s item
    features, through the transform graph of ``raw`` (:func:`cmml.models.raw_inputs.raw_serving_inputs`)."""
    import tensorflow as tf

    from cmml.data import records as R

    names = [s.name for s in model.feature_specs if s.side == "item"]
    spec = {R.ITEM_ID: tf.io.FixedLenFeature([], tf.string)}
    spec.update({n: raw.example_spec[n] for n in names if n != R.ITEM_ID})
    parsed = tf.io.parse_example(tf.constant(examples), spec)
    rows = {}
    for name in names:
        value = parsed[name]
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value, default_value="" if value.dtype == tf.string else 0)
        rows[name] = value if raw.specs[name].shape.rank else tf.reshape(value, [-1])
    out = raw.preprocess(rows) if rows else {}
    return parsed[R.ITEM_ID].numpy(), {k: v.numpy().astype(np.int64) for k, v in out.items()}


def _served_table(table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(keys, features) of a CatalogTable restored from a SavedModel (its last, all-zero row left out)."""
    keys = table.keys.numpy()
    return keys, {name: v.numpy()[: len(keys)] for name, v in table.features.items()}


def _merge(old, new) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]:
    """New rows replace old ones by id; old ids missing from the new table are kept. The features
    are the new table's (the model's item features; the served table may hold others it never read)."""
    (old_keys, old_f), (new_keys, new_f) = old, new
    names = sorted(new_f)
    keep = ~np.isin(old_keys, new_keys)
    keys = np.concatenate([new_keys, old_keys[keep]])

    def column(features, rows, name, width):
        if name not in features:
            return np.zeros((rows,) + ((width,) if width else ()), np.int64)
        v = features[name]
        return v if v.ndim == 1 else np.pad(v, [(0, 0), (0, width - v.shape[1])])

    merged = {}
    for name in names:
        widths = [f[name].shape[1] for f in (old_f, new_f) if name in f and f[name].ndim == 2]
        width = max(widths) if widths else 0
        merged[name] = np.concatenate(
            [column(new_f, len(new_keys), name, width), column(old_f, len(old_keys), name, width)[keep]]
        )
    # changed: ids in both whose attributes differ
    position = {k: i for i, k in enumerate(old_keys)}
    both = [(i, position[k]) for i, k in enumerate(new_keys) if k in position]
    changed = 0
    if both:
        new_rows, old_rows = map(np.array, zip(*both))
        differs = np.zeros(len(both), bool)
        for name in set(old_f) & set(names):
            width = merged[name].shape[1] if merged[name].ndim == 2 else 0
            a = column(new_f, len(new_keys), name, width)[new_rows]
            b = column(old_f, len(old_keys), name, width)[old_rows]
            differs |= (a != b).reshape(len(both), -1).any(axis=1)
        changed = int(differs.sum())
    counts = {
        "added": int(len(new_keys) - len(both)),
        "changed": changed,
        "unchanged": len(both) - changed,
        "kept": int(keep.sum()),
    }
    return keys, merged, counts


def refresh_catalog(config: PipelineConfig, output_dir: str, log: Log = print) -> RefreshReport:
    """Rebuilds the served model of the run in ``output_dir`` around the item files of ``config``'s
    data sources and installs it as a new version under the run's serving base path."""
    import tensorflow as tf

    from cmml.models.export import CatalogTable, export_by_id
    from cmml.models.raw_inputs import raw_serving_inputs
    from cmml.models.retrieval import rebuild_stage
    from cmml.models.training import rebuild_model
    from cmml.pipeline.config import serving_base
    from cmml.schemas import tasks as T
    from cmml.serving.layout import install_version, latest_version
    from cmml.serving.warmup import carry_warmup_requests

    base = serving_base(config, output_dir)
    served_version = latest_version(base) if os.path.isdir(base) else None
    if served_version is None:
        raise FileNotFoundError(f"no model version under {base}: push one with `cmml run` first")
    served = os.path.join(base, str(served_version))
    loaded = tf.saved_model.load(served)
    if not hasattr(loaded, "model_description") or not hasattr(loaded, "catalog"):
        raise ValueError(f"{served} has no item catalog or model description: export it with this version's Trainer")
    transform_output = _latest(
        os.path.join(output_dir, "pipeline", "Transform", "transform_graph", "*"), "Transform output"
    )

    log(f"reading the item files of {', '.join(map(str, config.data))}")
    examples, shown, rejected = read_item_examples(config)
    model = rebuild_model(json.loads(loaded.model_description.numpy()))
    trackables = {"model": model}
    if hasattr(loaded, "retrieval_description"):  # recommend's retrieval stage: its towers, an index rebuilt below
        trackables["retrieval"] = rebuild_stage(json.loads(loaded.retrieval_description.numpy()), model)
    status = tf.train.Checkpoint(**trackables).read(os.path.join(served, "variables", "variables"))
    status.expect_partial().assert_existing_objects_matched()  # every variable of the model (and stage) restored
    raw = raw_serving_inputs(transform_output, model)
    new = transformed_items(examples, raw, model)
    keys, features, counts = _merge(_served_table(loaded.catalog), new)
    order = T.catalog_order(keys)
    items = CatalogTable("item", keys[order], {k: v[order] for k, v in features.items()})
    users = CatalogTable("user", *_served_table(loaded.user_catalog)) if hasattr(loaded, "user_catalog") else None
    log(f"{len(keys)} items ({counts['added']} new); exporting the model with the new item table")

    version = max(int(time.time()), served_version + 1)
    with tempfile.TemporaryDirectory() as tmp:
        staging = os.path.join(tmp, "model")
        export_by_id(model, staging, raw, items, users, trackables.get("retrieval"))
        # the served version's requests (they name items by id), fitted to this export's signatures
        warmup = carry_warmup_requests(served, staging)
        path = install_version(staging, base, version)
    return RefreshReport(
        version=version,
        path=str(path),
        previous_version=served_version,
        items=len(keys),
        rejected_rows=rejected,
        rejections=shown,
        warmup=warmup,
        **counts,
    )
