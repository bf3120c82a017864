"""Signature definitions of a SavedModel: reading them, describing them, validating requests.

The test double knows nothing about CMML: it reads the ``SignatureDef`` map of whatever SavedModel
it serves (the same map TF Serving returns from ``GetModelMetadata``) and checks every request
against it — input names, dtypes, ranks and fixed dimensions — before the model runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import grpc
import numpy as np
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from cmml.serving.errors import Limits, ServingError, invalid
from cmml.serving.tensors import dtype_enum, dtype_name

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
RAW_SIGNATURE = "serve_raw"  # an items-by-id export's signature on raw episode tensors (attributes as columns)
INIT_OP_SIGNATURE = "__saved_model_init_op"  # TF2 SavedModels list it; it is not callable


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """One named input or output of a signature. ``shape`` is None for an unknown rank; a ``None``
    dimension is unknown (-1 in the proto)."""

    name: str
    dtype: int
    shape: tuple[int | None, ...] | None

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def describe(self) -> str:
        dims = (
            "unknown rank"
            if self.shape is None
            else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        )
        return f"{self.dtype_name} {dims}"

    @classmethod
    def from_proto(cls, name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpecInfo:
        if info.tensor_shape.unknown_rank:
            shape = None
        else:
            shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        return cls(name, int(info.dtype), shape)


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """Inputs and outputs of one signature."""

    name: str
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]
    method_name: str = ""

    @classmethod
    def from_proto(cls, name: str, sig: meta_graph_pb2.SignatureDef) -> SignatureInfo:
        return cls(
            name,
            {k: TensorSpecInfo.from_proto(k, v) for k, v in sorted(sig.inputs.items())},
            {k: TensorSpecInfo.from_proto(k, v) for k, v in sorted(sig.outputs.items())},
            sig.method_name,
        )

    def input_dtypes(self) -> dict[str, int]:
        return {k: v.dtype for k, v in self.inputs.items()}

    def output_dtypes(self) -> dict[str, int]:
        return {k: v.dtype for k, v in self.outputs.items()}

    def describe(self) -> str:
        lines = [f"signature '{self.name}':"]
        lines += [f"  input  {k}: {v.describe()}" for k, v in self.inputs.items()]
        lines += [f"  output {k}: {v.describe()}" for k, v in self.outputs.items()]
        return "\n".join(lines)


def read_meta_graph(export_dir: str | os.PathLike) -> meta_graph_pb2.MetaGraphDef:
    """The ``serve``-tagged MetaGraphDef of a SavedModel (``saved_model.pb`` or ``.pbtxt``)."""
    export_dir = Path(export_dir)
    proto = saved_model_pb2.SavedModel()
    if (export_dir / "saved_model.pb").is_file():
        proto.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    elif (export_dir / "saved_model.pbtxt").is_file():
        text_format.Parse((export_dir / "saved_model.pbtxt").read_text(encoding="utf-8"), proto)
    else:
        raise FileNotFoundError(f"{export_dir}: no saved_model.pb or saved_model.pbtxt")
    for meta in proto.meta_graphs:
        if SERVE_TAG in meta.meta_info_def.tags:
            return meta
    if len(proto.meta_graphs) == 1:
        return proto.meta_graphs[0]
    raise ValueError(f"{export_dir}: no MetaGraphDef tagged '{SERVE_TAG}' among {len(proto.meta_graphs)}")


def signature_def_map(export_dir: str | os.PathLike) -> get_model_metadata_pb2.SignatureDefMap:
    """The SignatureDefMap that GetModelMetadata returns for this SavedModel."""
    out = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in read_meta_graph(export_dir).signature_def.items():
        out.signature_def[name].CopyFrom(sig)
    return out


def signatures_from_map(proto: get_model_metadata_pb2.SignatureDefMap) -> dict[str, SignatureInfo]:
    """Callable signatures of a SignatureDefMap (the TF2 init-op entry is left out)."""
    return {
        name: SignatureInfo.from_proto(name, sig)
        for name, sig in sorted(proto.signature_def.items())
        if name != INIT_OP_SIGNATURE
    }


def signature_or_error(signatures: Mapping[str, SignatureInfo], name: str, grpc_style: bool = False) -> SignatureInfo:
    """The signature called ``name`` ('' = serving_default), or TF Serving's error for an unknown one:
    over gRPC FAILED_PRECONDITION (``predict_util.cc``), over REST INVALID_ARGUMENT (``GetInfoMap``)."""
    name = name or DEFAULT_SIGNATURE
    if name not in signatures:
        if grpc_style:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        raise invalid(f'Serving signature name: "{name}" not found in signature def')
    return signatures[name]


def validate_inputs(sig: SignatureInfo, inputs: Mapping[str, np.ndarray], limits: Limits = Limits()) -> None:
    """Raises INVALID_ARGUMENT unless ``inputs`` match the signature: same names, dtypes, ranks and
    fixed dimensions. Checks everything cheap before the model runs. (Sizes were bounded when the
    tensors were decoded; ``limits`` is kept for callers that pass it.)"""
    sent, expected = set(inputs), set(sig.inputs)
    if sent != expected:  # TF Serving's texts (predict_util.cc, then TensorFlow's GetInputValues)

        def names(xs):
            return "{" + ",".join(sorted(xs)) + "}"

        if len(sent) != len(expected):
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} len({names(sent)}) != "
                f"len({names(expected)}). Sent extra: {names(sent - expected)}. "
                f"Missing but required: {names(expected - sent)}."
            )
        raise invalid(
            f"Signature input alias: {sorted(expected - sent)[0]} not found in request and no default value "
            f"provided. Sent extra: {names(sent - expected)}."
        )
    for name, spec in sig.inputs.items():
        array = inputs[name]
        got = dtype_enum(array)
        if got != spec.dtype:
            raise invalid(
                f"input '{name}' of signature '{sig.name}' expects {spec.dtype_name} but {dtype_name(got)} was sent"
            )
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                raise invalid(
                    f"input '{name}' of signature '{sig.name}' expects rank {len(spec.shape)} ({spec.describe()}) "
                    f"but shape {list(array.shape)} was sent"
                )
            for axis, (want, have) in enumerate(zip(spec.shape, array.shape)):
                if want is not None and want != have:
                    raise invalid(
                        f"input '{name}' of signature '{sig.name}' expects dimension {axis} to be {want} "
                        f"({spec.describe()}) but shape {list(array.shape)} was sent"
                    )
