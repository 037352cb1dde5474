"""Partition replication with a real client (confluent-kafka / librdkafka) on a 3-process
cluster: an idempotent acks=all producer on a replication-factor-3 topic with
``min.insync.replicas=2`` keeps every acknowledged record when the partition's leader is killed
with SIGKILL, and a consumer reads them back exactly once, in order.

The fault tests (issue 8, item 5) go further: under steady load from an idempotent acks=all
producer and a consumer group, partition leaders are killed with SIGKILL and restarted, or
frozen with SIGSTOP and resumed with SIGCONT, several times (CI: 2 kills and 1 freeze;
``--runslow``: 8 of each). They print records acknowledged, lost and duplicated and each fault's
unavailability (the longest time without an acknowledgement), and check every acknowledged
record, the replicas' bytes up to the high watermark and the group's committed offsets. Every
wait is bounded; the fixtures stop every process (SIGCONT first if frozen).
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import LIBRDKAFKA_LOG
from .helpers import wait_until
from .test_cluster import ProcessCluster, cluster  # noqa: F401 - the fixture

TOPIC = "replicated"


def _leader_and_isr(bootstrap: str, topic_name: str = TOPIC) -> tuple[int, list[int]] | None:
    """Partition 0's leader and sorted ISR, once the topic's metadata has it."""
    metadata = AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG}).list_topics(
        topic_name, timeout=5
    )
    topic = metadata.topics.get(topic_name)
    if topic is None or topic.error is not None or 0 not in topic.partitions:
        return None
    partition = topic.partitions[0]
    return partition.leader, sorted(partition.isrs)


def _read_values(bootstrap: str, topic: str, group: str, expected: int) -> list[int]:
    """The integer values of ``topic`` from the beginning, until ``expected`` were read (or 60 s
    passed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    values: list[int] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(values) < expected and time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(int(message.value()))
    finally:
        consumer.close()
    return values


def _produce(producer: Producer, start: int, count: int) -> list[int]:
    """Produce values ``start..start+count`` and flush; the acknowledged ones."""
    acknowledged: list[int] = []

    def delivered(err: KafkaError | None, msg: object, value: int) -> None:
        if err is None:
            acknowledged.append(value)

    for value in range(start, start + count):
        producer.produce(
            TOPIC,
            value=str(value).encode(),
            on_delivery=lambda err, msg, value=value: delivered(err, msg, value),
        )
    assert producer.flush(90) == 0
    return acknowledged


def test_acks_all_survives_killing_the_partition_leader(
    cluster: ProcessCluster,  # noqa: F811 - the fixture
) -> None:
    bootstrap = cluster.bootstrap()
    client = AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG})
    client.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[
        TOPIC
    ].result(timeout=20)
    found = wait_until(
        lambda: (r := _leader_and_isr(bootstrap)) is not None and r[1] == [1, 2, 3] and r,
        timeout=30,
        what="the topic with 3 replicas in sync",
    )
    leader = found[0]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 90_000,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    acknowledged = _produce(producer, 0, 200)
    assert acknowledged == list(range(200))

    cluster.nodes[leader].kill9()
    killed_at = time.monotonic()
    survivors = ",".join(f"127.0.0.1:{cluster.spec(n).broker_port}" for n in cluster.running())
    new_leader = wait_until(
        lambda: (r := _leader_and_isr(survivors)) is not None and r[0] not in (leader, -1) and r,
        timeout=60,
        what="a new partition leader",
    )[0]
    print(
        f"leader {leader} killed; node {new_leader} leads after "
        f"{(time.monotonic() - killed_at) * 1000:.0f} ms"
    )
    acknowledged += _produce(producer, 200, 200)
    assert acknowledged == list(range(400))

    cluster.start(leader)
    wait_until(
        lambda: (r := _leader_and_isr(cluster.bootstrap())) is not None and r[1] == [1, 2, 3],
        timeout=60,
        what="the restarted broker back in the ISR",
    )
    values = _read_values(cluster.bootstrap(), TOPIC, "replicated-reader", 400)
    assert values == list(range(400))  # every acknowledged record once, in order


