"""SavedModel warm-up records: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays this TFRecord file of ``PredictionLog`` protos when it loads a version, so the
first live request does not pay for lazy initialisation; a record that fails makes the load fail.
At most 1,000 records are allowed. The pipeline's Pusher calls :func:`write_warmup_requests` on
the SavedModel it pushes, with requests from :func:`canned_requests`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from cmml.serving.errors import Limits, ServingError
from cmml.serving.signatures import (
    DEFAULT_SIGNATURE,
    RAW_SIGNATURE,
    SignatureInfo,
    signature_def_map,
    signature_or_error,
    signatures_from_map,
    validate_inputs,
)
from cmml.serving.tensors import ndarray_to_tensor_proto, numpy_dtype, tensor_proto_to_ndarray

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses more
CMML_SIGNATURES = ("serving_default", "encode_context", "score", "update_context")
# the pipeline's raw-feature export adds these (Format-Serving; rank_items with the relevance head): warmed up
# too when the model has them
RAW_SIGNATURES = ("serve_tf_examples", RAW_SIGNATURE, "recommend", "rank_items")
WARMUP_TOP_K = 10  # recommend's k in a warm-up request

# A canned request: a PredictRequest, or (signature_name, {input name: array}).
CannedRequest = Union[predict_pb2.PredictRequest, tuple[str, Mapping[str, np.ndarray]]]


def warmup_path(saved_model_dir: str | os.PathLike) -> Path:
    return Path(saved_model_dir) / WARMUP_DIR / WARMUP_FILE


def predict_request(
    inputs: Mapping[str, np.ndarray],
    signature_name: str = DEFAULT_SIGNATURE,
    model_name: str = "",
    version: int | None = None,
) -> predict_pb2.PredictRequest:
    """A PredictRequest for ``inputs``. Warm-up requests may leave ``model_name`` empty: the
    server replays them against the version being loaded."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(ndarray_to_tensor_proto(value))
    return request


def _as_request(item: CannedRequest) -> predict_pb2.PredictRequest:
    if isinstance(item, predict_pb2.PredictRequest):
        return item
    signature_name, inputs = item
    return predict_request(inputs, signature_name)


def request_inputs(request: predict_pb2.PredictRequest, limits: Limits = Limits()) -> dict[str, np.ndarray]:
    """Decoded inputs of a PredictRequest (strict, capped decoding)."""
    return {k: tensor_proto_to_ndarray(v, k, limits.max_tensor_elements) for k, v in request.inputs.items()}


