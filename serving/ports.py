"""Free loopback ports and the CPU count, for starting a server (the test double,
tensorflow_model_server) and sizing its thread pools as TF Serving does."""

from __future__ import annotations

import os
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_count() -> int:
    """CPUs this process may run on: TensorFlow's ``port::NumSchedulableCPUs`` / ``MaxParallelism``, which
    size TF Serving's thread pools."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
