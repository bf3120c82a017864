"""How a serving call fails: :class:`ServingError` with its gRPC status code and the REST status it
maps to, and the size :class:`Limits` past which the test double refuses a request.

Shared by the clients and the test double, so both sides report failures the same way.
"""

from __future__ import annotations

import dataclasses

import grpc

# gRPC status -> HTTP status of the REST API (the canonical google.rpc mapping).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}
_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CODE_OF_INT = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A failed call, with the gRPC status code it maps to (REST: :data:`HTTP_STATUS`)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def code_from_int(value: int) -> grpc.StatusCode:
    """TensorFlow's and gRPC's canonical codes share numbers (tf.errors.OpError.error_code)."""
    return _CODE_OF_INT.get(int(value), grpc.StatusCode.UNKNOWN)


def code_from_http(status: int) -> grpc.StatusCode:
    return _CODE_OF_HTTP.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size caps of the test double, TF Serving 2.16.1's where it has one.

    ``max_request_bytes``: the largest gRPC message received (TF Serving: ``builder.SetMaxMessageSize(kint32max)``
    in ``server.cc``; ``--grpc_channel_arguments=grpc.max_receive_message_length=N`` changes it). REST bodies
    have no cap, as in TF Serving (libevent's ``max_body_size`` is left unlimited).
    ``max_tensor_bytes``: the largest dense tensor decoded from a TensorProto. A tensor with explicit values
    cannot be larger than its message; past this, only a shape "filled" from a few values is refused, with the
    text TF Serving answers when ``Tensor::FromProto`` cannot allocate it (``tensor parsing error: <alias>``).
    ``max_tensor_elements``: elements of one JSON or proto tensor (TF Serving has no such cap; the default is
    never reached before the byte caps).
    """

    max_request_bytes: int = INT32_MAX
    max_tensor_elements: int = INT32_MAX
    max_tensor_bytes: int = INT32_MAX
