"""The LogExampleGen component and its default output split (see the package docstring)."""

from __future__ import annotations

import os
from typing import Sequence

from tfx import types
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from cmml.components.example_gen.entities import KEEP
from cmml.components.example_gen.executor import ENTITIES_KEY, UNKNOWN_ENTITIES_KEY, Executor
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


class LogExampleGenSpec(standard_component_specs.QueryBasedExampleGenSpec):
    """QueryBasedExampleGen's spec plus the ``entities`` output and the unknown-id rule."""

    PARAMETERS = {
        **standard_component_specs.QueryBasedExampleGenSpec.PARAMETERS,
        UNKNOWN_ENTITIES_KEY: ExecutionParameter(type=str, optional=True),
    }
    OUTPUTS = {
        **standard_component_specs.QueryBasedExampleGenSpec.OUTPUTS,
        ENTITIES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


class LogExampleGen(base_beam_component.BaseBeamComponent):
    """ExampleGen for interaction logs read through ``cmml.data`` (see the package docstring).

    Outputs ``examples`` (the interactions, split by ``output_config``) and ``entities`` (the user
    and item tables, splits ``users`` and ``items``).

    Example::

        gen = LogExampleGen("/data/ml-1m-partial")
        multi = LogExampleGen([Source("/data/ml-100k", name="ml100k"), Source("/data/ml-1m-partial", name="ml1m")])
        csv = LogExampleGen(Source("clicks.csv", columns="user=uid,item=sku,label=click"))
    """

    SPEC_CLASS = LogExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = driver.QueryBasedDriver

    def __init__(
        self,
        data: str | os.PathLike | Source | Sequence[Source],
        output_config=None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        unknown_entities: str = KEEP,
    ):
        """
        Args:
          data: a dataset name/folder/log file, a :class:`Source`, or several named Sources
            (multi-domain: ids are prefixed with each source's name).
          output_config: TFX ``example_gen_pb2.Output``; default :func:`default_output_config`.
          block_bytes: size of the log blocks read and encoded as one unit.
          unknown_entities: what happens to an interaction whose user or item has no row in its
            source's side table: ``keep`` (the id joins the table without features) or
            ``quarantine`` (the interaction becomes a dead letter).
        """
        if isinstance(data, Source):
            sources = [data]
        elif isinstance(data, (str, os.PathLike)):
            sources = [Source(os.fspath(data))]
        else:
            sources = list(data)
        query = make_query(sources, block_bytes)
        input_config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=INPUT_SPLIT_NAME, pattern=query)])
        spec = LogExampleGenSpec(
            input_config=input_config,
            output_config=output_config if output_config is not None else default_output_config(),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            unknown_entities=unknown_entities,
            examples=types.Channel(type=standard_artifacts.Examples),
            entities=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
