"""Wiring of the group coordinator: its storage is ``__consumer_offsets`` on this broker
(an ``InternalTopicLog`` with ``offsets.topic.num.partitions`` compacted partitions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pykbroker.coordinator.group.records import OFFSETS_TOPIC
from pykbroker.metadata.controller import QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

from .internal_topic import InternalTopicLog

if TYPE_CHECKING:
    from .broker import BrokerServer


def build_group_coordinator(
    broker: BrokerServer, controller: QuorumController, replica_manager: ReplicaManager
) -> Any:
    from pykbroker.coordinator.group.coordinator import GroupCoordinator

    config = broker.config
    storage = InternalTopicLog(
        controller,
        replica_manager,
        topic=OFFSETS_TOPIC,
        num_partitions=config.offsets_topic_num_partitions,
        replication_factor=config.offsets_topic_replication_factor,
        configs={
            "cleanup.policy": "compact",
            "compression.type": "producer",
            "segment.bytes": "104857600",
        },
    )
    coordinator = GroupCoordinator(
        storage,
        node_id=config.node_id,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        group_initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=config.group_min_session_timeout_ms,
        group_max_session_timeout_ms=config.group_max_session_timeout_ms,
        group_max_size=config.group_max_size,
        offset_metadata_max_bytes=config.offset_metadata_max_bytes,
        properties=config.extra,
        metadata=lambda: controller.image,
    )
    # Kafka's onElection/onResignation: load and unload partitions as leadership moves.
    controller.add_listener(coordinator.on_metadata_update)
    return coordinator
