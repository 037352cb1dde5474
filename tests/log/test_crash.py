"""Crash safety of a broker process: SIGKILL at random points during acks=all produce.

A real ``python -m pykbroker serve`` process on 127.0.0.1 is fed by confluent-kafka
(acks=all) and killed with SIGKILL at random moments, then restarted on the same log
dir, several times. Afterwards every acknowledged record must be readable at the offset
its acknowledgement named (read through the broker by a consumer that checks CRCs), and
every batch in every segment file must pass its CRC-32C with no bytes left over.

The topic is in strict mode (``flush.messages=1``: acknowledge only what was fsynced,
group-committed); SIGKILL keeps the page cache, so the test proves recovery (torn
tails, index rebuilds, recovery point, checkpoints), not the fsync itself.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pykbroker.log.record_batch import AppendOrigin, iter_batch_headers, validate_batches

confluent_kafka = pytest.importorskip("confluent_kafka")
confluent_admin = pytest.importorskip("confluent_kafka.admin")
AdminClient = confluent_admin.AdminClient
NewTopic = confluent_admin.NewTopic

TOPIC = "crash"
STARTED = re.compile(r"pykbroker started .* listening on PLAINTEXT://127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 30


class BrokerProcess:
    """One ``pykbroker serve`` process over ``log_dir``; stopped by the test, always."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.process: subprocess.Popen[str] | None = None
        self.drainer: threading.Thread | None = None
        self.lines: list[str] = []

    def start(self) -> str:
        command = [
            sys.executable,
            "-m",
            "pykbroker",
            "serve",
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            f"log.dirs={self.log_dir}",
            "--override",
            "log.flush.interval.messages=1",
            "--override",
            "log.segment.bytes=65536",
            "--override",
            "log.index.interval.bytes=1024",
        ]
        process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.process = process
        port: list[str] = []
        found = threading.Event()

        def drain() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.lines.append(line)
                match = STARTED.search(line)
                if match and not port:
                    port.append(match.group(1))
                    found.set()
            found.set()

        self.drainer = threading.Thread(target=drain, daemon=True)
        self.drainer.start()
        if not found.wait(START_TIMEOUT_S) or not port:
            self.kill()
            raise AssertionError("broker did not start:\n" + "".join(self.lines[-30:]))
        return f"127.0.0.1:{port[0]}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL if it hangs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self._reap()

    def _reap(self) -> None:
        if self.process is None:
            return
        self.process.wait(10)
        if self.drainer is not None:
            self.drainer.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data")
    try:
        yield process
    finally:
        process.kill()


def create_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = NewTopic(
        TOPIC,
        num_partitions=1,
        replication_factor=1,
        config={"flush.messages": "1", "segment.bytes": "65536"},
    )
    admin.create_topics([topic])[TOPIC].result(timeout=15)


def produce_until_killed(
    bootstrap: str, broker: BrokerProcess, rng: random.Random, round_no: int
) -> dict[int, bytes]:
    """Produce from a thread while the broker is SIGKILLed at a random moment."""
    acked: dict[int, bytes] = {}
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": rng.choice([0, 2, 10]),
            "message.timeout.ms": 4000,
            "enable.idempotence": False,
            "reconnect.backoff.max.ms": 100,
            "log_level": 0,
        }
    )

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            acked[msg.offset()] = msg.value()  # type: ignore[attr-defined]

    stop = threading.Event()
    payload_rng = random.Random(rng.random())

    def produce() -> None:
        i = 0
        while not stop.is_set():
            value = f"{round_no}:{i}:".encode() + b"x" * payload_rng.randrange(0, 3000)
            try:
                producer.produce(TOPIC, value=value, partition=0, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.01)
                continue
            i += 1
            producer.poll(0)
            if i % 50 == 0:
                time.sleep(0.001)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not acked and time.monotonic() < deadline:  # make sure some writes land
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.0))
    broker.kill()  # SIGKILL, mid-stream
    stop.set()
    thread.join(10)
    producer.purge()
    producer.flush(5)
    assert acked, "no record was acknowledged before the kill"
    return acked


def read_everything(bootstrap: str) -> dict[int, bytes]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "crash-verifier",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "check.crcs": True,
            "log_level": 0,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, 0)])
    found: dict[int, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    return found
                raise AssertionError(f"consumer error: {msg.error()}")
            assert msg.offset() not in found
            found[msg.offset()] = msg.value()
        raise AssertionError("reading the log back timed out")
    finally:
        consumer.close()


def check_segment_files(partition_dir: Path) -> int:
    """Every batch of every segment passes its CRC, offsets increase; returns batches."""
    batches = 0
    next_offset = 0
    for segment in sorted(partition_dir.glob("*.log")):
        data = segment.read_bytes()
        validate_batches(data, 1 << 30, origin=AppendOrigin.REPLICATION)  # CRC, no leftovers
        for _, header in iter_batch_headers(data):
            assert header.base_offset >= next_offset
            next_offset = header.next_offset
            batches += 1
    return batches


def run_crash_rounds(broker: BrokerProcess, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    acked: dict[int, bytes] = {}
    try:
        for round_no in range(kills):
            bootstrap = broker.start()
            if round_no == 0:
                create_topic(bootstrap)
            # a later round reuses an offset only if it was never acknowledged
            acked.update(produce_until_killed(bootstrap, broker, rng, round_no))
        bootstrap = broker.start()
        found = read_everything(bootstrap)
        broker.stop()
    except BaseException:
        sys.stderr.write(f"crash test seed {seed}; broker log tail:\n")
        sys.stderr.write("".join(broker.lines[-40:]))
        raise
    missing = [o for o, v in acked.items() if found.get(o) != v]
    assert not missing, f"seed {seed}: {len(missing)} acknowledged records lost: {missing[:10]}"
    assert check_segment_files(broker.log_dir / f"{TOPIC}-0") > 0


def test_sigkill_during_acks_all_produce_loses_no_acknowledged_record(
    broker: BrokerProcess,
) -> None:
    run_crash_rounds(broker, kills=10, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_sigkill_soak_many_kills(broker: BrokerProcess) -> None:
    run_crash_rounds(broker, kills=40, seed=random.randrange(1 << 30))
