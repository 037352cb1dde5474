"""KIP-853 with real processes: a dynamic quorum of ``pykbroker serve`` nodes.

Three nodes are formatted with ``pykbroker format --initial-controllers
1@host:port:dirId,...`` and configured with ``controller.quorum.bootstrap.servers`` (no
``controller.quorum.voters``), as Kafka 4.1's quick start does. Checked with confluent-kafka and
raw requests: DescribeQuorum v2 lists the 3 voters with their directory ids and endpoints; a
producer/consumer round trip works; kill -9 of the active controller elects a new one; a 4th
controller formatted with ``--no-initial-controllers`` catches up as an observer and an
AddRaftVoter request makes it a voter (DescribeQuorum shows 4). Every process is stopped by the
test that started it.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.header import encode_request_header, response_header_version
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.local_cluster import free_port
from pykbroker.server.storage import kafka_uuid, kafka_uuid_string, read_meta_properties

from .conftest import LIBRDKAFKA_LOG, REFERENCE, BrokerProcess, new_broker
from .helpers import wait_until
from .test_cluster import STARTUP_TIMEOUT_S, _receive_exactly, describe_quorum

pytestmark = pytest.mark.skipif(REFERENCE == "tansu", reason="pykbroker's KRaft cluster only")

ROOT = Path(__file__).resolve().parent.parent
ADD_RAFT_VOTER = 80
CLUSTER_ID = "dYnAmIcQuOrUmCoMpAt00w"


def raw_request(port: int, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
    """One request to 127.0.0.1:port, its decoded response."""
    payload = encode_request_header(api_key, version, 7, "compat-dynamic-quorum")
    payload += codec.encode(request_message(api_key), version, body)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        frame = _receive_exactly(sock, struct.unpack(">i", _receive_exactly(sock, 4))[0])
    _, offset = codec.decode_prefix(
        RESPONSE_HEADER, response_header_version(api_key, version), frame
    )
    return codec.decode(response_message(api_key), version, frame[offset:])


class Node:
    """One node's ports, folder, properties and process."""

    def __init__(self, root: Path, node_id: int, bootstrap: str) -> None:
        self.node_id = node_id
        self.broker_port = free_port()
        self.controller_port = free_port()
        self.folder = root / f"node-{node_id}"
        self.folder.mkdir(parents=True)
        self.data_dir = self.folder / "data"
        self.bootstrap = bootstrap
        self.properties = self.folder / "server.properties"
        self.process: BrokerProcess | None = None

    @property
    def listeners(self) -> str:
        return (
            f"PLAINTEXT://127.0.0.1:{self.broker_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}"
        )

    def write_properties(self, bootstrap: str) -> None:
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.bootstrap.servers={bootstrap}",
                    f"listeners={self.listeners}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "offsets.topic.replication.factor=1",
                    "",
                ]
            )
        )

    def format(self, *flags: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pykbroker",
                "format",
                str(self.properties),
                "--cluster-id",
                CLUSTER_ID,
                *flags,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    @property
    def directory_id(self) -> str:
        return read_meta_properties(self.data_dir)["directory.id"]

    def start(self) -> None:
        if self.process is None:
            self.process = new_broker(
                self.data_dir,
                {"listeners": self.listeners},
                properties_file=self.properties,
                startup_timeout=STARTUP_TIMEOUT_S,
                name=f"node{self.node_id}",
            )
        self.process.start()


def quorum(nodes: list[Node]) -> dict[str, Any] | None:
    """The DescribeQuorum answer of the leader the running nodes agree on."""
    answers = [
        describe_quorum(n.controller_port, 2.0)
        for n in nodes
        if n.process is not None and n.process.running
    ]
    good = [a for a in answers if a and not a["error_code"]]
    leaders = {(a["leader_id"], a["leader_epoch"]) for a in good}
    return good[0] if len(leaders) == 1 and good else None


def test_dynamic_quorum_with_processes(tmp_path: Path) -> None:
    nodes = {n: Node(tmp_path, n, "") for n in (1, 2, 3, 4)}
    bootstrap = ",".join(f"127.0.0.1:{nodes[n].controller_port}" for n in (1, 2, 3))
    directories = {n: kafka_uuid_string(uuid.uuid4()) for n in (1, 2, 3)}
    initial = ",".join(
        f"{n}@127.0.0.1:{nodes[n].controller_port}:{directories[n]}" for n in (1, 2, 3)
    )
    for node in nodes.values():
        node.write_properties(bootstrap)
    for n in (1, 2, 3):
        assert "bootstrap checkpoint" in nodes[n].format("--initial-controllers", initial)
        assert nodes[n].directory_id == directories[n]
    nodes[4].format("--no-initial-controllers")
    try:
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(nodes[n].start) for n in (1, 2, 3)]:
                future.result()
        running = [nodes[n] for n in (1, 2, 3)]
        described = wait_until(lambda: quorum(running), timeout=30, what="one quorum leader")
        voters = {v["replica_id"]: v["replica_directory_id"] for v in described["current_voters"]}
        assert voters == {n: kafka_uuid(directories[n]) for n in (1, 2, 3)}

        # A producer/consumer round trip through the cluster.
        brokers = ",".join(f"127.0.0.1:{n.broker_port}" for n in running)
        admin = AdminClient({"bootstrap.servers": brokers, "logger": LIBRDKAFKA_LOG})
        futures = admin.create_topics([NewTopic("dyn", num_partitions=3, replication_factor=3)])
        futures["dyn"].result(30)
        producer = Producer({"bootstrap.servers": brokers, "logger": LIBRDKAFKA_LOG})
        for i in range(10):
            producer.produce("dyn", value=f"m{i}".encode(), key=str(i).encode())
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": "dyn-group",
                "auto.offset.reset": "earliest",
                "logger": LIBRDKAFKA_LOG,
            }
        )
        try:
            consumer.subscribe(["dyn"])
            seen: set[bytes] = set()
            deadline = time.monotonic() + 40
            while len(seen) < 10 and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    seen.add(message.value())
            assert seen == {f"m{i}".encode() for i in range(10)}
        finally:
            consumer.close()

        # kill -9 of the active controller: another voter is elected.
        old_leader, old_epoch = described["leader_id"], described["leader_epoch"]
        killed = nodes[old_leader]
        assert killed.process is not None
        killed.process.kill9()
        survivors = [n for n in running if n is not killed]
        after = wait_until(
            lambda: (
                (q := quorum(survivors)) is not None
                and q["leader_id"] != old_leader
                and q["leader_epoch"] > old_epoch
                and q
            ),
            timeout=30,
            what="a new leader after kill -9",
        )
        killed.start()

        # A 4th controller (--no-initial-controllers) catches up as an observer, then joins.
        nodes[4].start()
        everyone = list(nodes.values())

        def caught_up() -> dict[str, Any] | None:
            q = quorum(everyone)
            if q is None:
                return None
            observers = {o["replica_id"]: o["log_end_offset"] for o in q["observers"]}
            return q if observers.get(4, -1) >= q["high_watermark"] > 0 else None

        wait_until(caught_up, timeout=30, what="node 4 caught up as an observer")
        directory_4 = kafka_uuid(nodes[4].directory_id)

        def add() -> dict[str, Any] | None:
            q = quorum(everyone)
            if q is None:
                return None
            leader = nodes[q["leader_id"]]
            answer = raw_request(
                leader.controller_port,
                ADD_RAFT_VOTER,
                0,
                {
                    "cluster_id": CLUSTER_ID,
                    "timeout_ms": 20_000,
                    "voter_id": 4,
                    "voter_directory_id": directory_4,
                    "listeners": [
                        {
                            "name": "CONTROLLER",
                            "host": "127.0.0.1",
                            "port": nodes[4].controller_port,
                        }
                    ],
                },
            )
            return answer if answer["error_code"] == 0 else None

        wait_until(add, timeout=40, what="AddRaftVoter of node 4")
        final = wait_until(
            lambda: (q := quorum(everyone)) is not None and len(q["current_voters"]) == 4 and q,
            timeout=20,
            what="DescribeQuorum with 4 voters",
        )
        assert {v["replica_id"] for v in final["current_voters"]} == {1, 2, 3, 4}
        assert after["leader_id"] != old_leader
    finally:
        for node in nodes.values():
            if node.process is not None:
                node.process.stop()
