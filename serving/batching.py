"""Request batching of the test double: TF Serving's ``--enable_batching`` and ``--batching_parameters_file``.

TF Serving wraps a model's session in a ``BatchingSession``: one queue per signature (the set of its input
and output tensor names) on a thread pool shared by every model (``SharedBatchScheduler``). Concurrent
requests of one signature are concatenated along axis 0, run once, and the outputs split back. This module
does the same around the double's signature functions. Facts, TF Serving 2.16.1 (commit 0d726954):

* ``batching/batching_session.cc``: which requests are batched (a run whose tensors equal a signature's;
  an ``output_filter`` that leaves outputs out bypasses the queue), ``ComputeInputSize``, ``MergeInputTensors``
  (padding to ``allowed_batch_sizes`` with the first row of the last task; without
  ``pad_variable_length_inputs`` different non-batch dimensions are FAILED_PRECONDITION),
  ``SplitOutputTensors`` and the deadline handling of ``ProcessBatch``;
* ``batching/batching_util.cc``: ``pad_variable_length_inputs`` pads every non-batch dimension at the end
  up to the batch's largest, **with the tensor's own first element** (not zero), ranks 1 to 6 only;
* ``servables/tensorflow/bundle_factory_util.{h,cc}``: BatchingParameters -> queue options, the
  ``allowed_batch_sizes`` check done when a version loads;
* TensorFlow's ``core/kernels/batching_util/shared_batch_scheduler.h`` (read at a later commit than the
  one TF Serving 2.16.1 pins; these parts predate it): defaults (``max_batch_size`` 1000,
  ``batch_timeout_micros`` 0, ``max_enqueued_batches`` 10, one thread per CPU), when a batch is closed and
  scheduled, the refusals of ``Schedule`` and ``AddQueue``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
import weakref
from typing import Callable, Mapping, Sequence

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from cmml.serving.errors import ServingError, invalid
from cmml.serving.ports import cpu_count

log = logging.getLogger("cmml.serving.double")

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DEFAULT_THREAD_POOL = "model_server_batch_threads"  # server.cc, --enable_batching without a parameters file


def _batching_parameters_class():
    """``tensorflow.serving.BatchingParameters`` (session_bundle_config.proto, TF Serving 2.16.1). The
    tensorflow-serving-api wheel does not ship that proto, so its descriptor is built here, field for field,
    in a private pool: the text format a parameters file is written in parses exactly as in TF Serving."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for name, number, wrapper in [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    ]:
        message.field.add(
            name=name,
            number=number,
            label=field.LABEL_OPTIONAL,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    pool.Add(proto)
    return message_factory.MessageFactory(pool).GetPrototype(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


BatchingParameters = _batching_parameters_class()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for the fields a file leaves out."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=cpu_count)  # port::MaxParallelism()
    thread_pool_name: str = DEFAULT_THREAD_POOL
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False

    @classmethod
    def from_proto(cls, params) -> BatchingOptions:
        """``GetQueueOptions`` / ``CreateBatchScheduler`` (bundle_factory_util.h): a wrapper field that is set
        overrides the default."""
        default = cls()

        def pick(name: str, fallback):
            return getattr(params, name).value if params.HasField(name) else fallback

        return cls(
            max_batch_size=int(pick("max_batch_size", default.max_batch_size)),
            batch_timeout_micros=int(pick("batch_timeout_micros", default.batch_timeout_micros)),
            max_enqueued_batches=int(pick("max_enqueued_batches", default.max_enqueued_batches)),
            num_batch_threads=int(pick("num_batch_threads", default.num_batch_threads)),
            thread_pool_name=str(pick("thread_pool_name", "batch_threads")),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
            enable_large_batch_splitting=bool(pick("enable_large_batch_splitting", False)),
        )

    def check_scheduler(self) -> None:
        """``SharedBatchScheduler::Create``, when the server builds its model factory (a start-up error)."""
        if self.num_batch_threads < 1:
            raise invalid(f"num_batch_threads must be positive; was {self.num_batch_threads}")
        if self.enable_large_batch_splitting:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                "enable_large_batch_splitting is not implemented by the cmml test double "
                "(TF Serving splits a large request across batches)",
            )

    def check_queue(self) -> None:
        """``WrapSessionForBatching`` and ``AddQueue``, run for every version that loads: an error fails the load."""
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != self.max_batch_size:
            raise invalid(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{self.allowed_batch_sizes[-1]}; expected {self.max_batch_size}"
            )
        if self.max_batch_size <= 0:
            raise invalid(f"input_batch_size_limit must be positive; was {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise invalid(f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}")

    @property
    def queue_limit(self) -> int:
        """Batches a queue holds: 0 is read as 1 (``AddQueue``), a negative value wraps around an unsigned size."""
        if self.max_enqueued_batches == 0:
            return 1
        return self.max_enqueued_batches if self.max_enqueued_batches > 0 else 2**64 - 1


def read_batching_parameters(path: str | os.PathLike) -> BatchingOptions:
    from cmml.serving.config import read_proto_text_file

    params = BatchingParameters()
    read_proto_text_file(path, params)
    return BatchingOptions.from_proto(params)


def server_batching(enable_batching: bool, batching_parameters_file: str) -> BatchingOptions | None:
    """``Server::BuildAndStart``: a parameters file needs ``--enable_batching``; without a file the defaults
    apply (thread pool ``model_server_batch_threads``)."""
    if not enable_batching:
        if batching_parameters_file:
            raise invalid(
                "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
            )
        return None
    if batching_parameters_file:
        return read_batching_parameters(batching_parameters_file)
    return BatchingOptions()


# --- the scheduler ------------------------------------------------------------------------------------------
class Task:
    """One request in a queue: its inputs, its 0th-dimension size, its deadline and, once done, its result."""

    __slots__ = ("inputs", "size", "deadline", "done", "outputs", "error")

    def __init__(self, inputs: Mapping[str, np.ndarray], size: int, deadline: float | None):
        self.inputs = inputs
        self.size = size
        self.deadline = deadline  # time.monotonic() value; None: no timeout
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: ServingError | None = None


class _Batch:
    __slots__ = ("tasks", "size")

    def __init__(self):
        self.tasks: list[Task] = []
        self.size = 0


ProcessBatch = Callable[[Sequence[Task]], None]


class BatchQueue:
    """One signature's queue (``internal::Queue``): a deque of batches whose last one is open."""

    def __init__(self, scheduler: SharedBatchScheduler, options: BatchingOptions, process: ProcessBatch):
        self._scheduler = scheduler
        self.options = options
        self._process = process
        self._batches: collections.deque[_Batch] = collections.deque([_Batch()])
        self._open_since = 0.0

    def schedule(self, task: Task) -> None:
        """``Queue::Schedule`` without large-batch splitting."""
        limit = self.options.max_batch_size
        with self._scheduler.lock:
            if task.size > limit:
                raise invalid(f"Task size {task.size} is larger than maximum input batch size {limit}")
            if self._batches[-1].size + task.size > limit:
                if len(self._batches) >= self.options.queue_limit:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full; currently "
                        f"{len(self._batches)} batches enqueued and max_enqueued_batches is "
                        f"{self.options.max_enqueued_batches}",
                    )
                self._batches.append(_Batch())
            open_batch = self._batches[-1]
            if not open_batch.tasks:
                self._open_since = time.monotonic()
            open_batch.tasks.append(task)
            open_batch.size += task.size
            self._scheduler.lock.notify_all()

    def take(self, now: float) -> _Batch | None:
        """``Queue::ScheduleBatch`` (scheduler lock held): a closed batch, or the open one once it is full or
        has waited ``batch_timeout_micros``."""
        if len(self._batches) >= 2:
            return self._batches.popleft()
        open_batch = self._batches[-1]
        if open_batch.tasks and (
            open_batch.size >= self.options.max_batch_size
            or now >= self._open_since + self.options.batch_timeout_micros / 1e6
        ):
            self._batches[-1] = _Batch()
            return open_batch
        return None

    def ready_at(self) -> float | None:
        """When the open batch times out (scheduler lock held); None when it is empty."""
        if len(self._batches) == 1 and self._batches[-1].tasks:
            return self._open_since + self.options.batch_timeout_micros / 1e6
        return None

    def process(self, batch: _Batch) -> None:
        try:
            self._process(batch.tasks)
        except ServingError as exc:
            error = exc
        except Exception as exc:  # a bug here must not leave requests waiting forever
            log.exception("test double: processing a batch failed unexpectedly")
            error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            error = None
        for task in batch.tasks:
            if error is not None:
                task.error = error
            task.done.set()


