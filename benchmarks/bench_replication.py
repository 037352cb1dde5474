"""Produce cost of replication: acks=1 vs acks=all on a replication-factor-3 topic.

    python benchmarks/bench_replication.py            # 100k x 1 KB per acks setting
    python benchmarks/bench_replication.py --quick    # 20k x 1 KB
    python benchmarks/bench_replication.py --records 300000 --size 100

Starts a 3-node pykbroker cluster of processes (the ``server.properties`` that ``pykbroker
cluster`` writes, free ports on 127.0.0.1, data in a temporary directory), creates one topic of
one partition, RF=3 and ``min.insync.replicas=2`` per acks setting, and produces N records with
confluent-kafka (default batching) with acks=1, then acks=all. Printed side by side: records/s
and MB/s of payload (first produce() to the last delivery report), and p50/p99 of each record's
latency from produce() to its delivery report. Every process started here is stopped here
(SIGTERM, then SIGKILL after 10 s). Not a test: it prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pykbroker.local_cluster import NodeSpec, prepare_cluster  # noqa: E402

PHASE_TIMEOUT_S = 600.0  # no single measurement may run longer than this
READY_TIMEOUT_S = 60.0
OVERRIDES = ("offsets.topic.replication.factor=3", "transaction.state.log.replication.factor=3")


@contextmanager
def cluster(root: Path) -> Iterator[list[NodeSpec]]:
    """Three ``pykbroker serve`` processes, stopped on exit."""
    specs = prepare_cluster(3, root)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for spec in specs:
            command = [sys.executable, "-m", "pykbroker", "serve", str(spec.properties_file)]
            for override in OVERRIDES:
                command += ["--override", override]
            with (spec.folder / "output.log").open("wb") as output:
                procs.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        cwd=spec.folder,
                        env=env,
                    )
                )
        yield specs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(bootstrap: str, topics: list[str]) -> None:
    """Create ``topics`` (RF=3) once 3 brokers are registered; wait for 3 replicas in sync."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(admin.list_topics(timeout=5).brokers) < 3:  # bounded by the deadline
        if time.monotonic() > deadline:
            raise RuntimeError("the 3 brokers did not register")
        time.sleep(0.2)
    new = [NewTopic(t, 1, 3, config={"min.insync.replicas": "2"}) for t in topics]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    while True:  # bounded by the deadline
        metadata = admin.list_topics(timeout=5)
        isrs = [
            sorted(metadata.topics[t].partitions[0].isrs)
            for t in topics
            if t in metadata.topics and 0 in metadata.topics[t].partitions
        ]
        if len(isrs) == len(topics) and all(isr == [1, 2, 3] for isr in isrs):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not in sync: {isrs}")
        time.sleep(0.2)


def produce(
    bootstrap: str, topic: str, count: int, size: int, acks: str
) -> tuple[float, list[float], int]:
    """(seconds, per-record latencies in ms, failed deliveries) for ``count`` records."""
    from confluent_kafka import Producer

    latencies: list[float] = []
    failed = 0

    def delivered(sent_at: float, err: object, _msg: object) -> None:
        nonlocal failed
        if err is None:
            latencies.append((time.perf_counter() - sent_at) * 1000)
        else:
            failed += 1

    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "log_level": 0})
    payload = os.urandom(size)
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    started = time.perf_counter()
    for _ in range(count):
        while time.monotonic() < deadline:  # retried while the local queue is full
            try:
                sent_at = time.perf_counter()
                producer.produce(topic, payload, on_delivery=functools.partial(delivered, sent_at))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(max(1.0, deadline - time.monotonic()))
    return time.perf_counter() - started, latencies, failed


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per record")
    parser.add_argument("--quick", action="store_true", help="20k records")
    args = parser.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 20_000)

    import confluent_kafka

    print(
        f"python {platform.python_version()}, confluent-kafka {confluent_kafka.version()} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), {os.cpu_count()} CPUs, "
        f"3 brokers, RF=3, min.insync.replicas=2, {args.records} x {args.size} B per run"
    )
    settings = ["1", "all"]
    results: dict[str, dict[str, float | None]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pykbroker-bench-repl-") as tmp,
        cluster(Path(tmp)) as specs,
    ):
        bootstrap = ",".join(f"127.0.0.1:{s.broker_port}" for s in specs)
        wait_ready(bootstrap, [f"bench-acks-{acks}" for acks in settings])
        for acks in settings:
            print(f"produce {args.records} x {args.size} B acks={acks}", file=sys.stderr)
            seconds, latencies, failed = produce(
                bootstrap, f"bench-acks-{acks}", args.records, args.size, acks
            )
            if failed:
                print(f"  ! {failed} records failed delivery", file=sys.stderr)
            results[f"acks={acks}"] = {
                "records/s": len(latencies) / seconds,
                "MB/s": len(latencies) * args.size / seconds / 1e6,
                "latency p50 ms": percentile(latencies, 0.50),
                "latency p99 ms": percentile(latencies, 0.99),
                "failed": float(failed),
            }
    print()
    header = f"{'metric':<20}" + "".join(f"{name:>14}" for name in results)
    print(header)
    print("-" * len(header))
    for metric in next(iter(results.values())):
        print(f"{metric:<20}" + "".join(f"{fmt(r[metric]):>14}" for r in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
