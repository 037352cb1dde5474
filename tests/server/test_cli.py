"""The ``pykbroker serve`` process: config errors, start-up line, graceful signals."""

from __future__ import annotations

import os
import re
import signal
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
