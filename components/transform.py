"""The stock TFX Transform component running :mod:`cmml.models.preprocessing` over the user and item tables."""

from __future__ import annotations

from typing import Any, Mapping

from cmml.components.example_gen.entities import ENTITY_SPLITS
from cmml.models import preprocessing


def make_transform(
    entities,
    schema,
    custom_config: Mapping[str, Any] | None = None,
    disable_statistics: bool = True,
):
    """The TFX Transform component running this module on LogExampleGen's ``entities``.

    Vocabularies are analysed over both tables (user features over the user rows, item features
    over the item rows, weighted by interactions) and both tables are transformed; the
    interactions themselves are never transformed (TaskGen maps their ids to these rows).
    ``disable_statistics`` skips Transform's pre/post-transform TFDV statistics (validation runs
    on the raw tables already).
    """
    from tfx.components import Transform
    from tfx.proto import transform_pb2

    return Transform(
        examples=entities,
        schema=schema,
        preprocessing_fn=f"{preprocessing.__name__}.preprocessing_fn",
        custom_config=dict(custom_config or {}),
        splits_config=transform_pb2.SplitsConfig(analyze=list(ENTITY_SPLITS), transform=list(ENTITY_SPLITS)),
        disable_statistics=disable_statistics,
        # the tables are small: Beam graph construction, not data, is Transform's cost here, and the analyzer
        # cache's stages double that graph while every run analyses the tables afresh
        disable_analyzer_cache=True,
    )
