"""QuorumController: checks metadata changes and writes them as records through Raft.

Mirrors Kafka's ``QuorumController``. The Raft leader is the active controller; every node
replays the committed records into its ``MetadataImage``; a node that is not the active
controller forwards operations to the active one's CONTROLLER listener. The parts, one concept
per module:

- ``controller_base``: the Raft plumbing (validation image, append, commit, forward, replay).
- ``broker_lifecycle``: broker registration, heartbeats, fencing, controlled shutdown,
  UnregisterBroker (and this broker's own lifecycle).
- ``topic_control``: CreateTopics, CreatePartitions, DeleteTopics; replicas placed by
  ``replica_placement``.
- ``replication_control``: AlterPartition, ElectLeaders, the automatic leader rebalance;
  elections by ``partition_change`` / ``leader_election``.
- ``config_control``: IncrementalAlterConfigs and AlterConfigs (ConfigRecords for topics and
  brokers).
- ``reassignment``: AlterPartitionReassignments and ListPartitionReassignments (KIP-455).
- here: producer id blocks (AllocateProducerIds) and the background task that heartbeats,
  fences silent brokers and rebalances leaders.

Not implemented: ELR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from . import schemas
from .broker_lifecycle import BrokerLifecycleControl
from .config_control import AlterConfigOp, AlterConfigsResource, AlterConfigsResult, ConfigControl
from .controller_base import METADATA_VERSION, ZERO_UUID, ControllerChannel, MetadataRaft
from .partition_change import NO_LEADER
from .reassignment import ReassignmentControl
from .records import record
from .replication_control import (
    AlterPartitionItem,
    AlterPartitionResult,
    ElectionResult,
    ReplicationControl,
    TopicElectionResults,
)
from .topic_control import (
    MAX_TOPIC_NAME_LENGTH,
    TOPIC_CONFIG_KEYS,
    CreatePartitionsRequest,
    CreatePartitionsResult,
    CreateTopicRequest,
    CreateTopicResult,
    DeleteTopicResult,
    TopicControl,
    validate_topic_name,
)

__all__ = [
    "MAX_TOPIC_NAME_LENGTH",
    "METADATA_VERSION",
    "NO_LEADER",
    "TOPIC_CONFIG_KEYS",
    "ZERO_UUID",
    "AlterConfigOp",
    "AlterConfigsResource",
    "AlterConfigsResult",
    "AlterPartitionItem",
    "AlterPartitionResult",
    "ControllerChannel",
    "CreatePartitionsRequest",
    "CreatePartitionsResult",
    "CreateTopicRequest",
    "CreateTopicResult",
    "DeleteTopicResult",
    "ElectionResult",
    "MetadataRaft",
    "QuorumController",
    "TopicElectionResults",
    "validate_topic_name",
]

log = logging.getLogger(__name__)


class QuorumController(
    TopicControl, BrokerLifecycleControl, ReplicationControl, ConfigControl, ReassignmentControl
):
    """This node's controller: active when it leads the Raft quorum, forwarding otherwise."""

    async def allocate_producer_ids(self, block_size: int) -> int:
        """Reserve ``block_size`` producer ids for this broker (Kafka's AllocateProducerIds:
        a ProducerIdsRecord moves the cluster's next producer id past the block)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            body = {"broker_id": self.node_id, "broker_epoch": self.broker_epoch}
            response = await self._forward(
                ApiKey.ALLOCATE_PRODUCER_IDS, 0, body, deadline, lambda r: [r["error_code"]]
            )
            if response["error_code"]:
                raise KafkaError(ErrorCode(response["error_code"]), "AllocateProducerIds failed")
            if response["producer_id_len"] < block_size:
                raise KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, "producer id block too small")
            return int(response["producer_id_start"])
        return await self.handle_allocate_producer_ids(self.node_id, self.broker_epoch, block_size)

    async def handle_allocate_producer_ids(
        self, broker_id: int, broker_epoch: int, block_size: int
    ) -> int:
        """Active controller: reserve a block for ``broker_id``; the first id of it."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        start = self._validation_image().next_producer_id
        await self._commit(
            [
                record(
                    schemas.PRODUCER_IDS_RECORD,
                    broker_id=broker_id,
                    broker_epoch=broker_epoch,
                    next_producer_id=start + block_size,
                )
            ],
            deadline,
        )
        return start

    def topic_configs(self, topic: str) -> Mapping[str, str]:
        return self.image.topic_config(topic)

    async def run_broker_lifecycle(
        self,
        heartbeat_interval_ms: int,
        *,
        heartbeat: bool = True,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Background task: heartbeat this broker (a node with the broker role); when this node
        is the active controller, fence silent brokers and, every
        ``leader.imbalance.check.interval.seconds`` with ``auto.leader.rebalance.enable``, move
        leadership back to preferred replicas."""
        task_status.started()
        last_balance = self._clock()
        while True:  # until cancelled at shutdown; every round sleeps
            await trio.sleep(heartbeat_interval_ms / 1000)
            try:
                if heartbeat:
                    await self.heartbeat()
                await self.fence_expired_brokers()
                now = self._clock()
                if not self.is_active:
                    last_balance = now
                elif (
                    self.auto_leader_rebalance_enable
                    and now - last_balance >= self.leader_imbalance_check_interval_ms
                ):
                    last_balance = now
                    await self.balance_partition_leaders()
            except KafkaError as exc:
                log.info("broker heartbeat: %s", exc)
