"""The ``pykbroker serve`` process: config errors, start-up line, graceful signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

STARTED = re.compile(r"pykbroker started .* listening on PLAINTEXT://127\.0\.0\.1:(\d+)")


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pykbroker", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_invalid_value_exits_2_before_writing_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pykbroker",
            "serve",
            "--override",
            "num.partitions=zero",
            "--override",
            f"log.dirs={data}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "num.partitions" in result.stderr
    assert not data.exists()


def test_missing_properties_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pykbroker", "serve", str(tmp_path / "nope.properties")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully_and_marks_clean_shutdown(
    tmp_path: Path, signum: signal.Signals
) -> None:
    props = tmp_path / "server.properties"
    props.write_text(
        f"listeners=PLAINTEXT://127.0.0.1:0\nlog.dirs={tmp_path / 'data'}\nbogus.key=1\n"
    )
    proc = _serve(str(props))
    lines: list[str] = []
    started = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if STARTED.search(line):
                started.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert started.wait(30), "".join(lines)
        assert any("bogus.key" in line for line in lines)
        proc.send_signal(signum)
        began = time.monotonic()
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - began < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()
    meta = (tmp_path / "data" / "meta.properties").read_text()
    assert re.search(r"^cluster\.id=[A-Za-z0-9_-]{22}$", meta, re.M)
    assert "node.id=1" in meta
    assert (tmp_path / "data" / ".kafka_cleanshutdown").exists()
    assert os.path.isdir(tmp_path / "data" / "__cluster_metadata-0")


def _serve_fails(*overrides: str) -> subprocess.CompletedProcess[str]:
    args = [arg for item in overrides for arg in ("--override", item)]
    return subprocess.run(
        [sys.executable, "-m", "pykbroker", "serve", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "ExceptionGroup" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("pykbroker: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("bad", ["file", "under-a-file", "/proc/nope"])
def test_unusable_log_dir_exits_2_and_writes_nothing(tmp_path: Path, bad: str) -> None:
    good = tmp_path / "good"
    a_file = tmp_path / "afile"
    a_file.write_text("not a dir")
    bad_dir = {"file": a_file, "under-a-file": a_file / "sub", "/proc/nope": Path("/proc/nope")}
    # the usable dir comes first: it must not be formatted before the bad one is noticed
    result = _serve_fails("listeners=PLAINTEXT://127.0.0.1:0", f"log.dirs={good},{bad_dir[bad]}")
    _assert_one_line_error(result, str(bad_dir[bad]), "unusable")
    assert not good.exists()
    assert a_file.read_text() == "not a dir"


def test_listener_port_in_use_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve_fails(f"listeners=PLAINTEXT://127.0.0.1:{port}", f"log.dirs={data}")
    _assert_one_line_error(result, f"127.0.0.1:{port}", "Address already in use")
    assert not (data / "meta.properties").exists()
    assert not data.exists()