# -- process faults under load (issue 8, item 5) ------------------------------------------------
#
# A 3-node cluster whose brokers fence a silent peer after 4 s, with ``__consumer_offsets``
# replicated 3 times; a topic of 3 partitions, RF=3, ``min.insync.replicas=2``. An idempotent
# acks=all producer thread sends numbered records (value n to partition n % 3) at a steady rate
# and a consumer-group thread (subscribe, synchronous commits) consumes them, while the leader
# of one partition after another is killed with SIGKILL and restarted, or frozen with SIGSTOP
# until another broker leads and then resumed with SIGCONT. Afterwards: every acknowledged record
# is read back exactly once, in order, at the offset its acknowledgement named; every replica's
# segment bytes are identical up to the high watermark; the group never saw a committed offset go
# backwards and its final committed offsets are the partitions' ends.

FAULT_TOPIC = "faults"
FAULT_PARTITIONS = 3
FAULT_GROUP = "fault-group"
PRODUCE_RATE = 200  # records/s offered by the load producer
FAULT_OVERRIDES = {
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "1000",
}
RECOVERY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Ack:
    value: int
    partition: int
    offset: int
    at: float  # time.monotonic() when the delivery report arrived


@dataclass
class Fault:
    kind: str  # "SIGKILL" or "SIGSTOP"
    node: int
    partition: int
    at: float
    new_leader: int = -1
    recovered_at: float = 0.0


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """The 3-node cluster with :data:`FAULT_OVERRIDES`; a frozen node gets SIGCONT before the
    stop, every node is stopped."""
    made = ProcessCluster(tmp_path, overrides=FAULT_OVERRIDES)
    try:
        made.start()
        yield made
    finally:
        for node in made.nodes.values():
            if node.running:
                os.kill(node.pid, signal.SIGCONT)  # a no-op unless the test froze it
        made.stop_all()
    bad = [s for node in made.nodes.values() for s in node.stops if s.graceful and not s.clean]
    assert not bad, f"a node did not shut down cleanly: {bad}"


def _partition_states(bootstrap: str) -> dict[int, tuple[int, list[int]]]:
    """partition -> (leader, sorted ISR) of :data:`FAULT_TOPIC` ({} if not known)."""
    config = {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG}
    metadata = AdminClient(config).list_topics(FAULT_TOPIC, timeout=5)  # type: ignore[arg-type]
    topic = metadata.topics.get(FAULT_TOPIC)
    if topic is None or topic.error is not None:
        return {}
    return {p: (m.leader, sorted(m.isrs)) for p, m in topic.partitions.items()}


def _new_leader(bootstrap: str, partition: int, old: int) -> int | None:
    """The partition's leader if it is known and not ``old``."""
    state = _partition_states(bootstrap).get(partition)
    return state[0] if state is not None and state[0] not in (old, -1) else None


def _group_coordinator(client: AdminClient) -> int:
    """The node coordinating :data:`FAULT_GROUP` (once the group exists)."""

    def find() -> int | None:
        try:
            [future] = client.describe_consumer_groups([FAULT_GROUP]).values()
            described = future.result(timeout=5)
        except KafkaException:
            return None
        coordinator = described.coordinator
        return coordinator.id if coordinator is not None else None

    found: int = wait_until(find, timeout=30, what=f"the coordinator of {FAULT_GROUP}")
    return found


def _all_in_sync(bootstrap: str) -> dict[int, tuple[int, list[int]]] | None:
    states = _partition_states(bootstrap)
    complete = len(states) == FAULT_PARTITIONS and all(
        leader > 0 and isr == [1, 2, 3] for leader, isr in states.values()
    )
    return states if complete else None


