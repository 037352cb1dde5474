"""``pykbroker.testing.serve_in_thread``: an embedded broker for plain (non-trio) tests."""

from __future__ import annotations

import socket
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from pykbroker.testing import serve_in_thread


def _broker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pykbroker" and t.is_alive()]


def _port_is_free(port: int) -> bool:
    """Whether a new listener could bind ``port`` (SO_REUSEADDR: TIME_WAIT leftovers of closed
    connections do not count, a listening socket does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_serve_in_thread_serves_confluent_kafka_and_stops_after_the_block() -> None:
    before = _broker_threads()
    with serve_in_thread(num_partitions=2) as broker:
        host, port_text = broker.bootstrap_servers.rsplit(":", 1)
        port = int(port_text)
        assert host == "127.0.0.1"
        assert 1024 <= port <= 65535
        assert not _port_is_free(port)  # bound by the broker, a port the OS chose
        assert len(_broker_threads()) == len(before) + 1
        assert not broker.stopped.is_set()

        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": "all"})
        for i in range(10):
            producer.produce("embedded", key=b"k%d" % i, value=b"v%d" % i)
        assert producer.flush(20) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": "embedded-group",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe(["embedded"])
            got: dict[bytes, bytes] = {}
            deadline = time.monotonic() + 30
            while len(got) < 10:
                assert time.monotonic() < deadline, f"consumed only {len(got)} of 10"
                message = consumer.poll(0.2)
                if message is None:
                    continue
                assert message.error() is None, message.error()
                key, value = message.key(), message.value()
                assert key is not None
                assert value is not None
                got[key] = value
            assert got == {b"k%d" % i: b"v%d" % i for i in range(10)}
            assert {tp.partition for tp in consumer.assignment()} == {0, 1}
            consumer.commit(asynchronous=False)
            committed = consumer.committed(
                [TopicPartition("embedded", 0), TopicPartition("embedded", 1)], timeout=10
            )
            assert sum(tp.offset for tp in committed) == 10
        finally:
            consumer.close()

    assert broker.stopped.is_set()
    assert _broker_threads() == before
    assert _port_is_free(port)
