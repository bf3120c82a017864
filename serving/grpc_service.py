"""gRPC side of the test double: ``PredictionService`` and ``ModelService`` from ``tensorflow_serving.apis``.

Implements Predict, GetModelMetadata and GetModelStatus; Classify, Regress, MultiInference and
HandleReloadConfigRequest answer UNIMPLEMENTED. Every failure is a gRPC status with a message;
an unexpected exception becomes INTERNAL (never an unhandled error that would show as UNKNOWN).
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from cmml.serving.errors import Limits, ServingError, invalid
from cmml.serving.model_store import ServerCore
from cmml.serving.signatures import DEFAULT_SIGNATURE
from cmml.serving.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

log = logging.getLogger("cmml.serving.double")
SIGNATURE_DEF_FIELD = "signature_def"
T = TypeVar("T")


def _answer(context: grpc.ServicerContext, method: str, work: Callable[[], T]) -> T:
    try:
        return work()
    except ServingError as exc:
        error = exc
    except Exception as exc:  # keep the server up whatever a request does
        log.exception("test double: %s failed unexpectedly", method)
        error = ServingError(grpc.StatusCode.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")
    message = error.message  # TF Serving's ToGRPCStatus keeps the first 1024 characters
    context.abort(error.code, message if len(message) <= 1024 else message[:1024] + "...TRUNCATED")
    raise AssertionError("unreachable: context.abort raises")


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The client's deadline as the run's timeout: TF Serving sets ``RunOptions.timeout_in_ms`` from it
    (``DeadlineToTimeoutMillis``, prediction_service_impl.cc). No deadline: no timeout."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > _NO_DEADLINE else remaining


_NO_DEADLINE = 10 * 365 * 24 * 3600.0  # grpc reports "no deadline" as a time far in the future


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServerCore, limits: Limits = Limits()):
        self.core = core
        self.limits = limits

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return _answer(context, "Predict", lambda: self._predict(request, _timeout(context)))

    def _predict(self, request: predict_pb2.PredictRequest, timeout: float | None) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        model = self.core.resolve(spec.name, _version(spec), spec.version_label)
        inputs = {
            name: tensor_proto_to_ndarray(proto, name, self.limits.max_tensor_elements, self.limits.max_tensor_bytes)
            for name, proto in request.inputs.items()
        }
        signature = spec.signature_name or DEFAULT_SIGNATURE
        outputs = model.predict(signature, inputs, list(request.output_filter), timeout)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(ndarray_to_tensor_proto(value, typed_fields=True))  # as TF Serving
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext):
        return _answer(context, "GetModelMetadata", lambda: self._metadata(request))

    def _metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise invalid(f"Metadata field(s) {unsupported} not supported; only '{SIGNATURE_DEF_FIELD}'")
        spec = request.model_spec
        model = self.core.resolve(spec.name, _version(spec), spec.version_label)
        return metadata_response(spec.name, model.version, model.signature_defs)

    def Classify(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by the cmml test double (use Predict)"
        )

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by the cmml test double (use Predict)")

    def MultiInference(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by the cmml test double (use Predict)"
        )


def metadata_response(
    name: str, version: int, signature_defs: get_model_metadata_pb2.SignatureDefMap
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
    return response


def status_response(core: ServerCore, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in core.statuses(name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = status.state
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServerCore):
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext):
        spec = request.model_spec
        return _answer(context, "GetModelStatus", lambda: status_response(self.core, spec.name, _version(spec)))

    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the cmml test double reads its models at start-up only; it takes no config reloads",
        )