class LoadProducer:
    """A thread producing value n to partition n % 3 at :data:`PRODUCE_RATE` records/s with an
    idempotent acks=all producer; ``acks`` lists the acknowledged records as reported."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "request.timeout.ms": 5_000,
                "socket.timeout.ms": 10_000,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        self.acks: list[Ack] = []
        self.errors: list[str] = []
        self.sent = 0
        self.unflushed = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-producer", daemon=True)

    def start(self) -> LoadProducer:
        self._thread.start()
        return self

    def acked(self, partition: int) -> int:
        return sum(1 for a in list(self.acks) if a.partition == partition)

    def acked_beyond(self, partition: int, count: int) -> bool:
        return self.acked(partition) >= count

    def stop(self, timeout: float = 150.0) -> None:
        """Stop producing, wait for every outstanding delivery report (flush), join."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load producer did not stop"

    def _delivered(self, value: int, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            # librdkafka reports no offset (-1) for a batch acknowledged as a duplicate of one
            # already written (an idempotent retry after a lost answer)
            offset = msg.offset()
            self.acks.append(
                Ack(
                    value,
                    value % FAULT_PARTITIONS,
                    -1 if offset is None else offset,
                    time.monotonic(),
                )
            )
        else:
            self.errors.append(f"{value}: {err}")

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():  # until stop(); each round waits at most 1/rate s
            outstanding = self.sent - len(self.acks) - len(self.errors)
            if outstanding < 20_000:
                value = self.sent
                self.producer.produce(
                    FAULT_TOPIC,
                    value=str(value).encode(),
                    partition=value % FAULT_PARTITIONS,
                    on_delivery=functools.partial(self._delivered, value),
                )
                self.sent += 1
            next_at += 1 / PRODUCE_RATE
            self.producer.poll(max(0.0, next_at - time.monotonic()))
        self.unflushed = self.producer.flush(120)


def _where(message: Message | None) -> tuple[int | None, int | None]:
    """(partition, offset) of a record, (None, None) for no message or an error event."""
    if message is None or message.error() is not None:
        return None, None
    return message.partition(), message.offset()


class GroupReader:
    """A consumer-group member (subscribe) in a thread, committing its position synchronously
    every 0.5 s and checking every 2 s that the committed offsets never went backwards."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": FAULT_GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "socket.timeout.ms": 10_000,
                "logger": LIBRDKAFKA_LOG,
            }
        )
        self.consumed: dict[int, list[int]] = {p: [] for p in range(FAULT_PARTITIONS)}
        self.floor: dict[int, int] = {}  # highest offset whose commit was acknowledged
        self.violations: list[str] = []
        self.commit_failures = 0
        self.target: dict[int, int] | None = None
        self.done = threading.Event()
        self._positions: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-reader", daemon=True)

    def start(self) -> GroupReader:
        self._thread.start()
        return self

    def finish(self, ends: dict[int, int], timeout: float) -> None:
        """Consume and commit up to ``ends`` (bounded by ``timeout``), then leave the group."""
        self.target = ends
        self.done.wait(timeout)
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the group reader did not stop"

    def _commit(self) -> None:
        """Commit the positions synchronously (one commit in flight, so an older one can never
        land after a newer one); an acknowledged commit raises the floor."""
        offsets = [TopicPartition(FAULT_TOPIC, p, o) for p, o in self._positions.items()]
        try:
            answered = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException:
            self.commit_failures += 1  # the coordinator is moving: committed again later
            return
        for tp in answered or []:
            if tp.error is None and tp.offset >= 0:
                self.floor[tp.partition] = max(self.floor.get(tp.partition, 0), tp.offset)
            elif tp.error is not None:
                self.commit_failures += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp.partition, None)  # restart from the committed offset

    def _check_committed(self) -> None:
        try:
            committed = self.consumer.committed(
                [TopicPartition(FAULT_TOPIC, p) for p in range(FAULT_PARTITIONS)], timeout=3
            )
        except KafkaException:
            return  # the coordinator is moving: asked again later
        for tp in committed:
            floor = self.floor.get(tp.partition)
            if tp.error is None and floor is not None and tp.offset < floor:
                self.violations.append(
                    f"at {time.monotonic():.1f}: partition {tp.partition}: committed offset "
                    f"{tp.offset} after {floor} had been acknowledged"
                )

    def _run(self) -> None:
        try:
            self.consumer.subscribe([FAULT_TOPIC], on_assign=self._on_assign)
            last_commit = last_check = time.monotonic()
            while not self._stop.is_set():  # until finish(); each round is bounded
                message = self.consumer.poll(0.2)
                partition, offset = _where(message)
                if partition is not None and offset is not None:
                    rewound = (
                        bool(self.consumed[partition]) and offset <= self.consumed[partition][-1]
                    )
                    if offset < self.floor.get(partition, 0) and rewound:  # once per rewind
                        self.violations.append(
                            f"partition {partition}: offset {offset} delivered again after "
                            f"{self.floor[partition]} was committed"
                        )
                    self.consumed[partition].append(offset)
                    self._positions[partition] = offset + 1
                now = time.monotonic()
                if now - last_commit >= 0.5 and self._positions:
                    last_commit = now
                    self._commit()
                if now - last_check >= 2.0:
                    last_check = now
                    self._check_committed()
                target = self.target
                if target is not None and all(
                    self.floor.get(p, 0) >= end for p, end in target.items()
                ):
                    self._check_committed()
                    self.done.set()
                    break
        finally:
            self.consumer.close()


def _read_partitions(bootstrap: str) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
    """High watermarks and every (offset, value) of every partition, read from offset 0 with a
    fresh consumer (bounded)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "fault-verifier",
            "enable.auto.commit": False,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    records: dict[int, list[tuple[int, int]]] = {p: [] for p in range(FAULT_PARTITIONS)}
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(FAULT_TOPIC, p), timeout=10)[1]
            for p in range(FAULT_PARTITIONS)
        }
        consumer.assign([TopicPartition(FAULT_TOPIC, p, 0) for p in range(FAULT_PARTITIONS)])
        deadline = time.monotonic() + 60
        position = dict.fromkeys(ends, 0)
        while any(position[p] < ends[p] for p in ends):  # bounded by the deadline
            assert time.monotonic() < deadline, f"read back only up to {position} of {ends}"
            message = consumer.poll(0.5)
            partition, offset = _where(message)
            if message is not None and partition is not None and offset is not None:
                records[partition].append((offset, int(message.value() or b"-1")))
                position[partition] = offset + 1
    finally:
        consumer.close()
    return ends, records


