"""The transaction coordinator's storage: ``__transaction_state`` partitions on this broker.

Mirrors ``group_wiring``: ``TransactionStateLog`` creates the compacted topic
(``transaction.state.log.num.partitions``, default 50) on the first coordinator lookup and
appends/reads through the replica manager; ``build_transaction_coordinator`` wires the
coordinator to the producer id manager and to the group coordinator (transactional offsets
are committed there when a transaction commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionCoordinator,
)
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.metadata.controller import CreateTopicRequest, QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

from .group_wiring import _read_all

if TYPE_CHECKING:
    from .broker import BrokerServer

#: OffsetCommit version used to commit transactional offsets (member id + generation).
_OFFSET_COMMIT_VERSION = 8


class TransactionStateLog:
    """TransactionLog over the ``__transaction_state`` partitions hosted here."""

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
        if TRANSACTION_STATE_TOPIC in self.controller.image.topics:
            return
        results = await self.controller.create_topics(
            [
                CreateTopicRequest(
                    TRANSACTION_STATE_TOPIC,
                    num_partitions=self.num_partitions,
                    replication_factor=self.replication_factor,
                    configs={"cleanup.policy": "compact", "segment.bytes": "104857600"},
                )
            ]
        )
        error = results[0].error
        if error not in (ErrorCode.NO_ERROR, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, results[0].message)

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        now = wall_clock_ms()
        batch = build_batch([Record(key=k, value=v, timestamp=now) for k, v in records])
        tp = (TRANSACTION_STATE_TOPIC, partition)
        outcome = self.replica_manager.append_records({tp: batch}, -1)[tp]
        if outcome.error != ErrorCode.NO_ERROR:
            code = (
                ErrorCode.NOT_COORDINATOR
                if outcome.error
                in (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_LEADER_OR_FOLLOWER)
                else ErrorCode.UNKNOWN_SERVER_ERROR
            )
            raise KafkaError(code, outcome.error_message or outcome.error.name)

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        found = self.replica_manager.get_partition(TRANSACTION_STATE_TOPIC, partition)
        if found is None:
            return []
        return _read_all(found.log)


def build_transaction_coordinator(
    broker: BrokerServer,
    controller: QuorumController,
    replica_manager: ReplicaManager,
    group_coordinator: Any,
    producer_id_manager: Any,
) -> TransactionCoordinator:
    config = broker.config
    num_partitions = config.transaction_state_log_num_partitions
    storage = TransactionStateLog(
        controller,
        replica_manager,
        num_partitions=num_partitions,
        replication_factor=getattr(config, "transaction_state_log_replication_factor", 1),
    )

    async def commit_offsets(request: dict[str, Any]) -> Any:
        return await group_coordinator.commit_offsets(request, _OFFSET_COMMIT_VERSION)

    return TransactionCoordinator(
        storage,
        replica_manager,
        producer_id_manager.generate_producer_id,
        commit_offsets,
        num_partitions=num_partitions,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        max_timeout_ms=config.transaction_max_timeout_ms,
        abort_check_interval_ms=config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        clock=wall_clock_ms,
    )
