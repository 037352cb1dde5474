"""confluent-kafka's transactional API against a pykbroker process (issue 6).

A consume-transform-produce loop (``send_offsets_to_transaction``) commits some transactions
and aborts others; then a read_committed consumer must see exactly the committed output, a
read_uncommitted consumer every record written (aborted ones included, control batches
never), and the group's committed offset must move only with committed transactions.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from compat_tests.conftest import BrokerProcess, close_at_teardown
from compat_tests.helpers import Deadline, unique_topic
from compat_tests.test_confluent_kafka import COMMON, create_topic, new_producer

pytestmark = pytest.mark.compat


def transactional_producer(b: BrokerProcess, transactional_id: str, **conf: Any) -> Producer:
    p = new_producer(b, **{"transactional.id": transactional_id, "linger.ms": 1, **conf})
    p.init_transactions(30)
    return p


def new_consumer(b: BrokerProcess, group: str, isolation: str, **conf: Any) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            **COMMON,
            **conf,
        }
    )
    close_at_teardown(c.close)
    return c


def read_values(
    b: BrokerProcess, topic: str, isolation: str, expected: int, *, settle_s: float = 2.0
) -> list[bytes]:
    """Every value of partition 0 of ``topic`` (waits for ``expected``, then ``settle_s``)."""
    c = new_consumer(b, unique_topic("reader"), isolation)
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = Deadline(30, f"{expected} records from {topic} ({isolation})")
    settle = Deadline(settle_s, "settle")
    while not deadline.expired():
        msg = c.poll(0.2)
        if msg is None:
            if len(values) >= expected and settle.expired():
                break
            continue
        assert msg.error() is None, msg.error()
        value = msg.value()
        assert isinstance(value, bytes)
        values.append(value)
        if len(values) >= expected:
            settle = Deadline(settle_s, "settle")
    return values


def committed_offset(c: Consumer, topic: str) -> int:
    (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
    return int(tp.offset)


def test_consume_transform_produce_commits_and_aborts(broker: BrokerProcess) -> None:
    source, sink = unique_topic("txn-in"), unique_topic("txn-out")
    create_topic(broker, source)
    create_topic(broker, sink)
    plain = new_producer(broker)
    for i in range(10):
        plain.produce(source, value=b"in-%d" % i, partition=0)
    assert plain.flush(20) == 0

    group = unique_topic("txn-group")
    consumer = new_consumer(broker, group, "read_committed")
    consumer.subscribe([source])
    producer = transactional_producer(broker, unique_topic("txn-id"))

    committed: list[bytes] = []
    everything: list[bytes] = []
    batch_no = 0
    pending: list[bytes] = []
    deadline = Deadline(60, "consume-transform-produce")
    while batch_no < 5:
        deadline.check(f"batch {batch_no}")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        value = msg.value()
        assert isinstance(value, bytes)
        pending.append(value)
        if len(pending) < 2:
            continue
        producer.begin_transaction()
        out = [v.replace(b"in-", b"out-") for v in pending]
        for v in out:
            producer.produce(sink, value=v, partition=0)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        everything.extend(out)
        assert producer.flush(20) == 0  # the aborted records reach the log too
        if batch_no % 2 == 0:
            producer.commit_transaction(30)
            committed.extend(out)
            assert committed_offset(consumer, source) == 2 * (batch_no + 1)
        else:
            producer.abort_transaction(30)
            # the aborted transaction's offsets are not visible to the group
            assert committed_offset(consumer, source) == 2 * batch_no
        pending = []
        batch_no += 1

    assert committed == [b"out-0", b"out-1", b"out-4", b"out-5", b"out-8", b"out-9"]
    assert read_values(broker, sink, "read_committed", len(committed)) == committed
    assert read_values(broker, sink, "read_uncommitted", len(everything)) == everything

    # a new member of the group resumes after the last committed transaction
    consumer.close()
    resumed = new_consumer(broker, group, "read_committed")
    assert committed_offset(resumed, source) == 10


def test_fencing_and_restart_keep_transactions_consistent(broker: BrokerProcess) -> None:
    topic = unique_topic("txn-fence")
    create_topic(broker, topic)
    transactional_id = unique_topic("txn-fence-id")
    zombie = transactional_producer(broker, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie", partition=0)
    assert zombie.flush(20) == 0

    # a new instance with the same transactional id aborts the zombie's open transaction
    producer = transactional_producer(broker, transactional_id)
    with pytest.raises(KafkaException):
        zombie.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"kept", partition=0)
    producer.commit_transaction(30)

    broker.restart()
    producer = transactional_producer(broker, transactional_id)
    producer.begin_transaction()
    producer.produce(topic, value=b"dropped", partition=0)
    assert producer.flush(20) == 0
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"kept-2", partition=0)
    producer.commit_transaction(30)

    assert read_values(broker, topic, "read_committed", 2) == [b"kept", b"kept-2"]
    assert read_values(broker, topic, "read_uncommitted", 4) == [
        b"zombie",
        b"kept",
        b"dropped",
        b"kept-2",
    ]
