"""confluent-kafka (librdkafka) validating fetch positions with OffsetForLeaderEpoch (KIP-320).

librdkafka (2.1+) checks a position that carries a leader epoch (an assignment or a committed
offset with one) against the partition leader's epoch cache before it fetches: a valid position
is kept, a position past the end of its epoch is moved back to that end ("log truncation
detected"), an epoch the broker does not know resets by ``auto.offset.reset``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from compat_tests.conftest import BrokerProcess
from compat_tests.helpers import assert_same_records, make_records, unique_topic
from compat_tests.test_confluent_kafka import (
    consumer,
    create_topic,
    eof_offset,
    new_producer,
    produce_all,
    read,
)

pytestmark = pytest.mark.compat


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def protocol_log() -> Iterator[tuple[logging.Logger, _Lines]]:
    """A logger for librdkafka's protocol debug lines, kept for the test to inspect."""
    logger = logging.getLogger(f"compat.librdkafka.{unique_topic('epochs')}")
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


def test_positions_with_a_leader_epoch_are_validated(
    module_broker: BrokerProcess, protocol_log: tuple[logging.Logger, _Lines]
) -> None:
    b = module_broker
    logger, lines = protocol_log
    topic = unique_topic("ck-epoch")
    create_topic(b, topic)
    sent = make_records(10, seed=41)
    produce_all(new_producer(b, acks="all"), topic, sent)
    with consumer(b) as c:
        c.assign([TopicPartition(topic, 0, 0)])
        first = read(c, 1)
        assert first[0].offset == 0
        epoch = c.position([TopicPartition(topic, 0)])[0].leader_epoch
    assert epoch is not None
    assert epoch >= 0

    debug: dict[str, Any] = {"logger": logger, "debug": "protocol,fetch"}
    # a valid position: kept
    with consumer(b, **debug) as c:
        c.assign([TopicPartition(topic, 0, 5, leader_epoch=epoch)])
        assert_same_records(read(c, 5), sent[5:], first_offset=5)
    assert any("Received OffsetForLeaderEpochResponse" in line for line in lines.lines)

    # past the end of its epoch: moved back to the end (10), not reset to the beginning
    eof: dict[str, Any] = {"enable.partition.eof": True}
    with consumer(b, **eof) as c:
        tp = TopicPartition(topic, 0, 50, leader_epoch=epoch)
        c.assign([tp])
        assert eof_offset(c, tp) == 10

    # an epoch above every epoch of the log: reset by auto.offset.reset (earliest)
    with consumer(b) as c:
        c.assign([TopicPartition(topic, 0, 5, leader_epoch=epoch + 1000)])
        assert_same_records(read(c, 10), sent)
