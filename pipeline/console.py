"""What a local run prints: one line per component, the Trainers' epoch lines, warnings, nothing else.

TFX, Beam and TensorFlow are chatty: INFO logs per component, per-worker start-up warnings, and,
when Beam's multi-processing DirectRunner workers exit, one ``Exception ignored in:
AtomicFunction.__del__`` traceback per TensorFlow function still alive while the interpreter shuts
down (TensorFlow's module globals are gone by then; nothing failed). :func:`run_output` keeps all
of that off the console unless ``verbose`` is set; warnings and errors of the run itself still show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Iterator, TextIO

from cmml.models.training import EPOCH_LINE

# TFX / TF warnings that every run emits and that need no action
BENIGN_WARNINGS = (
    "ArtifactQuery.property_predicate is not supported",
    "does not have payload_format custom property",
    "Tables initialized inside a tf.function",
    "triggered tf.function retracing",
)
# An exiting Beam worker's teardown traceback begins with this line (see the module docstring)
TEARDOWN_TRACEBACK = b"Exception ignored in: <function AtomicFunction.__del__"
_RUNNING, _FINISHED, _CACHED = "Component %s is running.", "Component %s is finished.", "A cached execution %d is used."


class Progress(logging.Handler):
    """Turns the local runner's log records into one line per component, with its wall time."""

    def __init__(self, total: int, out: TextIO):
        super().__init__(level=logging.INFO)
        self.total, self.out, self.done = total, out, 0
        self.started: dict[str, float] = {}
        self.current: str | None = None
        self.cached: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RUNNING and record.args:
            self.current = str(record.args[0])
            self.started[self.current] = time.time()
            print(f"[{self.done + 1:2d}/{self.total}] {self.current} ...", file=self.out, flush=True)
        elif record.msg == _CACHED and self.current:
            self.cached.add(self.current)
        elif isinstance(record.msg, str) and record.msg.startswith(EPOCH_LINE):  # a Trainer's epoch line
            print(f"        {self.current}: {record.getMessage().strip()}", file=self.out, flush=True)
        elif record.msg == _FINISHED and record.args:
            name = str(record.args[0])
            self.done += 1
            took = time.time() - self.started.get(name, time.time())
            note = "reused cached outputs" if name in self.cached else f"done in {took:.1f} s"
            print(f"        {name}: {note}", file=self.out, flush=True)


def drop_teardown_tracebacks(lines: Iterator[bytes]) -> Iterator[bytes]:
    """``lines`` without the worker teardown tracebacks: the ``Exception ignored in:`` line, the
    indented traceback and the exception line that ends it."""
    skipping = False
    for line in lines:
        if line.startswith(TEARDOWN_TRACEBACK):
            skipping = True
        elif not skipping:
            yield line
        elif not line.startswith((b" ", b"Traceback")):
            skipping = False  # the exception line closes the block


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Routes file descriptor 2 (and so every child process started meanwhile: Beam's workers)
    through :func:`drop_teardown_tracebacks` on its way to the real stderr."""
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as source, os.fdopen(os.dup(real), "wb", buffering=0) as sink:
            for line in drop_teardown_tracebacks(source):
                sink.write(line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe sees end-of-file once the children that inherited it are gone too
        os.close(real)
        thread.join(timeout=10)


@contextlib.contextmanager
def run_output(total: int, progress: TextIO | None, verbose: bool) -> Iterator[None]:
    """The console while a pipeline of ``total`` components runs (see the module docstring).

    ``progress`` receives the component and epoch lines (None: none are printed) and the run's
    warnings (None: they go to stderr); ``verbose`` shows TFX's and Beam's own logs and everything
    the workers print.
    """
    from absl import logging as absl_logging

    absl_logger = logging.getLogger("absl")
    beam_logger = logging.getLogger("apache_beam")
    handlers: list[logging.Handler] = []
    quiet = not verbose
    if progress is not None:
        handlers.append(Progress(total, progress))
    if quiet:
        warnings_only = logging.StreamHandler(progress or sys.stderr)
        warnings_only.setLevel(logging.WARNING)
        warnings_only.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        warnings_only.addFilter(lambda record: not any(b in record.getMessage() for b in BENIGN_WARNINGS))
        handlers.append(warnings_only)
    saved_env = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    saved = absl_logging.get_verbosity(), absl_logger.propagate, beam_logger.level
    for handler in handlers:
        absl_logger.addHandler(handler)
    # absl's verbosity, not just the logger level: TensorFlow's checkpointing silences absl and then
    # restores its *verbosity*, which would otherwise put the logger back to WARNING mid-run
    absl_logging.set_verbosity(absl_logging.INFO)
    if quiet:
        absl_logger.propagate = False  # the root handler would print every INFO record
        beam_logger.setLevel(logging.ERROR)  # Beam workers' start-up warnings, relayed per worker
        # Beam workers are fresh interpreters: their TensorFlow start-up chatter and google-api-core's
        # per-module Python 3.10 notices
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ["PYTHONWARNINGS"] = "ignore:You are using a non-supported Python version:FutureWarning"
    try:
        with _filtered_stderr() if quiet else contextlib.nullcontext():
            yield
    finally:
        absl_logging.set_verbosity(saved[0])
        absl_logger.propagate = saved[1]
        beam_logger.setLevel(saved[2])
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for handler in handlers:
            absl_logger.removeHandler(handler)
