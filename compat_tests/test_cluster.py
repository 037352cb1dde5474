"""A 3-process KRaft cluster: ``pykbroker serve`` x 3 with Kafka's KRaft settings.

The nodes are formatted with one cluster id and started with the ``server.properties`` that
``pykbroker cluster`` writes (``process.roles=broker,controller``, ``controller.quorum.voters``,
a CONTROLLER listener, Kafka's default quorum timeouts). Checked with real clients
(confluent-kafka) and raw DescribeQuorum requests:

* the processes form one cluster: 3 voters and one leader, every node lists 3 brokers and the
  leader as controller;
* a producer and a consumer group work across the cluster (leaders and the group coordinator
  on different brokers);
* kill -9 of the active controller, repeatedly, while a client keeps creating topics: a new
  leader is elected (the election time is printed), every topic whose creation was acknowledged
  exists on every node afterwards, the killed node catches up after its restart, and a full
  graceful restart of the cluster keeps all of it.

Every process is stopped by the test that started it (``BrokerProcess``). ``--runslow`` runs
more kill rounds.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.header import encode_request_header, response_header_version
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.local_cluster import NodeSpec, prepare_cluster

from .conftest import LIBRDKAFKA_LOG, REFERENCE, BrokerProcess, new_broker
from .helpers import wait_until

pytestmark = pytest.mark.skipif(REFERENCE == "tansu", reason="pykbroker's KRaft cluster only")

DESCRIBE_QUORUM = 55
STARTUP_TIMEOUT_S = 40.0


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:  # bounded by the socket timeout
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


def describe_quorum(port: int, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """DescribeQuorum v2 to 127.0.0.1:port: the metadata partition's entry (None if
    unreachable)."""
    body = {
        "topics": [{"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]
    }
    payload = encode_request_header(DESCRIBE_QUORUM, 2, 1, "compat-cluster")
    payload += codec.encode(request_message(DESCRIBE_QUORUM), 2, body)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", _receive_exactly(sock, 4))[0]
            frame = _receive_exactly(sock, size)
    except OSError:
        return None
    _, offset = codec.decode_prefix(
        RESPONSE_HEADER, response_header_version(DESCRIBE_QUORUM, 2), frame
    )
    response = codec.decode(response_message(DESCRIBE_QUORUM), 2, frame[offset:])
    partition: dict[str, Any] = response["topics"][0]["partitions"][0]
    return partition


class ProcessCluster:
    def __init__(self, root: Path, nodes: int = 3, overrides: dict[str, str] | None = None) -> None:
        self.specs = {s.node_id: s for s in prepare_cluster(nodes, root)}
        self.nodes: dict[int, BrokerProcess] = {
            node_id: new_broker(
                spec.data_dir,
                {
                    "listeners": (
                        f"PLAINTEXT://127.0.0.1:{spec.broker_port},"
                        f"CONTROLLER://127.0.0.1:{spec.controller_port}"
                    ),
                    **(overrides or {}),
                },
                properties_file=spec.properties_file,
                startup_timeout=STARTUP_TIMEOUT_S,
                name=f"node{node_id}",
            )
            for node_id, spec in self.specs.items()
        }

    def start(self, *node_ids: int) -> None:
        """Start nodes in parallel (each waits for the quorum to register it)."""
        wanted = node_ids or tuple(self.nodes)
        with ThreadPoolExecutor(len(wanted)) as pool:
            for future in [pool.submit(self.nodes[n].start) for n in wanted]:
                future.result()

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def running(self) -> list[int]:
        return [n for n, node in self.nodes.items() if node.running]

    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.specs[n].broker_port}" for n in self.running())

    def spec(self, node_id: int) -> NodeSpec:
        return self.specs[node_id]

    def leader(self, among: list[int] | None = None) -> tuple[int, int] | None:
        """(leader id, epoch) if the running nodes' CONTROLLER listeners agree on one."""
        answers = [
            describe_quorum(self.specs[n].controller_port, 2.0) for n in (among or self.running())
        ]
        leaders = {
            (a["leader_id"], a["leader_epoch"]) for a in answers if a and not a["error_code"]
        }
        return next(iter(leaders)) if len(leaders) == 1 else None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    made = ProcessCluster(tmp_path)
    try:
        made.start()
        yield made
    finally:
        made.stop_all()
    bad = [s for node in made.nodes.values() for s in node.stops if s.graceful and not s.clean]
    assert not bad, f"a node did not shut down cleanly: {bad}"


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG})


def topics_on(port: int) -> set[str]:
    metadata = admin(f"127.0.0.1:{port}").list_topics(timeout=5)
    return set(metadata.topics)


