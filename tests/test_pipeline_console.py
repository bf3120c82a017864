"""What a local run prints: worker teardown tracebacks are dropped, everything else reaches stderr."""

from __future__ import annotations

import subprocess
import sys

from cmml.pipeline.console import drop_teardown_tracebacks, run_output

TEARDOWN = (
    "Exception ignored in: <function AtomicFunction.__del__ at 0x7f00>\n"
    "Traceback (most recent call last):\n"
    '  File "atomic_function.py", line 291, in __del__\n'
    "TypeError: 'NoneType' object is not subscriptable\n"
)
REAL = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: a real failure\n'


def test_only_the_teardown_blocks_are_dropped():
    text = "first\n" + TEARDOWN + TEARDOWN + REAL + "last\n"
    kept = b"".join(drop_teardown_tracebacks(text.encode().splitlines(keepends=True))).decode()
    assert kept == "first\n" + REAL + "last\n"


def _child_writes(text: str) -> None:
    subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({text!r})"], check=True)


def test_run_output_filters_child_processes_stderr_unless_verbose(capfd):
    with run_output(total=1, progress=sys.stderr, verbose=False):
        _child_writes(TEARDOWN + "a worker warning\n")
        print("a progress line", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a worker warning" in err and "a progress line" in err and "AtomicFunction" not in err
    with run_output(total=1, progress=None, verbose=False):  # no progress lines: still quiet
        _child_writes(TEARDOWN + "another warning\n")
    err = capfd.readouterr().err
    assert "another warning" in err and "AtomicFunction" not in err
    with run_output(total=1, progress=sys.stderr, verbose=True):
        _child_writes(TEARDOWN)
    assert "AtomicFunction" in capfd.readouterr().err
