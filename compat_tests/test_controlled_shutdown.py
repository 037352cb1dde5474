"""Controlled shutdown (KIP-631) of a partition leader in a 3-process cluster, with a real
client (confluent-kafka / librdkafka).

An idempotent acks=all producer keeps sending to an RF=3, ``min.insync.replicas=2`` topic while
the partition's leader gets SIGTERM: the process exits 0 within the stop timeout, only after the
controller granted its shutdown (so leadership had moved to another ISR member first), the
producer sees at most a brief pause (printed, not asserted), no acknowledged record is lost, and
the restarted broker rejoins the ISR. The cluster fixture stops every process.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import LIBRDKAFKA_LOG, REFERENCE, STOP_TIMEOUT_S
from .helpers import wait_until
from .test_cluster import ProcessCluster
from .test_replication import _leader_and_isr as leader_and_isr
from .test_replication import _read_values as read_values

pytestmark = pytest.mark.skipif(REFERENCE == "tansu", reason="pykbroker's KRaft cluster only")

TOPIC = "shutdown-topic"
PRODUCE_INTERVAL_S = 0.005  # ~200 records/s offered
#: The shutdown waits for every live broker to report (by heartbeat) that it replayed the
#: leadership change: up to about two heartbeat intervals, as in Kafka. 1 s keeps that well
#: inside ``controlled.shutdown.timeout.ms`` (5 s) on a loaded machine.
OVERRIDES = {"broker.heartbeat.interval.ms": "1000"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """The 3-node cluster with :data:`OVERRIDES`; every node is stopped, and must have stopped
    cleanly when asked to."""
    made = ProcessCluster(tmp_path, overrides=OVERRIDES)
    try:
        made.start()
        yield made
    finally:
        made.stop_all()
    bad = [s for node in made.nodes.values() for s in node.stops if s.graceful and not s.clean]
    assert not bad, f"a node did not shut down cleanly: {bad}"


def _leader_and_isr(bootstrap: str) -> tuple[int, list[int]] | None:
    return leader_and_isr(bootstrap, TOPIC)


class LoadProducer:
    """Sends numbered records from a thread until stopped; remembers each acknowledgement's
    value and time (time.monotonic()) and every delivery error."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60_000,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        self.acks: list[tuple[int, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err: KafkaError | None, value: int) -> None:
        if err is None:
            self.acks.append((value, time.monotonic()))
        else:
            self.errors.append(f"{value}: {err}")

    def _run(self) -> None:
        value = 0
        while not self._stop.is_set():  # until stopped; each round sleeps
            self.producer.produce(
                TOPIC,
                value=str(value).encode(),
                on_delivery=lambda err, _msg, value=value: self._delivered(err, value),
            )
            value += 1
            self.producer.poll(0)
            time.sleep(PRODUCE_INTERVAL_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.producer.flush(90) == 0

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time without an acknowledgement between ``start`` and ``end``."""
        times = [start, *sorted(t for _, t in self.acks if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))


def test_sigterm_moves_leadership_before_the_leader_exits(cluster: ProcessCluster) -> None:
    bootstrap = cluster.bootstrap()
    client = AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG})
    client.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[
        TOPIC
    ].result(timeout=20)
    leader = wait_until(
        lambda: (r := _leader_and_isr(bootstrap)) is not None and r[1] == [1, 2, 3] and r,
        timeout=30,
        what="the topic with 3 replicas in sync",
    )[0]
    load = LoadProducer(bootstrap)
    load.start()
    try:
        wait_until(lambda: len(load.acks) >= 200, timeout=30, what="200 acknowledged records")
        stopped_at = time.monotonic()
        result = cluster.nodes[leader].stop()
        exited_at = time.monotonic()
        assert result is not None
        assert (result.returncode, result.killed) == (0, False), cluster.nodes[leader].tail()
        assert result.seconds < STOP_TIMEOUT_S
        output = cluster.nodes[leader].tail(2000)
        # The controller said go only once the leadership had moved and every live broker
        # had replayed that change: no timeout, no forced stop.
        assert "granted the controlled shutdown" in output, output
        assert "timed out waiting for the controller" not in output
        survivors = cluster.bootstrap()
        new_leader, isr = wait_until(
            lambda: _leader_and_isr(survivors), timeout=10, what="the partition's metadata"
        )
        assert new_leader not in (leader, -1)
        assert leader not in isr
        acked_before = len(load.acks)
        wait_until(
            lambda: len(load.acks) >= acked_before + 200,
            timeout=60,
            what="200 more acknowledged records after the shutdown",
        )
    finally:
        load.stop()
    pause = load.longest_pause(stopped_at, exited_at + 2)
    print(
        f"leader {leader} stopped in {result.seconds * 1000:.0f} ms; node {new_leader} leads; "
        f"longest producer pause {pause * 1000:.0f} ms; {len(load.acks)} acknowledged, "
        f"{len(load.errors)} delivery errors"
    )
    assert not load.errors, load.errors[:5]
    acknowledged = sorted(v for v, _ in load.acks)
    values = read_values(survivors, TOPIC, "shutdown-reader", len(acknowledged))
    assert len(values) == len(set(values))  # idempotent: no duplicates
    assert set(acknowledged) <= set(values)  # no acknowledged record lost
    assert values == sorted(values)  # in order

    cluster.start(leader)
    wait_until(
        lambda: (r := _leader_and_isr(cluster.bootstrap())) is not None and r[1] == [1, 2, 3],
        timeout=60,
        what="the restarted broker back in the ISR",
    )
