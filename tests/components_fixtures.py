"""Helpers for the data-component tests: TaskGen's inputs straight from the readers.

TaskGen reads LogExampleGen's interaction examples and Transform's transformed user and item
tables. These helpers build both from the Foundation readers, with a small Arrow stand-in for the
Transform step (indices 0 = missing, 1..V in order of first appearance), so the real-data tests
exercise TaskGen (files, Beam, records) without a tf.Transform run. The TFX path LogExampleGen ->
Transform -> TaskGen is covered by the pipeline test on small synthetic data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmml.components.example_gen.columns import prefixed
from cmml.components.task_gen.columns import DOMAIN, FeatureInfo, write_column_batches
from cmml.components.task_gen.tables import FeatureTable, entity_table
from cmml.components.task_gen.themes import ThemeVocab
from cmml.data import open_dataset
from cmml.data import records as R
from cmml.models import preprocessing as TM


def _codes(values: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes + 1 (0 for null) and the vocabulary."""
    enc = pc.dictionary_encode(values)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    codes = np.where(np.isnan(idx.astype(np.float64)), 0, np.nan_to_num(idx) + 1).astype(np.int64)
    return codes, [str(v) for v in enc.dictionary.to_pylist()]


@dataclasses.dataclass
class Columns:
    """Interaction columns of a whole dataset and its transformed user and item tables."""

    cols: dict  # raw interaction columns, as LogExampleGen writes them
    features: list
    vocab: ThemeVocab
    table: pa.Table  # canonical interactions (ids prefixed when a domain is given)
    entities: dict[str, FeatureTable]  # 'user' / 'item' -> the transformed table

    def batches(self, rows: int = 50_000) -> list[dict]:
        n = self.table.num_rows
        out = []
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            b = {}
            for name, value in self.cols.items():
                if isinstance(value, tuple):
                    values, splits = value
                    b[name] = (values[splits[start] : splits[stop]], splits[start : stop + 1] - splits[start])
                elif isinstance(value, pa.Array):
                    b[name] = value.slice(start, stop - start)
                else:
                    b[name] = value[start:stop]
            out.append(b)
        return out

    def write(self, folder: Path, files: int = 2, rows: int = 50_000, compression: str = "") -> list[str]:
        """Writes the columns as interaction-example TFRecord files (uncompressed by default: faster tests)."""
        batches = self.batches(rows)
        paths = []
        for k in range(files):
            path = str(Path(folder) / (f"part-{k}.tfrecord" + (".gz" if compression else "")))
            write_column_batches(batches[k::files], path, compression)
            paths.append(path)
        return paths


def _raw_columns(data: str | Path, prefix: str | None) -> dict:
    """Joined raw columns of one dataset (Arrow arrays; ids prefixed with the domain)."""
    ds = open_dataset(data)
    table = ds.read_interactions().table
    users, _ = ds.read_users()
    items, _ = ds.read_items()
    user_ids = prefixed(table[R.USER_ID], prefix)
    item_ids = prefixed(table[R.ITEM_ID], prefix)
    u_pos = pc.index_in(user_ids, value_set=prefixed(users[R.USER_ID], prefix))
    i_pos = pc.index_in(item_ids, value_set=prefixed(items[R.ITEM_ID], prefix))
    raw = {
        "table": table.set_column(0, R.USER_ID, user_ids).set_column(1, R.ITEM_ID, item_ids),
        R.USER_ID: user_ids,
        R.ITEM_ID: item_ids,
        "domain": pa.array([prefix or ""] * table.num_rows, pa.string()),
        "gender": users["gender"].combine_chunks().take(u_pos),
    }
    for name in ("year", "rated", "genres", "directors", "actors"):
        raw[name] = items[name].combine_chunks().take(i_pos)
    return raw