def test_three_processes_form_one_cluster(cluster: ProcessCluster) -> None:
    leader = wait_until(cluster.leader, timeout=20, what="one raft leader")
    quorum = describe_quorum(cluster.spec(1).broker_port, 10.0)  # forwarded if node 1 follows
    assert quorum is not None
    assert quorum["error_code"] == 0
    assert quorum["leader_id"] == leader[0]
    assert sorted(v["replica_id"] for v in quorum["current_voters"]) == [1, 2, 3]
    for node_id in cluster.nodes:
        port = cluster.spec(node_id).broker_port

        def sees_all(port: int = port) -> Any:
            metadata = admin(f"127.0.0.1:{port}").list_topics(timeout=5)
            return metadata if sorted(metadata.brokers) == [1, 2, 3] else None

        metadata = wait_until(sees_all, timeout=20, what=f"3 brokers in node {node_id}'s metadata")
        assert metadata.controller_id == leader[0]
        assert {b.port for b in metadata.brokers.values()} == {
            s.broker_port for s in cluster.specs.values()
        }
        client = admin(f"127.0.0.1:{port}")  # kept alive until the future is done
        described = client.describe_cluster(request_timeout=10).result()
        assert described.controller.id == leader[0]
        assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    # Admin requests to any node reach the active controller.
    follower = next(n for n in cluster.nodes if n != leader[0])
    client = admin(f"127.0.0.1:{cluster.spec(follower).broker_port}")
    client.create_topics([NewTopic("grown", 2, 1)])["grown"].result(timeout=15)
    client.create_partitions([NewPartitions("grown", 5)])["grown"].result(timeout=15)
    for node_id in cluster.nodes:
        port = cluster.spec(node_id).broker_port

        def partitions(port: int = port) -> bool:
            metadata = admin(f"127.0.0.1:{port}").list_topics(timeout=5)
            topic = metadata.topics.get("grown")
            return topic is not None and len(topic.partitions) == 5

        wait_until(partitions, timeout=20, what=f"5 partitions of 'grown' on node {node_id}")


def test_produce_and_consume_in_a_group_across_the_cluster(cluster: ProcessCluster) -> None:
    """Partition leaders on all three brokers; the group coordinator is the broker leading the
    group's ``__consumer_offsets`` partition (FindCoordinator names it)."""
    bootstrap = cluster.bootstrap()
    client = admin(bootstrap)  # kept alive until the future is done
    client.create_topics([NewTopic("spread", 3, 1)])["spread"].result(timeout=15)
    metadata = client.list_topics(timeout=5)
    assert {p.leader for p in metadata.topics["spread"].partitions.values()} == {1, 2, 3}
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "logger": LIBRDKAFKA_LOG}
    )
    for i in range(30):
        producer.produce("spread", key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cluster-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    try:
        consumer.subscribe(["spread"])
        values: set[bytes] = set()
        deadline = time.monotonic() + 30
        while len(values) < 30 and time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.add(message.value())
        assert values == {f"v{i}".encode() for i in range(30)}
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition("spread", i) for i in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed) == 30
    finally:
        consumer.close()


