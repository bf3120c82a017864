"""The LogExampleGen component and its default output split (see the package docstring)."""

from __future__ import annotations

import os
from typing import Sequence

from tfx.components.example_gen.component import QueryBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from cmml.components.example_gen.executor import Executor
from cmml.components.example_gen.sources import DEFAULT_BLOCK_BYTES, Source, make_query
from cmml.data import records as R

INPUT_SPLIT_NAME = "train"  # the one input "split" (all rows) before the output split config
DEFAULT_PARTITION_FEATURE = R.USER_ID


def default_output_config() -> example_gen_pb2.Output:
    """train : eval = 2 : 1, partitioned by user so that a user's interactions stay together."""
    return example_gen_pb2.Output(
        split_config=example_gen_pb2.SplitConfig(
            splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=2),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
            ],
            partition_feature_name=DEFAULT_PARTITION_FEATURE,
        )
    )


class LogExampleGen(QueryBasedExampleGen):
    """ExampleGen for interaction logs read through ``cmml.data`` (see the package docstring).

    Example::

        gen = LogExampleGen("/data/ml-1m-partial")
        multi = LogExampleGen([Source("/data/ml-100k", name="ml100k"), Source("/data/ml-1m-partial", name="ml1m")])
        csv = LogExampleGen(Source("clicks.csv", columns="user=uid,item=sku,label=click"))
    """

    def __init__(
        self,
        data: str | os.PathLike | Source | Sequence[Source],
        output_config=None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ):
        """
        Args:
          data: a dataset name/folder/log file, a :class:`Source`, or several named Sources
            (multi-domain: ids are prefixed with each source's name).
          output_config: TFX ``example_gen_pb2.Output``; default :func:`default_output_config`.
          block_bytes: size of the log blocks read and encoded as one unit.
        """
        if isinstance(data, Source):
            sources = [data]
        elif isinstance(data, (str, os.PathLike)):
            sources = [Source(os.fspath(data))]
        else:
            sources = list(data)
        query = make_query(sources, block_bytes)
        input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=INPUT_SPLIT_NAME, pattern=query)])
        super().__init__(
            input_config=input_config,
            output_config=output_config if output_config is not None else default_output_config(),
            custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
        )
