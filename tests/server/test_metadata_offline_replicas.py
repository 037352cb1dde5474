"""Metadata v5+ ``offline_replicas``: replicas on fenced or unregistered brokers."""

from __future__ import annotations

import uuid

from pykbroker.api.handlers.metadata import topic_entry
from pykbroker.metadata.image import (
    BrokerRegistration,
    MetadataImage,
    PartitionRegistration,
    TopicImage,
)


def test_replicas_on_fenced_or_unregistered_brokers_are_offline() -> None:
    topic = TopicImage(
        "t",
        uuid.uuid4(),
        {
            0: PartitionRegistration((1, 2, 3), (1, 2), 1, 4, 7),
            1: PartitionRegistration((2, 1), (2, 1), 2, 0, 0),
        },
    )
    image = MetadataImage(
        topics={"t": topic},
        topics_by_id={topic.topic_id: topic},
        brokers={
            1: BrokerRegistration(1, "127.0.0.1", 9092, None, fenced=False),
            2: BrokerRegistration(2, "127.0.0.1", 9094, None, fenced=True),
        },  # broker 3 is not registered at all
    )
    entry = topic_entry(topic, False, image)
    assert [(p["partition_index"], p["offline_replicas"]) for p in entry["partitions"]] == [
        (0, [2, 3]),
        (1, [2]),
    ]
    assert [p["replica_nodes"] for p in entry["partitions"]] == [[1, 2, 3], [2, 1]]