class SharedBatchScheduler:
    """``num_batch_threads`` threads serving every queue in turn (round robin), shared by all models and versions.

    Queues are held weakly: a queue lives as long as its version's batching session (and the requests that
    hold that version), as TF Serving's queues live as long as the session.
    """

    def __init__(self, num_threads: int, name: str = DEFAULT_THREAD_POOL):
        self.lock = threading.Condition()
        self._queues: list[weakref.ref[BatchQueue]] = []
        self._next = 0
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{k}", daemon=True) for k in range(num_threads)
        ]
        for thread in self._threads:
            thread.start()

    def add_queue(self, options: BatchingOptions, process: ProcessBatch) -> BatchQueue:
        queue = BatchQueue(self, options, process)
        with self.lock:
            self._queues.append(weakref.ref(queue))
        return queue

    def _next_batch(self) -> tuple[BatchQueue | None, _Batch | None, float | None]:
        """Round robin over live queues (lock held): the first batch found, else when to look again."""
        self._queues = [ref for ref in self._queues if ref() is not None]
        now = time.monotonic()
        wake: float | None = None
        count = len(self._queues)
        for k in range(count):
            index = (self._next + k) % count
            queue = self._queues[index]()
            if queue is None:
                continue
            batch = queue.take(now)
            if batch is not None:
                self._next = (index + 1) % count
                return queue, batch, None
            ready = queue.ready_at()
            if ready is not None and (wake is None or ready < wake):
                wake = ready
        return None, None, wake

    def _work(self) -> None:
        while True:
            with self.lock:
                while True:
                    if self._stopped:
                        return
                    queue, batch, wake = self._next_batch()
                    if batch is not None:
                        break
                    self.lock.wait(None if wake is None else max(wake - time.monotonic(), 0.0005))
            queue.process(batch)
            del queue, batch

    def stop(self) -> None:
        with self.lock:
            self._stopped = True
            self.lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)


