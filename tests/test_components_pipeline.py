"""End to end on small synthetic data: LogExampleGen -> validation gate -> Transform -> TaskGen (LocalDagRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cmml.components.task_gen.accounting import STATS_FILE
from cmml.components.task_gen.config import TaskGenConfig
from cmml.components.task_gen.executor import Executor
from cmml.schemas import episodes as E
from cmml.schemas import tasks as T

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_task_records_from_the_pipeline(data_pipeline):
    import tensorflow_transform as tft

    data = data_pipeline.data
    [tasks] = [a for a in data_pipeline.artifacts("Examples") if "/TaskGen/" in a.uri]
    out = Path(tasks.uri)
    props = {k: v.int_value for k, v in tasks.custom_properties.items()}
    ratings = pd.read_csv(data / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "ts"])
    counts = ratings.groupby("user").size()
    kept = counts[(counts >= 13) & (counts <= 100)]
    assert props["rows_in"] == len(ratings) and props["conservation_ok"] == 1
    assert props["rows_written"] == kept.sum() and props["tasks_meta_train"] + props["tasks_meta_test"] == len(kept)
    assert props["filtered_user_too_few_ratings"] == counts[counts < 13].sum()
    # feature specs: vocab sizes from the Transform output (V + K + 1), dropped features absent
    [graph] = data_pipeline.artifacts("TransformGraph")
    tft_out = tft.TFTransformOutput(graph.uri)
    specs = {s.name: s for s in E.load_feature_specs(out)}
    for dropped in ("writers", "tags"):  # dropped by the default transform config
        assert dropped not in specs and dropped not in tft_out.transformed_feature_spec()
    assert specs["user_id"].vocab_size == len(tft_out.vocabulary_by_name("user_id")) + 32 + 1
    assert (
        specs["genres"].vocab_size == len(tft_out.vocabulary_by_name("genres")) + 2 + 1
        and specs["genres"].kind == "multi"
    )
    assert specs["age"].vocab_size == 8
    # record content: the transformed indices of the raw ids (every rated id has its index)
    import tensorflow as tf

    users_vocab = [u.decode() for u in tft_out.vocabulary_by_name("user_id")]
    items_vocab = [i.decode() for i in tft_out.vocabulary_by_name("item_id")]
    genre_vocab = [g.decode() for g in tft_out.vocabulary_by_name("genres")]
    movies = pd.read_csv(data / "movies.dat", sep="::", engine="python", names=["item", "title", "genres"], dtype=str)
    movie_genres = dict(zip(movies.item, movies.genres.str.split("|")))
    from cmml.models.episodes import catalog_tables

    catalog = catalog_tables(out, list(specs.values()))
    files = sorted((out / "Split-meta_test").glob("*.gz"))
    for serialized in tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP").batch(8).take(1):
        parsed = T.parse_task_records(serialized)
        for b in range(int(parsed[T.TASK_KEY].shape[0])):
            user = parsed[T.TASK_KEY][b].numpy().decode()
            [user_row] = parsed[T.USER_INDEX][b].numpy()
            assert catalog["user_id"][user_row] == users_vocab.index(user) + 1
            raw_items = [x.decode() for x in parsed[T.ITEM_RAW_ID][b].numpy()]
            item_rows = parsed[T.ITEM_INDEX][b].numpy()
            assert catalog["item_id"][item_rows].tolist() == [items_vocab.index(i) + 1 for i in raw_items]
            for i, g in zip(raw_items, catalog["genres"][item_rows]):
                assert sorted(genre_vocab[x - 1] for x in g if x) == sorted(movie_genres[i])
            role = parsed[T.ROW_ROLE][b].numpy()
            assert (role == T.ROLE_QUERY).sum() == 10
    # the episodes feed straight from this output
    from cmml.models.episodes import training_episodes

    batch = next(iter(training_episodes(out, list(specs.values()), batch_size=8)))
    assert set(batch) == {f"{p}_{n}" for p in ("support", "query") for n in list(specs) + ["label", "mask"]}
    [report] = data_pipeline.artifacts("cmml.ValidationReport")
    assert report.custom_properties["passed"].int_value == 1


def test_scenario_tasks_from_the_same_transform(data_pipeline, tmp_path):
    """TaskGen's executor on the pipeline's Transform output, scenario setting ('auto' finds the log's scenarios)."""
    import apache_beam as beam
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    data, transform_config = data_pipeline.data, data_pipeline.transform_config
    [graph] = data_pipeline.artifacts("TransformGraph")
    from tfx.types import standard_artifacts

    def artifact(folder: str):
        [mlmd] = [a for a in data_pipeline.artifacts("Examples") if f"/{folder}/" in a.uri]
        out = standard_artifacts.Examples()
        out.set_mlmd_artifact(mlmd)
        return out

    ex, entities = artifact("LogExampleGen/examples"), artifact("transformed_examples")
    tg = standard_artifacts.TransformGraph()
    tg.set_mlmd_artifact(graph)
    tasks = standard_artifacts.Examples()
    tasks.uri = str(tmp_path / "tasks")
    config = TaskGenConfig(
        setting="scenario", min_items=5, max_items=1000, test_fraction=0.3, eval_support_positives=8, num_shards=2
    )
    context = BaseBeamExecutor.Context(make_beam_pipeline_fn=lambda: beam.Pipeline(argv=IN_MEMORY))
    Executor(context).Do(
        {"examples": [ex], "entities": [entities], "transform_graph": [tg]},
        {"tasks": [tasks]},
        {"config": config.to_json(), "transform_config": json.dumps(transform_config)},
    )
    stats = json.loads((tmp_path / "tasks" / STATS_FILE).read_text())
    assert stats["scenario_source"] == "column" and stats["conservation_ok"]
    themes = pd.read_csv(data / "item_themes.dat", sep="::", engine="python", names=["item", "theme"])
    ratings = pd.read_csv(data / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "ts"])
    per = ratings.merge(themes, on="item").groupby("theme").item.nunique()
    kept = per[(per >= 5) & (per <= 1000)]
    assert stats["tasks_by_split"].get("meta_train", 0) + stats["tasks_by_split"].get("meta_test", 0) == len(kept)
    assert tasks.mlmd_artifact.custom_properties["tasks_meta_test"].int_value >= 1
