"""Client of TF Serving's gRPC API (the real server or the test double).

    client = GrpcClient("localhost:8500", "cmml")
    result = client.predict(inputs, signature_name="serving_default")
    ranking = rank_items(result.outputs["scores"][0], item_ids, mask=inputs["query_mask"][0])

Same methods as :class:`~cmml.serving.rest_client.RestClient` — :meth:`~GrpcClient.predict`,
:meth:`~GrpcClient.metadata`, :meth:`~GrpcClient.status` — and failures raise
:class:`~cmml.serving.errors.ServingError` with the gRPC status code.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from cmml.serving.errors import ServingError
from cmml.serving.results import Prediction, VersionState
from cmml.serving.signatures import DEFAULT_SIGNATURE, SignatureInfo, signatures_from_map
from cmml.serving.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

_NO_LIMIT = 1 << 62  # responses come from the server we asked; no element cap on decoding them


class GrpcClient:
    """PredictionService / ModelService client over one gRPC channel (thread-safe).

    Args:
      target: ``host:port`` of TF Serving's gRPC port.
      model_name: the model to call.
      timeout: seconds per call.
    """

    def __init__(self, target: str, model_name: str, timeout: float = 10.0, max_message_bytes: int = 256 << 20):
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, spec, version: int | None, signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        if signature_name is not None:
            spec.signature_name = signature_name

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ServingError(exc.code(), exc.details() or "") from None

    def predict_request(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(value if hasattr(value, "tensor_shape") else ndarray_to_tensor_proto(value))
        request.output_filter.extend(output_filter)
        return request

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE,
        version: int | None = None,
        output_filter: Sequence[str] = (),
    ) -> Prediction:
        """Calls ``signature_name`` with numpy arrays (or TensorProtos)."""
        response = self._call(
            self._predict.Predict, self.predict_request(inputs, signature_name, version, output_filter)
        )
        return self._prediction(response, signature_name)

    def predict_raw(self, request: predict_pb2.PredictRequest) -> Prediction:
        """Sends a prepared PredictRequest as is (e.g. a warm-up record)."""
        response = self._call(self._predict.Predict, request)
        return self._prediction(response, request.model_spec.signature_name or DEFAULT_SIGNATURE)

    @staticmethod
    def _prediction(response: predict_pb2.PredictResponse, signature_name: str) -> Prediction:
        # copies: decoded tensor_content is a read-only view of the response buffer
        outputs = {k: np.array(tensor_proto_to_ndarray(v, k, _NO_LIMIT)) for k, v in response.outputs.items()}
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return Prediction(outputs, response.model_spec.signature_name or signature_name, version)

    def metadata(self, version: int | None = None) -> tuple[int, dict[str, SignatureInfo]]:
        """(served version, callable signatures) from GetModelMetadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version)
        response = self._call(self._predict.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(defs):
            raise ServingError(grpc.StatusCode.INTERNAL, "metadata 'signature_def' is not a SignatureDefMap")
        return response.model_spec.version.value, signatures_from_map(defs)

    def status(self, version: int | None = None) -> list[VersionState]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version)
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionState(
                int(s.version),
                state_name(s.state),
                error_codes_pb2.Code.Name(s.status.error_code),
                s.status.error_message,
            )
            for s in response.model_version_status
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