# --- merging and splitting ------------------------------------------------------------------------------------
def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """``ComputeInputSize``: every input needs a 0th dimension, the same for all."""
    size: int | None = None
    for value in inputs.values():
        if value.ndim == 0:
            raise invalid("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = int(value.shape[0])
        elif value.shape[0] != size:
            raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
    if size is None:
        raise invalid("Batching Run() must have at least one input tensor")
    return size


def round_to_allowed(allowed: Sequence[int], size: int) -> int:
    """``RoundToLowestAllowedBatchSize``: the first allowed size that holds the batch (none: the batch size)."""
    for candidate in allowed:
        if candidate >= size:
            return candidate
    return size


def pad_tensor(tensor: np.ndarray, max_dims: Sequence[int]) -> np.ndarray:
    """``PadTensor``: pad every dimension but the 0th at the end up to ``max_dims``, with the tensor's first
    element (batching_util.cc: "using existing values in padding")."""
    if not 1 <= tensor.ndim <= 6:
        raise invalid("Only tensors with rank from 1 to 6 can be padded.")
    shape = (tensor.shape[0],) + tuple(max(int(m), int(d)) for m, d in zip(max_dims[1:], tensor.shape[1:]))
    if int(np.prod(shape)) == tensor.size:
        return tensor.reshape(shape)
    if tensor.size == 0:
        raise invalid("Got empty tensor in batch of non-empty tensors.")
    out = np.full(shape, tensor.reshape(-1)[0], dtype=tensor.dtype)
    out[tuple(slice(0, d) for d in tensor.shape)] = tensor
    return out


def merge_inputs(
    tasks: Sequence[Mapping[str, np.ndarray]],
    tensor_names: Mapping[str, str],
    allowed_batch_sizes: Sequence[int] = (),
    pad_variable_length_inputs: bool = False,
) -> tuple[dict[str, np.ndarray], int]:
    """``MergeInputTensors``: the tasks' inputs concatenated along axis 0, plus padding rows up to the next
    allowed batch size (copies of the last task's first row). Returns the merged inputs and the padded size.
    ``tensor_names`` maps each input alias to its graph tensor name, which the FAILED_PRECONDITION text names.
    """
    sizes = [int(next(iter(t.values())).shape[0]) for t in tasks]
    padded = round_to_allowed(allowed_batch_sizes, sum(sizes))
    max_dims: dict[str, list[int]] = {}
    if pad_variable_length_inputs:  # CalculateMaxDimSizes: the first task fixes the ranks
        for alias, value in tasks[0].items():
            max_dims[alias] = [0] * value.ndim
        for inputs in tasks:
            for alias, value in inputs.items():
                dims = max_dims[alias]
                if value.ndim != len(dims):
                    raise ServingError(grpc.StatusCode.INTERNAL, "Tensor concat operation failed: ranks differ")
                max_dims[alias] = [max(m, int(d)) for m, d in zip(dims, value.shape)]
    parts: dict[str, list[np.ndarray]] = {alias: [] for alias in tasks[0]}
    for i, inputs in enumerate(tasks):
        for alias, value in inputs.items():
            if pad_variable_length_inputs:
                value = pad_tensor(value, max_dims[alias])
            elif i > 0:
                first = parts[alias][0]
                if value.ndim != first.ndim or value.shape[1:] != first.shape[1:]:
                    raise ServingError(
                        FAILED_PRECONDITION,
                        f"Tensors with name '{tensor_names.get(alias, alias)}' from different tasks have different "
                        "shapes and padding is turned off. Set pad_variable_length_inputs to true, or ensure that "
                        "all tensors with the same name have equal dimensions starting with the first dim.",
                    )
            parts[alias].append(value)
            if i == len(tasks) - 1 and padded > sum(sizes):
                parts[alias].extend([value[:1]] * (padded - sum(sizes)))
    return {alias: np.concatenate(values, axis=0) for alias, values in parts.items()}, padded


def split_outputs(outputs: Mapping[str, np.ndarray], sizes: Sequence[int], padded: int) -> list[dict[str, np.ndarray]]:
    """``SplitOutputTensors``: every output must have a 0th dimension equal to the padded batch size."""
    for value in outputs.values():
        if value.ndim == 0:
            raise ServingError(FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
        if value.shape[0] != padded:
            raise ServingError(
                FAILED_PRECONDITION,
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the "
                "input tensors",
            )
    bounds = np.cumsum([0, *sizes])
    return [{k: v[bounds[i] : bounds[i + 1]] for k, v in outputs.items()} for i in range(len(sizes))]


class BatchingSession:
    """The batching wrapper of one loaded version: a queue per signature, keyed like TF Serving's
    ``TensorSignature`` (input and output tensor names), on the server's shared scheduler.

    ``run(signature, inputs, deadline)`` computes every output of a signature on (merged) inputs and raises
    ServingError; ``tensor_names[signature]`` gives ``(inputs: alias -> tensor name, outputs: alias -> name)``.
    """

    def __init__(
        self,
        scheduler: SharedBatchScheduler,
        options: BatchingOptions,
        tensor_names: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]],
        run: Callable[[str, Mapping[str, np.ndarray], float | None], dict[str, np.ndarray]],
    ):
        options.check_queue()
        self.options = options
        self._run = run
        self._names = dict(tensor_names)
        self._queues: dict[str, BatchQueue] = {}
        by_tensors: dict[tuple[frozenset, frozenset], BatchQueue] = {}
        for signature, (inputs, outputs) in sorted(self._names.items()):
            key = (frozenset(inputs.values()), frozenset(outputs.values()))
            if key not in by_tensors:
                by_tensors[key] = scheduler.add_queue(options, self._processor(signature))
            self._queues[signature] = by_tensors[key]

    def batches(self, signature: str, output_aliases: Sequence[str]) -> bool:
        """Whether a run of these outputs goes through the queue: its tensors must be the signature's (an
        ``output_filter`` that leaves outputs out is run on its own, "Bypassing batcher")."""
        if signature not in self._queues:
            return False
        outputs = self._names[signature][1]
        return {outputs[a] for a in output_aliases} == set(outputs.values())

    def run(self, signature: str, inputs: Mapping[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        task = Task(inputs, batch_size(inputs), deadline)
        self._queues[signature].schedule(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _processor(self, signature: str) -> ProcessBatch:
        input_names = self._names[signature][0]

        def process(tasks: Sequence[Task]) -> None:
            # ProcessBatch: a batch whose tasks all ran out of time in the queue is refused; otherwise it gets
            # the latest deadline of its tasks
            now = time.monotonic()
            deadlines = [t.deadline for t in tasks]
            if all(d is not None and d <= now for d in deadlines):
                raise ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue"
                )
            live = [d for d in deadlines if d is None or d > now]
            deadline = None if any(d is None for d in live) else max(live)
            merged, padded = merge_inputs(
                [t.inputs for t in tasks],
                input_names,
                self.options.allowed_batch_sizes,
                self.options.pad_variable_length_inputs,
            )
            outputs = self._run(signature, merged, deadline)
            for task, result in zip(tasks, split_outputs(outputs, [t.size for t in tasks], padded)):
                task.outputs = result

        return process