def _prefix_up_to(segment_bytes: bytes, offset: int) -> bytes:
    """The bytes of the v2 record batches before ``offset`` (whole batches)."""
    position = 0
    while position + 27 <= len(segment_bytes):  # one batch per round, always forward
        base_offset, length = struct.unpack_from(">qi", segment_bytes, position)
        (last_delta,) = struct.unpack_from(">i", segment_bytes, position + 23)
        if base_offset + last_delta >= offset:
            break
        position += 12 + length
    return segment_bytes[:position]


def _replica_bytes(nodes: ProcessCluster, node: int, partition: int, hw: int) -> bytes:
    folder = nodes.spec(node).data_dir / f"{FAULT_TOPIC}-{partition}"
    data = b"".join(p.read_bytes() for p in sorted(folder.glob("*.log")))
    return _prefix_up_to(data, hw)


def _gap_around(acks: list[Ack], partition: int, fault: Fault) -> float:
    """The longest time between two consecutive acknowledgements of ``partition`` spanning the
    fault's window (the fault until the producer was seen acknowledged again)."""
    times = sorted(a.at for a in acks if a.partition == partition)
    gaps = [
        later - earlier
        for earlier, later in itertools.pairwise(times)
        if later > fault.at and earlier < fault.recovered_at
    ]
    return max(gaps, default=0.0)