def write_warmup_requests(saved_model_dir: str | os.PathLike, requests: Iterable[CannedRequest]) -> Path:
    """Writes ``requests`` as PredictionLog records into ``<saved_model_dir>/assets.extra/``.

    Every request is checked against the SavedModel's signatures first (names, dtypes, ranks), so
    a bad canned request fails here, not when TF Serving loads the model. Returns the file path.
    """
    import tensorflow as tf

    protos = [_as_request(r) for r in requests]
    if not protos:
        raise ValueError("no warm-up requests given")
    if len(protos) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(protos)} warm-up requests: TF Serving accepts at most {MAX_WARMUP_RECORDS}")
    signatures = signatures_from_map(signature_def_map(saved_model_dir))
    for k, request in enumerate(protos):
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        try:
            validate_inputs(signature_or_error(signatures, name), request_inputs(request))
        except ServingError as exc:
            raise ValueError(f"warm-up request {k} ({name}) does not fit the model: {exc}") from None
    path = warmup_path(saved_model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in protos:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a SavedModel's warm-up file ([] when it has none).

    Raises ValueError for a record that does not parse or for more than 1,000 records."""
    import tensorflow as tf

    path = warmup_path(saved_model_dir)
    if not path.is_file():
        return []
    logs = []
    try:
        records = list(tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS + 1).as_numpy_iterator())
    except tf.errors.OpError as exc:
        raise ValueError(f"{path}: not a valid TFRecord file: {exc.message}") from None
    if len(records) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{path}: more than {MAX_WARMUP_RECORDS} warm-up records")
    for k, record in enumerate(records):
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except DecodeError as exc:
            raise ValueError(f"{path}: record {k} is not a PredictionLog: {exc}") from None
        logs.append(log)
    return logs


def carry_warmup_requests(served_dir: str | os.PathLike, saved_model_dir: str | os.PathLike) -> dict[str, int]:
    """Writes the warm-up records of ``served_dir`` into ``saved_model_dir``, a new version of the same
    model (a catalog refresh) whose signatures may have moved on: a record that fits is kept as it
    is; one whose inputs no longer fit (another rank, an input added or gone) is refilled by
    :func:`signature_inputs` from those of its inputs that still fit; one naming a signature the new
    model lacks is left out. Returns the counts ``{"kept", "refilled", "left_out"}``."""
    signatures = signatures_from_map(signature_def_map(saved_model_dir))
    counts = {"kept": 0, "refilled": 0, "left_out": 0}
    requests = []
    for log in read_warmup_requests(served_dir):
        request = log.predict_log.request
        sig = signatures.get(request.model_spec.signature_name or DEFAULT_SIGNATURE)
        if log.WhichOneof("log_type") != "predict_log" or sig is None:
            counts["left_out"] += 1
            continue
        inputs = request_inputs(request)
        try:
            validate_inputs(sig, inputs)
            requests.append(request)
            counts["kept"] += 1
        except ServingError:
            fitting = {
                k: v
                for k, v in inputs.items()
                if k in sig.inputs and (sig.inputs[k].shape is None or len(sig.inputs[k].shape) == v.ndim)
            }
            requests.append(predict_request(signature_inputs(sig, fitting), sig.name))
            counts["refilled"] += 1
    if requests:
        write_warmup_requests(saved_model_dir, requests)
    return counts


def replay_warmup(saved_model_dir: str | os.PathLike, run: Callable[[predict_pb2.PredictRequest], object]) -> int:
    """Runs every warm-up record through ``run``; returns how many. Only predict logs are
    supported (the CMML model has no classify/regress signatures)."""
    logs = read_warmup_requests(saved_model_dir)
    for k, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"warm-up record {k} is a {kind}; only predict_log records are supported")
        run(log.predict_log.request)
    return len(logs)


def canned_requests(
    saved_model_dir: str | os.PathLike,
    episodes: Mapping[str, np.ndarray],
    signatures: Sequence[str] | None = None,
) -> list[predict_pb2.PredictRequest]:
    """One request per signature, its inputs filled by :func:`signature_inputs` from a batch of
    episode tensors. ``signatures`` defaults to the CMML signatures and ``serve_tf_examples`` /
    ``serve_raw`` / ``recommend`` the model has; one whose inputs cannot be filled raises ValueError.
    """
    known = signatures_from_map(signature_def_map(saved_model_dir))
    names = list(signatures) if signatures is not None else [s for s in CMML_SIGNATURES + RAW_SIGNATURES if s in known]
    if not names:
        raise ValueError(f"{saved_model_dir} has none of the CMML signatures {CMML_SIGNATURES}; pass signatures=")
    return [predict_request(signature_inputs(signature_or_error(known, name), episodes), name) for name in names]


def signature_inputs(sig: SignatureInfo, episodes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs of ``sig`` from a batch of episode tensors (episodes.md, or the raw request inputs
    of the pipeline's export, with ``support_examples`` / ``query_examples``).

    Inputs are taken from ``episodes`` by name; ``new_<f>`` inputs (update_context) use the first
    support row ``support_<f>[:, :1]``; the per-task ``user_<f>`` (items-by-id signatures) the first
    support row's ``support_<f>[:, 0]`` and ``user_id`` ``""`` (a new user) when the episodes lack
    it; recommend's ``k`` is 10; fixed-width float inputs that episodes do not hold (``context``,
    ``state``) are zeros of the signature's width.
    """
    lead = [
        np.asarray(episodes[k]).shape[:1] for k in ("support_mask", "support_label", "support_item_id") if k in episodes
    ]
    batch = int(lead[0][0]) if lead and lead[0] else 1
    inputs: dict[str, np.ndarray] = {}
    for key, spec in sig.inputs.items():
        if key in episodes:
            inputs[key] = np.asarray(episodes[key])
        elif key.startswith("new_") and "support_" + key[4:] in episodes:
            inputs[key] = np.asarray(episodes["support_" + key[4:]])[:, :1]
        elif key == "k":  # recommend's items per task
            inputs[key] = np.full(batch, WARMUP_TOP_K, dtype=numpy_dtype(spec.dtype))
        elif key == "user_id" and spec.dtype == types_pb2.DT_STRING:
            inputs[key] = np.full(batch, b"", dtype=object)
        elif key.startswith("user_") and "support_" + key[5:] in episodes:
            inputs[key] = np.asarray(episodes["support_" + key[5:]])[:, 0]
        elif spec.shape is not None and len(spec.shape) == 2 and spec.shape[1] is not None:
            inputs[key] = np.zeros((batch, spec.shape[1]), dtype=numpy_dtype(spec.dtype))
        else:
            raise ValueError(
                f"cannot fill input '{key}' ({spec.describe()}) of signature '{sig.name}' from the episodes"
            )
    return inputs