class TopicCreator:
    """A client thread creating topics one by one; remembers those acknowledged."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.acknowledged: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-creator", daemon=True)

    def __enter__(self) -> TopicCreator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the topic creator did not stop"

    def _run(self) -> None:
        counter = 0
        while not self._stop.is_set():  # until the test ends it; every round is bounded
            counter += 1
            name = f"kill-test-{counter}"
            client = admin(self.cluster.bootstrap())
            futures = client.create_topics(
                [NewTopic(name, 1, 1)], request_timeout=5, operation_timeout=5
            )
            try:
                futures[name].result(timeout=15)
                self.acknowledged.append(name)
            except Exception:  # noqa: BLE001 - a failed or unknown outcome: not acknowledged
                self.failed += 1
                time.sleep(0.1)


def kill_rounds(cluster: ProcessCluster, rounds: int) -> list[float]:
    elections = []
    with TopicCreator(cluster) as creator:
        wait_until(lambda: len(creator.acknowledged) >= 2, timeout=30, what="topics created")
        for round_ in range(rounds):
            old_leader, old_epoch = wait_until(cluster.leader, timeout=30, what="a leader")
            cluster.nodes[old_leader].kill9()
            killed_at = time.monotonic()
            survivors = cluster.running()
            new_leader, new_epoch = wait_until(
                lambda survivors=survivors: cluster.leader(survivors),
                timeout=30,
                what="a new leader",
            )
            elections.append(time.monotonic() - killed_at)
            print(
                f"round {round_ + 1}: killed leader {old_leader} (epoch {old_epoch}); "
                f"node {new_leader} leads epoch {new_epoch} after {elections[-1] * 1000:.0f} ms"
            )
            assert new_leader != old_leader
            assert new_epoch > old_epoch
            acknowledged = len(creator.acknowledged)
            wait_until(
                lambda acknowledged=acknowledged: len(creator.acknowledged) > acknowledged,
                timeout=30,
                what="a topic created under the new leader",
            )
            cluster.start(old_leader)
        wait_until(lambda: len(creator.acknowledged) >= rounds + 3, timeout=30, what="topics")
    print(
        f"{len(creator.acknowledged)} topic creations acknowledged, {creator.failed} failed; "
        f"elections: " + ", ".join(f"{e * 1000:.0f} ms" for e in elections)
    )
    expected = set(creator.acknowledged)
    for node_id in cluster.nodes:
        port = cluster.spec(node_id).broker_port
        wait_until(
            lambda port=port: expected <= topics_on(port),
            timeout=30,
            what=f"every acknowledged topic on node {node_id}",
        )
    return elections


def full_restart_keeps_metadata(cluster: ProcessCluster) -> None:
    before = topics_on(cluster.spec(1).broker_port)
    assert before
    cluster.stop_all()
    cluster.start()
    wait_until(cluster.leader, timeout=30, what="a leader after the full restart")
    for node_id in cluster.nodes:
        port = cluster.spec(node_id).broker_port
        wait_until(
            lambda port=port: before <= topics_on(port),
            timeout=30,
            what=f"node {node_id} to list every topic after the restart",
        )


def test_killing_the_active_controller_keeps_every_acknowledged_topic(
    cluster: ProcessCluster,
) -> None:
    elections = kill_rounds(cluster, rounds=3)
    assert max(elections) < 20
    full_restart_keeps_metadata(cluster)


@pytest.mark.slow
def test_killing_the_active_controller_many_times(cluster: ProcessCluster) -> None:
    elections = kill_rounds(cluster, rounds=12)
    assert max(elections) < 20
    full_restart_keeps_metadata(cluster)


def _read_values(
    bootstrap: str, topic: str, isolation: str, expected: int, settle_s: float = 3.0
) -> list[bytes]:
    """Every value of ``topic`` read from the beginning with ``isolation.level``: polls until
    ``expected`` values arrived (bounded), then ``settle_s`` more to catch any extra one."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{isolation}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 40
        settle_until: float | None = None
        while time.monotonic() < deadline:  # bounded by the deadline
            if settle_until is None and len(values) >= expected:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            message = consumer.poll(0.2)
            value = message.value() if message is not None and not message.error() else None
            if value is not None:
                values.append(value)
    finally:
        consumer.close()
    return values


def test_transactions_across_the_cluster(cluster: ProcessCluster) -> None:
    """confluent-kafka's transactional producer over a topic with a partition led by each
    broker: the transaction coordinator sends WriteTxnMarkers to the other leaders, so a
    read_committed consumer sees exactly the 30 committed records (not the aborted ones), and
    the offsets sent with ``send_offsets_to_transaction`` are committed with them."""
    bootstrap = cluster.bootstrap()
    client = admin(bootstrap)  # kept alive until the future is done
    client.create_topics([NewTopic("txn-spread", 3, 1)])["txn-spread"].result(timeout=15)
    metadata = client.list_topics(timeout=5)
    assert {p.leader for p in metadata.topics["txn-spread"].partitions.values()} == {1, 2, 3}
    group = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "txn-cluster-group", "logger": LIBRDKAFKA_LOG}
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": "cluster-txn",
            "logger": LIBRDKAFKA_LOG,
        }
    )
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(30):
            producer.produce("txn-spread", key=str(i).encode(), value=f"c{i}".encode())
        producer.send_offsets_to_transaction(
            [TopicPartition("txn-spread", p, 10 + p) for p in range(3)],
            group.consumer_group_metadata(),
            30,
        )
        started = time.monotonic()
        producer.commit_transaction(30)
        print(f"commit_transaction over 3 brokers: {(time.monotonic() - started) * 1000:.0f} ms")
        producer.begin_transaction()
        for i in range(10):
            producer.produce("txn-spread", key=str(i).encode(), value=f"a{i}".encode())
        assert producer.flush(30) == 0  # written, so the abort has something to hide
        producer.abort_transaction(30)
        committed = group.committed([TopicPartition("txn-spread", p) for p in range(3)], timeout=10)
        assert sorted(tp.offset for tp in committed) == [10, 11, 12]
    finally:
        group.close()
    seen = _read_values(bootstrap, "txn-spread", "read_committed", 30)
    assert sorted(seen) == sorted(f"c{i}".encode() for i in range(30))
    everything = _read_values(bootstrap, "txn-spread", "read_uncommitted", 40)
    assert len(everything) == 40
