"""The transaction coordinator's storage: ``__transaction_state`` partitions on this broker.

Its storage is an ``InternalTopicLog``: the compacted topic
(``transaction.state.log.num.partitions``, default 50) is created on the first coordinator
lookup and appended/read through the replica manager; ``build_transaction_coordinator`` wires the
coordinator to the producer id manager and to the group coordinator (the transaction markers
of ``__consumer_offsets`` partitions go through it, completing transactional offsets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pykbroker.clock import wall_clock_ms
from pykbroker.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionCoordinator,
)
from pykbroker.coordinator.transaction.markers import GroupTransactionParticipant
from pykbroker.metadata.controller import QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

from .internal_topic import InternalTopicLog

if TYPE_CHECKING:
    from .broker import BrokerServer


def build_transaction_coordinator(
    broker: BrokerServer,
    controller: QuorumController,
    replica_manager: ReplicaManager,
    group_coordinator: GroupTransactionParticipant,
    producer_id_manager: Any,
) -> TransactionCoordinator:
    config = broker.config
    num_partitions = config.transaction_state_log_num_partitions
    storage = InternalTopicLog(
        controller,
        replica_manager,
        topic=TRANSACTION_STATE_TOPIC,
        num_partitions=num_partitions,
        replication_factor=getattr(config, "transaction_state_log_replication_factor", 1),
        configs={"cleanup.policy": "compact", "segment.bytes": "104857600"},
    )

    return TransactionCoordinator(
        storage,
        replica_manager,
        producer_id_manager.generate_producer_id,
        group_coordinator,
        num_partitions=num_partitions,
        offsets_topic_num_partitions=config.offsets_topic_num_partitions,
        max_timeout_ms=config.transaction_max_timeout_ms,
        abort_check_interval_ms=config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        transactional_id_expiration_ms=config.transactional_id_expiration_ms,
        remove_expired_interval_ms=(
            config.transaction_remove_expired_transaction_cleanup_interval_ms
        ),
        clock=wall_clock_ms,
    )
