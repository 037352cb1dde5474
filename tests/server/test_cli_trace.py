"""``pykbroker serve --trace``: every request and response is one bare JSON line on stdout."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pykbroker.api.protocol.api_keys import ApiKey
from tests.wire import encode_request

API_VERSIONS_BODY = {"client_software_name": "trace-test", "client_software_version": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _receive_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


@pytest.mark.parametrize(
    "trace_args",
    [
        pytest.param(["--trace"], id="--trace"),
        pytest.param(["--override", "pykbroker.trace.requests=true"], id="override"),
    ],
)
def test_serve_trace_writes_pure_json_lines(tmp_path: Path, trace_args: list[str]) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pykbroker", "serve", *trace_args,
            "--log-level", "WARNING",
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override", f"log.dirs={tmp_path / 'data'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        with _connect(port, time.monotonic() + 30) as sock:
            sock.sendall(encode_request(ApiKey.API_VERSIONS, 3, API_VERSIONS_BODY, 41))
            frame = _receive_frame(sock)
            assert int.from_bytes(frame[:4], "big") == 41
        deadline = time.monotonic() + 10
        while sum('"kind": "response"' in line for line in out) < 1:
            assert time.monotonic() < deadline, (out, err)
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, "".join(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert out, "no trace lines on stdout"
    lines: list[dict[str, Any]] = [json.loads(line) for line in out]  # every line is pure JSON
    mine = [line for line in lines if line["correlation_id"] == 41]
    assert [line["kind"] for line in mine] == ["request", "response"]
    request, response = mine
    assert (request["api"], request["version"], request["client_id"]) == ("ApiVersions", 3, "test")
    assert request["body"]["client_software_name"] == "trace-test"
    assert response["body"]["error_code"] == 0
    assert any(key["api_key"] == ApiKey.PRODUCE for key in response["body"]["api_keys"])
    # --log-level WARNING hides the INFO start-up line, but not the trace
    assert not any("pykbroker started" in line for line in err)
