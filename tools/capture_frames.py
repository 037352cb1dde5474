"""Record the request frames real Kafka clients send, as golden fixtures for the codec tests.

    python tools/capture_frames.py            # writes tests/protocol/golden/*.json

A recording TCP proxy on 127.0.0.1 sits between a client and an in-process pykbroker
(``pykbroker.testing.serve_in_thread``). The broker advertises the proxy's address, so every
connection a client opens (bootstrap, partition leader, group coordinator) goes through it.
Each complete request frame (4-byte size included) is recorded with the client that sent it.
Then confluent-kafka (librdkafka) and kafka-python, each at the newest API versions it
negotiates, produce, consume with a group (JoinGroup/SyncGroup/OffsetCommit...) and run admin
calls. The first frame of each (API key, version) per client is stored as hex:

    {"client": "confluent-kafka", "client_version": "2.16.1 (librdkafka 2.16.1)",
     "api_key": 0, "api": "Produce", "version": 13, "hex": "000000..."}

tests/protocol/test_golden.py decodes every stored frame, checks the values the scenarios
below put in (client ids, topics, group ids, acks, ...) and re-encodes them byte for byte.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pykbroker.api.protocol.registry import api_name  # noqa: E402
from pykbroker.testing import serve_in_thread  # noqa: E402

GOLDEN = ROOT / "tests" / "protocol" / "golden"

#: Names the scenarios use; test_golden.py asserts them in the decoded frames.
TOPIC = "golden-topic"
ADMIN_TOPIC = "golden-admin-topic"
GROUP = "golden-group"
CLIENT_IDS = {"confluent-kafka": "golden-rdkafka", "kafka-python": "golden-kafka-python"}


class RecordingProxy:
    """Forwards 127.0.0.1:``port`` to the broker and records each client's request frames."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.client = "unknown"
        self.frames: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            try:
                assert self.upstream is not None
                upstream = socket.create_connection(self.upstream)
            except OSError:  # a client still reconnecting after its scenario's broker stopped
                _close(downstream)
                continue
            threading.Thread(
                target=self._requests, args=(downstream, upstream), daemon=True
            ).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream), daemon=True).start()

    def _requests(self, source: socket.socket, target: socket.socket) -> None:
        """Client -> broker: forward bytes unchanged, recording every complete frame."""
        buffer = b""
        try:
            while data := source.recv(65536):
                target.sendall(data)
                buffer += data
                while len(buffer) >= 4:
                    size = struct.unpack_from(">i", buffer)[0]
                    if len(buffer) < 4 + size:
                        break
                    with self._lock:
                        self.frames.append((self.client, buffer[: 4 + size]))
                    buffer = buffer[4 + size :]
        except OSError:
            pass
        finally:
            _close(source, target)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, target)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def _optional(call: Callable[[], object]) -> None:
    """An admin call a client version may lack or route to an API pykbroker does not serve."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported, the capture goes on
        print(f"skipped: {exc!r}", file=sys.stderr)


def confluent_kafka_scenario(bootstrap: str) -> str:
    """Admin calls, an idempotent producer (acks=all) and a group consumer, via librdkafka."""
    import confluent_kafka
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        NewPartitions,
        NewTopic,
    )

    base: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_IDS["confluent-kafka"],
    }
    admin = AdminClient(base)
    for future in admin.create_topics([NewTopic(ADMIN_TOPIC, 2, 1)]).values():
        future.result(timeout=30)
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        future.result(timeout=30)
    admin.list_topics(timeout=30)
    admin.describe_cluster().result(timeout=30)
    for future in admin.create_partitions([NewPartitions(ADMIN_TOPIC, 3)]).values():
        future.result(timeout=30)

    producer = Producer({**base, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
    for i in range(3):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            **base,
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
        }
    )
    consumer.subscribe([TOPIC])
    got = 0
    deadline = time.monotonic() + 60
    while got < 3 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            got += 1
    assert got == 3, f"consumed {got} of 3"
    consumer.commit(asynchronous=False)
    consumer.close()

    admin.list_consumer_groups().result(timeout=30)
    for future in admin.describe_consumer_groups([GROUP]).values():
        future.result(timeout=30)
    for future in admin.delete_topics([ADMIN_TOPIC]).values():
        future.result(timeout=30)
    return f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"


def kafka_python_scenario(bootstrap: str) -> str:
    """The same with kafka-python's newest protocol versions."""
    import kafka
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewPartitions, NewTopic

    client_id = CLIENT_IDS["kafka-python"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id)
    admin.create_topics([NewTopic(ADMIN_TOPIC, 2, 1)])
    admin.list_topics()
    _optional(admin.describe_cluster)
    _optional(lambda: admin.create_partitions({ADMIN_TOPIC: NewPartitions(3)}))

    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all")
    for i in range(3):
        producer.send(TOPIC, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush(30)
    producer.close()

    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=GROUP + "-kp",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got = 0
    deadline = time.monotonic() + 60
    while got < 3 and time.monotonic() < deadline:
        got += sum(len(v) for v in consumer.poll(timeout_ms=1000).values())
    assert got >= 3, f"consumed {got}"
    consumer.commit()
    consumer.close()

    admin.list_groups()
    admin.describe_groups([GROUP + "-kp"])
    admin.list_group_offsets(GROUP + "-kp")
    _optional(lambda: admin.describe_producers([TopicPartition(TOPIC, 0)]))
    _optional(admin.describe_metadata_quorum)
    admin.delete_topics([ADMIN_TOPIC])
    admin.close()
    return str(kafka.__version__)


SCENARIOS: dict[str, Callable[[str], str]] = {
    "confluent-kafka": confluent_kafka_scenario,
    "kafka-python": kafka_python_scenario,
}


def capture() -> dict[str, list[dict[str, Any]]]:
    proxy = RecordingProxy()
    proxy.start()
    out: dict[str, list[dict[str, Any]]] = {}
    for client, scenario in SCENARIOS.items():
        # A fresh broker per client, so each client creates its own topics.
        with serve_in_thread(
            advertised_listeners=f"PLAINTEXT://127.0.0.1:{proxy.port}", num_partitions=1
        ) as broker:
            bound = broker.bound[0]  # the real port (bootstrap_servers is the proxy's)
            proxy.upstream = (bound.host or "127.0.0.1", bound.port)
            proxy.client = client
            client_version = scenario(f"127.0.0.1:{proxy.port}")
            time.sleep(0.5)  # let the last frames through the proxy
            proxy.client = "done"
        seen: set[tuple[int, int]] = set()
        cases = out.setdefault(client, [])
        for who, frame in list(proxy.frames):
            if who != client:
                continue
            api_key, version = struct.unpack_from(">hh", frame, 4)
            if (api_key, version) in seen:
                continue
            seen.add((api_key, version))
            cases.append(
                {
                    "client": client,
                    "client_version": client_version,
                    "api_key": api_key,
                    "api": api_name(api_key),
                    "version": version,
                    "hex": frame.hex(),
                }
            )
        cases.sort(key=lambda c: (c["api_key"], c["version"]))
    proxy.listener.close()
    return out


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for client, cases in capture().items():
        path = GOLDEN / f"{client.replace('-', '_')}.json"
        path.write_text(json.dumps(cases, indent=1) + "\n")
        apis = ", ".join(f"{c['api']} v{c['version']}" for c in cases)
        print(f"{path.relative_to(ROOT)}: {len(cases)} frames: {apis}")


if __name__ == "__main__":
    main()
