"""Archive download: checksum verification over a loopback server, and the no-network path."""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import sys
import threading
import zipfile

import pytest

from cmml.data import fetch as F
from cmml.errors import CmmlError, NetworkUnavailableError


@pytest.fixture()
def archive_server(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
    payload = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/ml-100k.zip", payload
    server.shutdown()


def test_download_verifies_checksums(tmp_path, archive_server, monkeypatch):
    url, payload = archive_server
    good = F.Archive("ml-100k", url, hashlib.md5(payload).hexdigest(), hashlib.sha256(payload).hexdigest(), "ml-100k")
    monkeypatch.setitem(F.ARCHIVES, "ml-100k", good)
    target = F.fetch("ml-100k", tmp_path / "data", progress=io.StringIO())
    assert (target / "u.data").read_text() == "1\t2\t3\t4\n"

    bad = F.Archive("ml-100k", url, "0" * 32, good.sha256, "ml-100k")
    monkeypatch.setitem(F.ARCHIVES, "ml-100k", bad)
    with pytest.raises(CmmlError, match="checksum mismatch"):
        F.fetch("ml-100k", tmp_path / "other", progress=io.StringIO())
    assert not (tmp_path / "other" / "ml-100k").exists()


def test_unreachable_host_raises_network_error(tmp_path, monkeypatch):
    closed = F.Archive("ml-1m", "http://127.0.0.1:9/ml-1m.zip", "x", "y", "ml-1m")  # port 9: nothing listens
    monkeypatch.setitem(F.ARCHIVES, "ml-1m", closed)
    with pytest.raises(NetworkUnavailableError, match="cannot download http://127.0.0.1:9/ml-1m.zip"):
        F.fetch("ml-1m", tmp_path, timeout=2, progress=io.StringIO())


def test_cli_fetch_without_network_fails_fast_with_one_line(tmp_path):
    """This machine has no route to GroupLens: the real command must say so in one line."""
    out = subprocess.run(
        [sys.executable, "-m", "cmml.cli", "data", "fetch", "ml-1m", "--dest", str(tmp_path), "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(
        "cmml: error: cannot download https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    )
    assert not any(tmp_path.iterdir())


def test_unknown_archive_name(tmp_path):
    with pytest.raises(CmmlError, match="unknown archive 'ml-2m'"):
        F.fetch("ml-2m", tmp_path)