def run_faults(nodes: ProcessCluster, kills: int, freezes: int) -> None:
    """Create the topic, run the producer and the group across the faults, then verify."""
    bootstrap = nodes.bootstrap()
    config = {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG}
    client = AdminClient(config)  # type: ignore[arg-type]
    client.create_topics(
        [NewTopic(FAULT_TOPIC, FAULT_PARTITIONS, 3, config={"min.insync.replicas": "2"})]
    )[FAULT_TOPIC].result(timeout=20)
    wait_until(lambda: _all_in_sync(bootstrap), timeout=30, what="3 partitions, 3 replicas in sync")
    kinds = ["SIGKILL"] * kills + ["SIGSTOP"] * freezes
    order = [kinds[i] for i in sorted(range(len(kinds)), key=lambda i: (i % max(1, kills), i))]
    faults: list[Fault] = []
    producer = LoadProducer(bootstrap).start()
    group: GroupReader | None = None
    try:
        group = GroupReader(bootstrap).start()
        wait_until(lambda: len(producer.acks) >= 100, timeout=30, what="100 acknowledgements")
        for round_, kind in enumerate(order):
            partition = round_ % FAULT_PARTITIONS
            states = wait_until(
                lambda: _all_in_sync(nodes.bootstrap()), timeout=RECOVERY_TIMEOUT_S, what="ISR"
            )
            if round_ == 0:
                # The first fault hits the group's coordinator too, so the coordinator moves.
                coordinator = _group_coordinator(client)
                partition = next(
                    (p for p, (leader, _) in sorted(states.items()) if leader == coordinator),
                    partition,
                )
            node = states[partition][0]
            fault = Fault(kind, node, partition, time.monotonic())
            faults.append(fault)
            if kind == "SIGKILL":
                nodes.nodes[node].kill9()
            else:
                os.kill(nodes.nodes[node].pid, signal.SIGSTOP)
            others = ",".join(
                f"127.0.0.1:{nodes.spec(n).broker_port}" for n in nodes.running() if n != node
            )
            fault.new_leader = wait_until(
                functools.partial(_new_leader, others, partition, node),
                timeout=RECOVERY_TIMEOUT_S,
                what=f"a new leader of partition {partition} after {kind} of node {node}",
            )
            before = producer.acked(partition)
            wait_until(
                functools.partial(producer.acked_beyond, partition, before + 10),
                timeout=RECOVERY_TIMEOUT_S,
                what=f"acknowledgements on partition {partition} under node {fault.new_leader}",
            )
            fault.recovered_at = time.monotonic()
            if kind == "SIGKILL":
                nodes.start(node)
            else:
                os.kill(nodes.nodes[node].pid, signal.SIGCONT)
        wait_until(lambda: _all_in_sync(nodes.bootstrap()), timeout=RECOVERY_TIMEOUT_S, what="ISR")
        settled = len(producer.acks)
        wait_until(lambda: len(producer.acks) >= settled + 100, timeout=30, what="more acks")
    except BaseException:
        if group is not None:
            group.finish(dict.fromkeys(range(FAULT_PARTITIONS), 0), timeout=0)  # stops it
        raise
    finally:
        producer.stop()
    assert producer.unflushed == 0, f"{producer.unflushed} records never got a delivery report"

    ends, records = _read_partitions(nodes.bootstrap())
    assert group is not None
    group.finish(ends, timeout=60)

    # Every acknowledged record exactly once, in order, where its acknowledgement said.
    read_values = [v for p in records for _, v in records[p]]
    counts = collections.Counter(read_values)
    acked = {a.value for a in producer.acks}
    lost = sorted(acked - set(counts))
    duplicated = sorted(v for v, c in counts.items() if c > 1)
    print(
        f"\n{len(producer.acks)} records acknowledged of {producer.sent} sent, "
        f"{len(producer.errors)} delivery errors, lost {len(lost)}, duplicated {len(duplicated)}, "
        f"{len(set(counts) - acked)} read but not acknowledged, "
        f"{sum(1 for a in producer.acks if a.offset < 0)} acknowledged without an offset"
    )
    for fault in faults:
        gap = _gap_around(producer.acks, fault.partition, fault)
        print(
            f"at {fault.at:.1f}: {fault.kind} of node {fault.node} "
            f"(leader of partition {fault.partition}): "
            f"node {fault.new_leader} took over; no acknowledgement for {gap * 1000:.0f} ms"
        )
    print(
        f"group: {sum(len(c) for c in group.consumed.values())} records consumed, "
        f"{group.commit_failures} failed commits, committed {group.floor}, ends {ends}"
    )
    for violation in group.violations[:10]:
        print(f"group: {violation}")
    if len(group.violations) > 10:
        print(f"group: ... {len(group.violations) - 10} more")
    assert lost == []
    assert duplicated == []
    assert producer.errors == []
    for partition, rows in records.items():
        offsets = [o for o, _ in rows]
        values = [v for _, v in rows]
        assert offsets == sorted(set(offsets)), f"partition {partition}: offsets out of order"
        assert values == sorted(values), f"partition {partition}: values out of order"
        assert all(v % FAULT_PARTITIONS == partition for v in values)
    where = {(p, o): v for p, rows in records.items() for o, v in rows}
    misplaced = [
        a for a in producer.acks if a.offset >= 0 and where.get((a.partition, a.offset)) != a.value
    ]
    assert misplaced == [], f"acknowledged at another offset: {misplaced[:5]}"

    # The group: no committed offset lost, and it ends committed where the partitions end.
    assert group.done.is_set(), f"the group did not commit up to {ends}: {group.floor}"
    for partition, end in ends.items():
        assert set(group.consumed[partition]) == set(range(end)), f"partition {partition} gaps"
    checker = Consumer(
        {
            "bootstrap.servers": nodes.bootstrap(),
            "group.id": FAULT_GROUP,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    try:
        committed = checker.committed(
            [TopicPartition(FAULT_TOPIC, p) for p in range(FAULT_PARTITIONS)], timeout=10
        )
    finally:
        checker.close()
    assert {tp.partition: tp.offset for tp in committed} == ends

    # Replicas byte-identical up to the high watermark (segments read after a clean stop).
    wait_until(lambda: _all_in_sync(nodes.bootstrap()), timeout=RECOVERY_TIMEOUT_S, what="ISR")
    nodes.stop_all()
    for partition, hw in ends.items():
        copies = {n: _replica_bytes(nodes, n, partition, hw) for n in nodes.nodes}
        assert len(set(copies.values())) == 1, (
            f"partition {partition}: replicas differ below the high watermark {hw}: "
            + ", ".join(f"node {n}: {len(b)} bytes" for n, b in copies.items())
        )
        assert copies[1], f"partition {partition}: no batch below the high watermark"

    # The group coordinator follows __consumer_offsets leadership (loads on election,
    # unloads on resignation): a committed offset never reads back lower than one it
    # acknowledged.
    assert not group.violations, f"committed offsets went backwards: {group.violations[:3]}"


def test_acks_all_survives_leader_kills_and_freezes_under_load(
    fault_cluster: ProcessCluster,
) -> None:
    """CI mode: two SIGKILLs and one SIGSTOP of a partition leader under load."""
    run_faults(fault_cluster, kills=2, freezes=1)


@pytest.mark.slow
def test_acks_all_survives_many_leader_kills_and_freezes(fault_cluster: ProcessCluster) -> None:
    """Long mode (``--runslow``): eight SIGKILLs and eight SIGSTOPs."""
    run_faults(fault_cluster, kills=8, freezes=8)
