"""Consumer-group timings against a pykbroker process, with librdkafka and kafka-python.

    python benchmarks/bench_groups.py                  # Kafka's defaults, 3 runs each
    python benchmarks/bench_groups.py --initial-delay-ms 0 --repeat 5
    python benchmarks/bench_groups.py --quick          # one run each

Figures (medians, min and max over the runs, in seconds):

* subscribe() to first record for a fresh group: a new group id, one consumer, a topic that
  already has records; classic groups wait ``group.initial.rebalance.delay.ms`` (Kafka's
  default 3000 ms) before the first generation; KIP-848 groups (``group.protocol=consumer``)
  have no such delay. Goal: the delay plus 0.5 s.
* settle after a member leaves: two members share a topic; one closes (LeaveGroup, or a
  ConsumerGroupHeartbeat with epoch -1); the time until the other owns every partition.
* settle after a member dies: as above, but the member's process is killed (kill -9); the
  group notices when its session (``session.timeout.ms``, 6000 ms here) runs out. Goal: the
  session timeout plus 1 s. (Not measured for KIP-848 groups: their session is the broker's
  ``group.consumer.session.timeout.ms``, 45 s by default.)

The broker is started here (``python -m pykbroker serve`` on 127.0.0.1, a temporary data
dir) and stopped here, as every member process. Not a test: it prints a table and exits 0
unless the broker could not be started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
PARTITIONS = 4
STEP_TIMEOUT_S = 90.0  # no single measurement may take longer
LISTENING = re.compile(r"listening on PLAINTEXT://127\.0\.0\.1:(\d+)")


# -- the broker -------------------------------------------------------------------------------


class Broker:
    """``python -m pykbroker serve``; ``stop()`` is SIGTERM, 10 s grace, then SIGKILL."""

    def __init__(self, scratch: Path, initial_delay_ms: int) -> None:
        self.log_path = scratch / "broker.log"
        self._log = self.log_path.open("w")
        command = [
            sys.executable,
            "-m",
            "pykbroker",
            "serve",
            "--override",
            f"listeners=PLAINTEXT://{HOST}:0",
            "--override",
            f"log.dirs={scratch / 'data'}",
            "--override",
            f"group.initial.rebalance.delay.ms={initial_delay_ms}",
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=scratch,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        found: list[int] = []
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self._log.write(line)
                match = LISTENING.search(line)
                if match and "pykbroker started" in line and not ready.is_set():
                    found.append(int(match.group(1)))
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.stop()
            raise SystemExit(f"pykbroker did not start; see {self.log_path}")
        return found[0]

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- topics -----------------------------------------------------------------------------------


def new_topic(bootstrap: str, records_per_partition: int) -> str:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 0})
    for partition in range(PARTITIONS):
        for i in range(records_per_partition):
            producer.produce(topic, value=b"%d" % i, partition=partition)
    if producer.flush(30) != 0:
        raise RuntimeError("records not delivered")
    return topic


# -- consumers: in-process (threads) and killable (subprocesses) ------------------------------


def librdkafka_conf(bootstrap: str, group: str, protocol: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "log_level": 0,
    }
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update(
            {
                "partition.assignment.strategy": "range",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            }
        )
    return conf


def kafka_python_consumer(bootstrap: str, group: str, topic: str | None = None) -> Any:
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    topics = (topic,) if topic else ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return KafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            partition_assignment_strategy=[RangePartitionAssignor],
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            request_timeout_ms=10_000,
        )


@dataclass
class Member:
    """A consumer polling in a thread, publishing the partitions it owns."""

    client: str  # "librdkafka" | "kafka-python"
    protocol: str  # "classic" | "consumer"
    bootstrap: str
    group: str
    topic: str
    owned: frozenset[int] = frozenset()
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Member:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(30)

    def _run(self) -> None:
        if self.client == "librdkafka":
            from confluent_kafka import Consumer

            c = Consumer(librdkafka_conf(self.bootstrap, self.group, self.protocol))
            c.subscribe([self.topic])
            try:
                while not self.stop_event.is_set():
                    c.poll(0.05)
                    self.owned = frozenset(tp.partition for tp in c.assignment())
            finally:
                c.close()
        else:
            k = kafka_python_consumer(self.bootstrap, self.group, self.topic)
            try:
                while not self.stop_event.is_set():
                    k.poll(timeout_ms=50)
                    self.owned = frozenset(tp.partition for tp in k.assignment())
            finally:
                k.close()


KILLABLE = {
    "librdkafka": """