def reader_columns(data: str | Path, prefix: str | None = None, more: tuple = ()) -> Columns:
    """Columns for every interaction of a dataset, or of several (``more``: (data, prefix) pairs)
    concatenated as one multi-domain log with disjoint, prefixed ids."""
    parts = [_raw_columns(data, prefix)] + [_raw_columns(d, p) for d, p in more]
    raw = {k: pa.concat_arrays([p[k] for p in parts]) for k in parts[0] if k != "table"}
    table = pa.concat_tables([p["table"] for p in parts])
    cols: dict = {
        R.USER_ID: raw[R.USER_ID].cast(pa.large_binary()),
        R.ITEM_ID: raw[R.ITEM_ID].cast(pa.large_binary()),
        R.LABEL: table[R.LABEL].to_numpy().astype(np.float32),
        R.SCENARIO: pc.fill_null(table[R.SCENARIO].combine_chunks(), "").cast(pa.large_binary()),
    }
    if prefix:
        cols[DOMAIN] = raw["domain"].cast(pa.large_binary())
    per_row = {}  # the stand-in Transform, per interaction row
    per_row[R.USER_ID], _ = _codes(raw[R.USER_ID])
    per_row[R.ITEM_ID], _ = _codes(raw[R.ITEM_ID])
    per_row["gender"], _ = _codes(raw["gender"])
    years = pc.fill_null(raw["year"], 0).to_numpy(zero_copy_only=False)
    per_row["year"] = np.where(
        years > 0, np.searchsorted(np.array(TM.YEAR_BOUNDARIES), years, side="right") + 1, 0
    ).astype(np.int64)
    per_row["rated"], rated_vocab = _codes(raw["rated"])
    vocab = {}
    for name in ("genres", "directors", "actors"):
        lists = raw[name]
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        codes, vocab[name] = _codes(pc.list_flatten(lists))
        per_row[name] = (codes, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    features = [
        FeatureInfo(R.USER_ID, "user", "categorical", int(per_row[R.USER_ID].max()) + 2),
        FeatureInfo("gender", "user", "categorical", int(per_row["gender"].max()) + 2),
        FeatureInfo(R.ITEM_ID, "item", "categorical", int(per_row[R.ITEM_ID].max()) + 2),
        FeatureInfo("year", "item", "categorical", len(TM.YEAR_BOUNDARIES) + 2),
        FeatureInfo("genres", "item", "multi", len(vocab["genres"]) + 2),
    ]
    entities = {}
    for side, key, raw_key in (("user", R.USER_ID, TM.RAW_USER_ID), ("item", R.ITEM_ID, TM.RAW_ITEM_ID)):
        names = [f.name for f in features if f.side == side]
        rows = {raw_key: cols[key], **{name: per_row[name] for name in names}}
        entities[side] = entity_table([rows], raw_key, names)  # one row per key: its first interaction's
    theme_vocab = ThemeVocab(
        genres=tuple(vocab["genres"]),
        year=tuple(TM.bucket_names(TM.YEAR_BOUNDARIES, "year")),
        directors=tuple(vocab["directors"]),
        actors=tuple(vocab["actors"]),
        rated=tuple(rated_vocab),
    )
    return Columns(cols, features, theme_vocab, table, entities)


IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
COLD_ITEM = "99999"  # added to the data pipeline's catalog, never rated
PIPELINE_TRANSFORM_CONFIG = {"features": {"writers": None}}  # tags stay: synthetic items have none (empty vocabulary)


@dataclasses.dataclass
class PipelineRun:
    root: Path
    data: Path
    mlmd: object  # ML-Metadata connection config
    transform_config: dict

    def artifacts(self, type_name: str) -> list:
        from ml_metadata.metadata_store import metadata_store

        return metadata_store.MetadataStore(self.mlmd).get_artifacts_by_type(type_name)


def run_data_pipeline(root: Path) -> PipelineRun:
    """The data part of the project's pipeline (``cmml.pipeline.pipeline.create_pipeline(data_only=True)``:
    LogExampleGen -> StatisticsGen / ImportSchemaGen / ExampleValidator / gate -> Transform -> TaskGen)
    on a small synthetic dataset, with the LocalDagRunner and an SQLite ML-Metadata store."""
    from tfx.orchestration import metadata
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from cmml.data import synthetic
    from cmml.pipeline.config import load_config
    from cmml.pipeline.pipeline import create_pipeline, metadata_path

    data = root / "data"
    synthetic.generate(data, synthetic.SyntheticConfig(users=250, seed=11), progress=None)
    with open(data / "movies.dat", "a", encoding="utf-8") as f:  # an item of the catalog nobody rated yet
        f.write(f"{COLD_ITEM}::Cold Start (2001)::Drama|War\n")
    config = load_config(
        overrides={
            "data": str(data),
            "transform": PIPELINE_TRANSFORM_CONFIG,
            "taskgen": {"split_mode": "hash", "test_fraction": 0.25, "valid_fraction": 0.0, "num_shards": 2},
            "beam": {"direct_running_mode": "in_memory", "direct_num_workers": 1},
        }
    )
    LocalDagRunner().run(create_pipeline(config, str(root), data_only=True))
    return PipelineRun(
        root, data, metadata.sqlite_metadata_connection_config(metadata_path(str(root))), config.transform
    )
