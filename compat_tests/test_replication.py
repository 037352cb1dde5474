"""Partition replication with a real client (confluent-kafka / librdkafka) on a 3-process
cluster: an idempotent acks=all producer on a replication-factor-3 topic with
``min.insync.replicas=2`` keeps every acknowledged record when the partition's leader is killed
with SIGKILL, and a consumer reads them back exactly once, in order. Every wait is bounded; the
cluster fixture stops every process.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import LIBRDKAFKA_LOG
from .helpers import wait_until
from .test_cluster import ProcessCluster, cluster  # noqa: F401 - the fixture

TOPIC = "replicated"


def _leader_and_isr(bootstrap: str) -> tuple[int, list[int]] | None:
    metadata = AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG}).list_topics(
        TOPIC, timeout=5
    )
    topic = metadata.topics.get(TOPIC)
    if topic is None or topic.error is not None or 0 not in topic.partitions:
        return None
    partition = topic.partitions[0]
    return partition.leader, sorted(partition.isrs)


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
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap(),
            "group.id": "replicated-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    values: list[int] = []
    try:
        consumer.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while len(values) < 400 and time.monotonic() < deadline:  # bounded by the deadline
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(int(message.value()))
    finally:
        consumer.close()
    assert values == list(range(400))  # every acknowledged record once, in order
