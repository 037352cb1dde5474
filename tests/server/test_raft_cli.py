"""``pykbroker format`` and ``pykbroker cluster``: formatting with a shared cluster id, refusing an
unformatted multi-node start, and a local 3-node cluster that forms and stops cleanly."""

from __future__ import annotations

import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.header import encode_request_header, response_header_version
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.server.storage import read_meta_properties


def pykbroker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pykbroker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_format_writes_the_cluster_id_and_refuses_another(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ("--override", f"log.dirs={data}", "--override", "node.id=2")
    first = pykbroker("format", *args, "--cluster-id", "abc")
    assert first.returncode == 0, first.stderr
    assert "abc" in first.stdout
    assert read_meta_properties(data)["cluster.id"] == "abc"
    assert read_meta_properties(data)["node.id"] == "2"
    again = pykbroker("format", *args, "--cluster-id", "abc")
    assert again.returncode == 0
    other = pykbroker("format", *args, "--cluster-id", "other")
    assert other.returncode == 1
    assert "abc" in other.stderr


def test_a_multi_node_quorum_member_must_be_formatted(tmp_path: Path) -> None:
    result = pykbroker(
        "serve",
        "--override",
        f"log.dirs={tmp_path / 'data'}",
        "--override",
        "controller.quorum.voters=1@127.0.0.1:1,2@127.0.0.1:2",
        "--override",
        "listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0",
    )
    assert result.returncode == 2
    assert "format" in result.stderr


def _describe_cluster(port: int) -> dict[str, Any] | None:
    body = {"include_cluster_authorized_operations": False, "endpoint_type": 1}
    payload = encode_request_header(ApiKey.DESCRIBE_CLUSTER, 1, 7, "test")
    payload += codec.encode(request_message(ApiKey.DESCRIBE_CLUSTER), 1, body)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            data = b""
            while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
                chunk = sock.recv(65536)  # bounded by the socket timeout and the frame size
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    frame = data[4:]
    _, offset = codec.decode_prefix(
        RESPONSE_HEADER, response_header_version(ApiKey.DESCRIBE_CLUSTER, 1), frame
    )
    decoded: dict[str, Any] = codec.decode(
        response_message(ApiKey.DESCRIBE_CLUSTER), 1, frame[offset:]
    )
    return decoded


def test_cluster_command_starts_three_nodes_and_stops_them(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pykbroker", "cluster", "--nodes", "3", "--dir", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        bootstrap = None
        deadline = time.monotonic() + 30
        while bootstrap is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith("bootstrap.servers="):
                bootstrap = line.strip().split("=", 1)[1]
        assert bootstrap is not None, "no bootstrap.servers line"
        ports = [int(item.rsplit(":", 1)[1]) for item in bootstrap.split(",")]
        assert len(ports) == 3
        for node in (1, 2, 3):
            assert (tmp_path / f"node-{node}" / "server.properties").exists()
        ids = {
            read_meta_properties(tmp_path / f"node-{n}" / "data")["cluster.id"] for n in (1, 2, 3)
        }
        assert len(ids) == 1
        found = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = _describe_cluster(ports[0])
            if found and sorted(b["broker_id"] for b in found["brokers"]) == [1, 2, 3]:
                break
            time.sleep(0.1)
        assert found is not None
        assert sorted(b["broker_id"] for b in found["brokers"]) == [1, 2, 3]
        assert found["controller_id"] in (1, 2, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0  # every node is gone