import sys, json
from confluent_kafka import Consumer
conf = json.loads(sys.argv[1])
c = Consumer(conf)
c.subscribe([sys.argv[2]])
while True:
    c.poll(0.1)
""",
    "kafka-python": """
import sys, json, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[3])
from benchmarks.bench_groups import kafka_python_consumer
conf = json.loads(sys.argv[1])
k = kafka_python_consumer(conf["bootstrap.servers"], conf["group.id"], sys.argv[2])
while True:
    k.poll(timeout_ms=100)
""",
}


@contextlib.contextmanager
def killable_member(client: str, bootstrap: str, group: str, topic: str) -> Iterator[Any]:
    conf = librdkafka_conf(bootstrap, group, "classic")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE[client], json.dumps(conf), topic, str(ROOT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT_S) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - t0


# -- the measurements -------------------------------------------------------------------------


def first_record(bootstrap: str, client: str, protocol: str) -> float:
    """subscribe() to the first record, for a new group on a topic with records."""
    topic = new_topic(bootstrap, 5)
    group = f"first-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + STEP_TIMEOUT_S
    if client == "librdkafka":
        from confluent_kafka import Consumer

        c = Consumer(librdkafka_conf(bootstrap, group, protocol))
        try:
            t0 = time.monotonic()
            c.subscribe([topic])
            while time.monotonic() < deadline:
                m = c.poll(0.01)
                if m is not None and m.error() is None:
                    return time.monotonic() - t0
        finally:
            c.close()
    else:
        k = kafka_python_consumer(bootstrap, group)
        try:
            t0 = time.monotonic()
            k.subscribe([topic])
            while time.monotonic() < deadline:
                if k.poll(timeout_ms=10, max_records=1):
                    return time.monotonic() - t0
        finally:
            k.close()
    raise TimeoutError("no record")


def settle_after_leave(bootstrap: str, client: str, protocol: str) -> float:
    topic = new_topic(bootstrap, 1)
    group = f"leave-{uuid.uuid4().hex[:8]}"
    stays = Member(client, protocol, bootstrap, group, topic).start()
    goes = Member(client, protocol, bootstrap, group, topic).start()
    everything = frozenset(range(PARTITIONS))
    try:
        wait_for(
            lambda: bool(stays.owned and goes.owned and stays.owned | goes.owned == everything),
            "the two members to share the topic",
        )
        t0 = time.monotonic()
        goes.stop()
        wait_for(lambda: stays.owned == everything, "the member left to own everything")
        return time.monotonic() - t0
    finally:
        goes.stop()
        stays.stop()


def settle_after_kill(bootstrap: str, client: str) -> float:
    topic = new_topic(bootstrap, 1)
    group = f"kill-{uuid.uuid4().hex[:8]}"
    everything = frozenset(range(PARTITIONS))
    with killable_member(client, bootstrap, group, topic) as doomed:
        stays = Member(client, "classic", bootstrap, group, topic).start()
        try:
            # The survivor owning only part of the topic means the other process has the rest.
            wait_for(
                lambda: bool(stays.owned) and stays.owned != everything,
                "the two members to share the topic",
            )
            t0 = time.monotonic()
            doomed.send_signal(signal.SIGKILL)
            wait_for(lambda: stays.owned == everything, "the survivor to own everything")
            return time.monotonic() - t0
        finally:
            stays.stop()


@dataclass
class Row:
    measure: str
    client: str
    goal_s: float | None
    runs: list[float] = field(default_factory=list)
    error: str = ""


def run_rows(bootstrap: str, initial_delay_ms: int, repeat: int, settle_repeat: int) -> list[Row]:
    delay = initial_delay_ms / 1000
    session = SESSION_TIMEOUT_MS / 1000
    plan: list[tuple[Row, Callable[[], float], int]] = [
        (
            Row("subscribe -> first record (classic)", "librdkafka", delay + 0.5),
            lambda: first_record(bootstrap, "librdkafka", "classic"),
            repeat,
        ),
        (
            Row("subscribe -> first record (classic)", "kafka-python", delay + 0.5),
            lambda: first_record(bootstrap, "kafka-python", "classic"),
            repeat,
        ),
        (
            Row("subscribe -> first record (KIP-848)", "librdkafka", 0.5),
            lambda: first_record(bootstrap, "librdkafka", "consumer"),
            repeat,
        ),
        (
            Row("settle after a leave (classic)", "librdkafka", session + 1),
            lambda: settle_after_leave(bootstrap, "librdkafka", "classic"),
            settle_repeat,
        ),
        (
            Row("settle after a leave (classic)", "kafka-python", session + 1),
            lambda: settle_after_leave(bootstrap, "kafka-python", "classic"),
            settle_repeat,
        ),
        (
            Row("settle after a leave (KIP-848)", "librdkafka", None),
            lambda: settle_after_leave(bootstrap, "librdkafka", "consumer"),
            settle_repeat,
        ),
        (
            Row("settle after kill -9 (classic)", "librdkafka", session + 1),
            lambda: settle_after_kill(bootstrap, "librdkafka"),
            settle_repeat,
        ),
        (
            Row("settle after kill -9 (classic)", "kafka-python", session + 1),
            lambda: settle_after_kill(bootstrap, "kafka-python"),
            settle_repeat,
        ),
    ]
    rows = []
    for row, measure, times in plan:
        print(f"  {row.measure} / {row.client} ...", file=sys.stderr, flush=True)
        for _ in range(times):
            try:
                row.runs.append(measure())
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row.error = f"{type(exc).__name__}: {exc}"
                break
        rows.append(row)
    return rows


def print_table(rows: list[Row], initial_delay_ms: int) -> None:
    print()
    print(
        f"consumer groups on pykbroker ({PARTITIONS} partitions, "
        f"group.initial.rebalance.delay.ms={initial_delay_ms}, "
        f"session.timeout.ms={SESSION_TIMEOUT_MS}, heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}; "
        "KIP-848: broker defaults, heartbeat interval 5 s)"
    )
    header = f"| {'measure':<38} | {'client':<12} | median s | min s | max s | goal s | met |"
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        goal = f"{row.goal_s:.1f}" if row.goal_s is not None else "-"
        if not row.runs:
            print(f"| {row.measure:<38} | {row.client:<12} | {'failed: ' + row.error} |")
            continue
        median = statistics.median(row.runs)
        met = "-" if row.goal_s is None else ("yes" if median <= row.goal_s else "no")
        print(
            f"| {row.measure:<38} | {row.client:<12} | {median:8.2f} | {min(row.runs):5.2f} "
            f"| {max(row.runs):5.2f} | {goal:>6} | {met:>3} |"
        )
        if row.error:
            print(f"|   (then {row.error})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--initial-delay-ms", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each first-record measure")
    parser.add_argument("--settle-repeat", type=int, default=2, help="runs of each settle measure")
    parser.add_argument("--quick", action="store_true", help="one run of everything")
    args = parser.parse_args()
    repeat, settle_repeat = (1, 1) if args.quick else (args.repeat, args.settle_repeat)
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as scratch:
        broker = Broker(Path(scratch), args.initial_delay_ms)
        try:
            rows = run_rows(broker.bootstrap, args.initial_delay_ms, repeat, settle_repeat)
        finally:
            broker.stop()
    print_table(rows, args.initial_delay_ms)


if __name__ == "__main__":
    main()
