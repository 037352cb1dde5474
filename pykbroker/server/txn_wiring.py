"""The transaction coordinator's wiring: its storage, the cluster view and other brokers.

Its storage is an ``InternalTopicLog``: the compacted topic
(``transaction.state.log.num.partitions``, default 50) is created on the first coordinator
lookup and appended/read through the replica manager; ``build_transaction_coordinator`` wires the
coordinator to the producer id manager, to the group coordinator (the transaction markers
of ``__consumer_offsets`` partitions this broker leads go through it, completing transactional
offsets), to the metadata image (partition leaders and broker endpoints) and to an
``InterBrokerChannel``: the WriteTxnMarkers requests of the marker channel and the KIP-890
verifications (AddPartitionsToTxn ``verify_only``) go to other brokers' listeners through it,
one ``NodeConnection`` per destination broker, reused (Kafka's inter-broker
``NetworkClient``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.coordinator.transaction.coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionCoordinator,
)
from pykbroker.coordinator.transaction.markers import GroupTransactionParticipant
from pykbroker.metadata.controller import QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

from .internal_topic import InternalTopicLog
from .network_client import NodeConnection, NodeUnavailable

if TYPE_CHECKING:
    from .broker import BrokerServer

log = logging.getLogger(__name__)

#: Kafka's ``request.timeout.ms`` of the transaction marker channel.
DEFAULT_INTER_BROKER_REQUEST_TIMEOUT_MS = 30_000


class InterBrokerChannel:
    """Requests to other brokers' listeners, one reused connection per destination broker
    (re-opened when the broker registers another endpoint)."""

    def __init__(
        self,
        node_id: int,
        *,
        request_timeout_ms: int = DEFAULT_INTER_BROKER_REQUEST_TIMEOUT_MS,
    ) -> None:
        self.node_id = node_id
        self.request_timeout_ms = request_timeout_ms
        self._connections: dict[int, NodeConnection] = {}

    async def _connection(self, node_id: int, host: str, port: int) -> NodeConnection:
        connection = self._connections.get(node_id)
        if connection is not None and (connection.host, connection.port) != (host, port):
            del self._connections[node_id]
            await connection.aclose()
            connection = None
        if connection is None:
            connection = NodeConnection(
                host, port, client_id=f"broker-{self.node_id}-txn-coordinator"
            )
            self._connections[node_id] = connection
        return connection

    async def send(
        self, node_id: int, host: str, port: int, api_key: int, version: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        """One request to broker ``node_id``; KafkaError(NETWORK_EXCEPTION) when it cannot be
        reached, KafkaError(REQUEST_TIMED_OUT) after ``request_timeout_ms``."""
        connection = await self._connection(node_id, host, port)
        try:
            with trio.fail_after(self.request_timeout_ms / 1000):
                return await connection.request(api_key, version, body)
        except NodeUnavailable as exc:
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, str(exc)) from exc
        except trio.TooSlowError as exc:
            raise KafkaError(
                ErrorCode.REQUEST_TIMED_OUT, f"broker {node_id} did not answer in time"
            ) from exc
        except CodecError as exc:
            log.warning("broker %d sent an undecodable answer: %s", node_id, exc)
            await connection.aclose()
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, str(exc)) from exc

    async def aclose(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            await connection.aclose()


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

    coordinator = TransactionCoordinator(
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
        node_id=config.node_id,
        metadata=lambda: controller.image,
        inter_broker_client=InterBrokerChannel(config.node_id),
    )
    controller.add_listener(coordinator.on_metadata_update)
    return coordinator
