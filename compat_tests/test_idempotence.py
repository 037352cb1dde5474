"""confluent-kafka's idempotent producer (``enable.idempotence``) against a pykbroker process.

librdkafka asks InitProducerId for a producer id, numbers every batch per partition and
retries with the same sequence; the broker must keep the order, answer retries with the
original offsets and keep its producer state across a restart (the ``.snapshot`` files).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from compat_tests import test_kafka_python as kp
from compat_tests.conftest import BrokerProcess
from compat_tests.helpers import Deadline, unique_topic
from compat_tests.test_confluent_kafka import consumer, create_topic, new_producer

pytestmark = pytest.mark.compat


def idempotent_producer(b: BrokerProcess, **conf: Any) -> Producer:
    return new_producer(
        b,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "batch.num.messages": 7,
            **conf,
        },
    )


def produce_values(p: Producer, topic: str, values: list[bytes]) -> list[Message]:
    delivered: list[tuple[KafkaError | None, Message]] = []
    for value in values:
        p.produce(
            topic, value=value, partition=0, on_delivery=lambda e, m: delivered.append((e, m))
        )
        p.poll(0)
    assert p.flush(30) == 0, "records not delivered within 30s"
    errors = [e for e, _ in delivered if e is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    return [m for _, m in delivered]


def consume_values(b: BrokerProcess, topic: str, count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    with consumer(b) as c:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = Deadline(30, f"{count} records from {topic}")
        while len(got) < count:
            deadline.check()
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value()
            assert isinstance(value, bytes)
            offset = msg.offset()
            assert offset is not None
            got.append((offset, value))
        # nothing more (no duplicate) arrives after the expected records
        extra = c.poll(1.0)
        assert extra is None or extra.error() is not None, f"unexpected {extra.value()!r}"
    return got


def test_idempotent_producer_writes_each_record_once_in_order(broker: BrokerProcess) -> None:
    topic = unique_topic("idem")
    create_topic(broker, topic)
    p = idempotent_producer(broker)
    values = [f"r{i}".encode() for i in range(200)]
    delivered = produce_values(p, topic, values)
    assert sorted(m.offset() or 0 for m in delivered) == list(range(200))
    assert consume_values(broker, topic, 200) == list(enumerate(values))


def test_idempotent_producer_carries_on_across_a_broker_restart(broker: BrokerProcess) -> None:
    topic = unique_topic("idem-restart")
    create_topic(broker, topic)
    p = idempotent_producer(broker)
    first = [f"a{i}".encode() for i in range(50)]
    produce_values(p, topic, first)
    broker.restart(keep_port=True)
    partition_dir = broker.data_dir / f"{topic}-0"
    if partition_dir.is_dir():  # pykbroker's layout (a reference broker may differ)
        assert list(partition_dir.glob("*.snapshot")), "no producer state snapshot written"
    # Same producer id and epoch, sequences continuing from the broker's restored state.
    second = [f"b{i}".encode() for i in range(50)]
    produce_values(p, topic, second)
    assert consume_values(broker, topic, 100) == list(enumerate(first + second))


def test_kafka_python_idempotent_producer_writes_each_record_once(broker: BrokerProcess) -> None:
    topic = unique_topic("idem-kp")
    create_topic(broker, topic)
    with kp.producer(broker, enable_idempotence=True, acks="all") as p:
        futures = [p.send(topic, value=f"k{i}".encode(), partition=0) for i in range(100)]
        p.flush(timeout=20)
        offsets = [f.get(timeout=20).offset for f in futures]
    assert offsets == list(range(100))
    assert consume_values(broker, topic, 100) == [(i, f"k{i}".encode()) for i in range(100)]
