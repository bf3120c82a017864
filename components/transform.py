"""The stock TFX Transform component running :mod:`cmml.models.preprocessing`."""

from __future__ import annotations

from typing import Any, Mapping

from cmml.models import preprocessing


def make_transform(
    examples,
    schema,
    custom_config: Mapping[str, Any] | None = None,
    analyze_splits: tuple[str, ...] = ("train", "eval"),
    transform_splits: tuple[str, ...] = ("train", "eval"),
    disable_statistics: bool = True,
):
    """The TFX Transform component running this module.

    Vocabularies are analysed over every split by default: ExampleGen's train/eval split is by
    user, while the meta-train / meta-test split is TaskGen's, so items seen only in ExampleGen's
    eval split should still get their own index. ``disable_statistics`` skips Transform's
    pre/post-transform TFDV statistics (validation runs on the raw examples already).
    """
    from tfx.components import Transform
    from tfx.proto import transform_pb2

    return Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=f"{preprocessing.__name__}.preprocessing_fn",
        custom_config=dict(custom_config or {}),
        splits_config=transform_pb2.SplitsConfig(analyze=list(analyze_splits), transform=list(transform_splits)),
        disable_statistics=disable_statistics,
    )
