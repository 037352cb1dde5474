"""The group coordinator's storage: ``__consumer_offsets`` partitions on this broker.

``OffsetsTopicLog`` implements the coordinator's ``CoordinatorLog`` over the replica manager:
the topic is created (compacted, ``offsets.topic.num.partitions`` partitions) the first time a
coordinator is looked up, as Kafka does; appends go through the partition leader like any
produce with acks=all; loading reads every batch of a partition back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.log.log_reader import iter_records
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.metadata.controller import CreateTopicRequest, QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

if TYPE_CHECKING:
    from .broker import BrokerServer

OFFSETS_TOPIC = "__consumer_offsets"


class OffsetsTopicLog:
    """CoordinatorLog over the ``__consumer_offsets`` partitions hosted here."""

    def __init__(
        self,
        controller: QuorumController,
        replica_manager: ReplicaManager,
        *,
        num_partitions: int,
        replication_factor: int,
    ) -> None:
        self.controller = controller
        self.replica_manager = replica_manager
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor

    async def ensure_topic(self) -> None:
        if OFFSETS_TOPIC in self.controller.image.topics:
            return
        results = await self.controller.create_topics(
            [
                CreateTopicRequest(
                    OFFSETS_TOPIC,
                    num_partitions=self.num_partitions,
                    replication_factor=self.replication_factor,
                    configs={
                        "cleanup.policy": "compact",
                        "compression.type": "producer",
                        "segment.bytes": "104857600",
                    },
                )
            ]
        )
        error = results[0].error
        if error not in (ErrorCode.NO_ERROR, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, results[0].message)

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        now = wall_clock_ms()
        batch = build_batch([Record(key=k, value=v, timestamp=now) for k, v in records])
        result = self.replica_manager.append_records({(OFFSETS_TOPIC, partition): batch}, -1)
        outcome = result[(OFFSETS_TOPIC, partition)]
        if outcome.error != ErrorCode.NO_ERROR:
            code = (
                ErrorCode.NOT_COORDINATOR
                if outcome.error
                in (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_LEADER_OR_FOLLOWER)
                else ErrorCode.UNKNOWN_SERVER_ERROR
            )
            raise KafkaError(code, outcome.error_message or outcome.error.name)

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        found = self.replica_manager.get_partition(OFFSETS_TOPIC, partition)
        if found is None:
            return []
        return _read_all(found.log)


def _read_all(plog: Any) -> Iterator[tuple[bytes, bytes | None]]:
    """Every keyed record of a coordinator partition's log, oldest first."""
    for record in iter_records(plog):
        if record.key is not None:
            yield record.key, record.value


def build_group_coordinator(
    broker: BrokerServer, controller: QuorumController, replica_manager: ReplicaManager
) -> Any:
    from pykbroker.coordinator.group.coordinator import GroupCoordinator

    config = broker.config
    storage = OffsetsTopicLog(
        controller,
        replica_manager,
        num_partitions=config.offsets_topic_num_partitions,
        replication_factor=config.offsets_topic_replication_factor,
    )
    return GroupCoordinator(
        storage,
        node_id=config.node_id,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        group_initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        group_min_session_timeout_ms=config.group_min_session_timeout_ms,
        group_max_session_timeout_ms=config.group_max_session_timeout_ms,
        group_max_size=config.group_max_size,
        offset_metadata_max_bytes=config.offset_metadata_max_bytes,
        properties=config.extra,
    )
