"""Partition reassignment (KIP-455) with a real client on a 3-process cluster.

confluent-kafka 2.16's AdminClient has no partition reassignment calls, so this uses
kafka-python's ``KafkaAdminClient.alter_partition_reassignments`` /
``list_partition_reassignments`` (sent to the controller the Metadata response names). An RF=2
topic on brokers [1, 2] holding acknowledged records moves to [2, 3]: the reassignment completes,
ListPartitionReassignments is empty again, the metadata shows replicas [2, 3], broker 1's log
directory for the partition is gone, and a consumer reads every record back from the new
replicas. Kafka's per-partition errors (INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS,
UNKNOWN_TOPIC_OR_PARTITION) reach the client. Every wait is bounded; the ``cluster`` fixture
stops every process.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import NewTopic

from pykbroker.api.protocol.errors import ErrorCode

from .helpers import unique_topic, wait_until
from .test_cluster import ProcessCluster, cluster  # noqa: F401 - the fixture

pytestmark = pytest.mark.compat

COMMON: dict[str, Any] = {
    "request_timeout_ms": 10_000,
    "bootstrap_timeout_ms": 10_000,
    "reconnect_backoff_max_ms": 1_000,
}


def _replicas(admin: KafkaAdminClient, topic: str) -> list[int] | None:
    described = admin.describe_topics([topic])
    if not described or described[0]["error_code"] or not described[0]["partitions"]:
        return None
    replicas: list[int] = described[0]["partitions"][0]["replica_nodes"]
    return replicas


def test_move_a_partition_with_kafka_python(
    cluster: ProcessCluster,  # noqa: F811 - the fixture
) -> None:
    topic = unique_topic("moving")
    tp = TopicPartition(topic, 0)
    # The client sends both requests to the controller Metadata names: the active one, once the
    # nodes agree on it.
    wait_until(cluster.leader, timeout=20, what="one quorum leader")
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap(), **COMMON)
    try:
        admin.create_topics([NewTopic(topic, 1, replica_assignments={0: [1, 2]})])
        wait_until(lambda: _replicas(admin, topic) == [1, 2], timeout=20, what="the topic")
        producer = KafkaProducer(bootstrap_servers=cluster.bootstrap(), acks="all", **COMMON)
        try:
            sent = [b"value-%d" % i for i in range(50)]
            for value in sent:
                producer.send(topic, value=value, partition=0)
            producer.flush(timeout=30)
        finally:
            producer.close()
        old_dir = cluster.spec(1).data_dir / f"{topic}-0"
        assert old_dir.is_dir()

        errors = admin.alter_partition_reassignments(
            {tp: [2, 2], TopicPartition(topic, 9): [1, 2], TopicPartition("nope", 0): [1]}
        )
        assert errors == {
            tp: kafka_errors.for_code(ErrorCode.INVALID_REPLICA_ASSIGNMENT),
            TopicPartition(topic, 9): kafka_errors.for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            TopicPartition("nope", 0): kafka_errors.for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        }
        assert admin.alter_partition_reassignments({tp: None}) == {
            tp: kafka_errors.for_code(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS)
        }

        assert admin.alter_partition_reassignments({tp: [2, 3]}) == {tp: None}
        wait_until(
            lambda: (
                admin.list_partition_reassignments() == {} and _replicas(admin, topic) == [2, 3]
            ),
            timeout=30,
            what="the reassignment completed",
        )
        assert admin.list_partition_reassignments({topic: [0]}) == {}
        wait_until(lambda: not old_dir.exists(), timeout=20, what="broker 1 deleted its replica")
    finally:
        admin.close()

    consumer = KafkaConsumer(
        bootstrap_servers=cluster.bootstrap(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2_000,
        **COMMON,
    )
    try:
        consumer.assign([tp])
        got: list[bytes] = []

        def read_all() -> bool:
            got.extend(m.value for m in consumer)
            return len(got) >= len(sent)

        wait_until(read_all, timeout=30, what="every record read back")
        assert got == sent
    finally:
        consumer.close()
