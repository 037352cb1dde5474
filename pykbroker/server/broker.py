"""BrokerServer: wires the components of one pykbroker process and owns its lifetime.

Start-up order (as Kafka's BrokerServer/ControllerServer): check that every log dir is usable
and bind the listeners before writing anything (a bad dir or a port in use fails start-up with
nothing written), format or check the log dirs (``meta.properties``; a node of a multi-node
quorum must have been formatted with the cluster's id, ``pykbroker format``), recover the
partition logs, open ``__cluster_metadata-0`` as the Raft log, serve the CONTROLLER listener,
start the Raft driver (every node replays committed metadata records into its image and
creates the partitions it hosts), register this broker with the active controller and wait
until the registration is replayed locally (so the image is caught up), load the coordinators,
then answer clients on the broker listeners and heartbeat to the controller. The replica
manager's ISR expiration/AlterPartition task and the replica fetchers run in the background
from the start (they act on whatever the metadata image says). Shutdown: first the controlled
shutdown (KIP-631), still serving: heartbeats with ``want_shut_down`` until the controller has
moved every leadership away and answers ``should_shut_down`` (at most
``controlled.shutdown.timeout.ms``; Kafka waits up to its shutdown deadline); then stop
accepting, let requests in flight finish (bounded by ``controlled.shutdown.timeout.ms``),
answer parked fetches, resign Raft leadership (EndQuorumEpoch), then flush and close every log
and write the clean-shutdown marker.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

import trio

from pykbroker.api.context import Endpoint
from pykbroker.api.dispatch import Dispatcher
from pykbroker.api.protocol.errors import KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.config import BrokerConfig, Listener
from pykbroker.coordinator.transaction.producer_id_manager import ProducerIdManager
from pykbroker.log.cleaner import LogCleaner
from pykbroker.log.log import LogConfig
from pykbroker.log.log_manager import LogManager
from pykbroker.log.log_tasks import (
    FlushCoordinator,
    checkpoint_loop,
    cleaner_loop,
    flush_loop,
    retention_loop,
)
from pykbroker.metadata.controller import QuorumController
from pykbroker.metadata.metadata_log import MetadataLog
from pykbroker.metadata.snapshot import SnapshotPolicy
from pykbroker.raft import NotLeaderError, QuorumConfig
from pykbroker.replication.replica_manager import ReplicaManager

from .controller_apis import CONTROLLER_HANDLERS, CONTROLLER_SUPPORTED
from .controller_channel import ControllerChannel
from .group_wiring import build_group_coordinator
from .quorum_state_store import FileQuorumStateStore
from .raft_driver import MetadataLogRetention, RaftDriver, VoterEndpoint
from .raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog
from .replica_fetcher import ReplicaFetcherConfig, ReplicaFetcherManager
from .socket_server import ConnectionHandler
from .storage import check_log_dirs, ensure_formatted, kafka_uuid, read_meta_properties
from .txn_wiring import build_transaction_coordinator

log = logging.getLogger(__name__)

_RESIGN_GRACE_S = 0.5
_REGISTRATION_TIMEOUT_S = 30.0
_REGISTRATION_RETRY_S = 1.0


def log_config_factory(config: BrokerConfig) -> Any:
    """Topic config -> LogConfig: topic-level keys over the broker's log.* defaults."""
    defaults = {
        "segment.bytes": str(config.log_segment_bytes),
        "segment.ms": str(config.log_roll_ms),
        "segment.index.bytes": str(config.log_index_size_max_bytes),
        "index.interval.bytes": str(config.log_index_interval_bytes),
        "max.message.bytes": str(config.message_max_bytes),
        "retention.ms": str(config.log_retention_ms),
        "retention.bytes": str(config.log_retention_bytes),
        "cleanup.policy": config.log_cleanup_policy,
        "message.timestamp.type": config.log_message_timestamp_type,
        "message.timestamp.before.max.ms": str(config.log_message_timestamp_before_max_ms),
        "message.timestamp.after.max.ms": str(config.log_message_timestamp_after_max_ms),
        "compression.type": config.compression_type,
        "flush.messages": str(config.log_flush_interval_messages),
        "flush.ms": str(config.log_flush_interval_ms),
        "min.cleanable.dirty.ratio": str(config.log_cleaner_min_cleanable_ratio),
        "min.compaction.lag.ms": str(config.log_cleaner_min_compaction_lag_ms),
        "max.compaction.lag.ms": str(config.log_cleaner_max_compaction_lag_ms),
        "delete.retention.ms": str(config.log_cleaner_delete_retention_ms),
    }

    def make(topic_config: Any) -> LogConfig:
        return LogConfig.from_properties({**defaults, **dict(topic_config)})

    return make


class ListenerError(RuntimeError):
    """A listener that cannot be bound (port in use, unknown host): start-up fails."""


class BrokerServer:
    """One broker+controller process: a voter (or observer) of the KRaft metadata quorum, a
    CONTROLLER listener when configured, and the broker listeners."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.cluster_id = ""
        self._endpoint: Endpoint | None = None
        self.bound: list[Listener] = []
        self._services: dict[str, Any] = {}
        self._shutdown = trio.Event()
        self.shutting_down = trio.Event()
        self.stopped = trio.Event()

    # -- BrokerServices -----------------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        assert self._endpoint is not None, "the broker is not started"
        return self._endpoint

    def service(self, name: str) -> Any:
        return self._services[name]

    @property
    def bootstrap_servers(self) -> str:
        endpoint = self.endpoint()
        return f"{endpoint.host}:{endpoint.port}"

    # -- lifetime -----------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent, safe from signal handlers via trio tokens)."""
        self._shutdown.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start, serve until ``request_shutdown``, then shut down cleanly."""
        config = self.config
        # Nothing is written before every log dir is known usable and every listener is bound,
        # so a bad dir or a port in use leaves no half-formatted storage behind.
        check_log_dirs(config.log_dirs)
        sockets = await self._open_listeners()
        try:
            self.cluster_id = ensure_formatted(
                config.log_dirs, config.node_id, require_formatted=config.is_multi_node
            )
            log_config_for = log_config_factory(config)
            log_manager = LogManager(
                list(config.log_dirs),
                log_config_for({}),
                producer_id_expiration_ms=config.producer_id_expiration_ms,
            )
            await trio.to_thread.run_sync(log_manager.startup, wall_clock_ms())
            metadata_dir = config.log_dirs[0]
            raft_log = await trio.to_thread.run_sync(
                KafkaReplicatedLog.open, metadata_dir / METADATA_PARTITION_DIR
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                for listener in sockets[0] + sockets[1]:
                    await listener.aclose()
            raise
        try:
            await self._serve(sockets, log_manager, raft_log, log_config_for, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(raft_log.close)
                await trio.to_thread.run_sync(log_manager.shutdown)
            log.info("logs flushed and closed")
            self.stopped.set()

    def _quorum_config(self) -> QuorumConfig:
        config = self.config
        return QuorumConfig(
            controller_quorum_election_timeout_ms=config.controller_quorum_election_timeout_ms,
            controller_quorum_fetch_timeout_ms=config.controller_quorum_fetch_timeout_ms,
            controller_quorum_election_backoff_max_ms=(
                config.controller_quorum_election_backoff_max_ms
            ),
            controller_quorum_request_timeout_ms=config.controller_quorum_request_timeout_ms,
            fetch_max_wait_ms=min(500, config.controller_quorum_request_timeout_ms // 2),
        )

    def _voters(self) -> dict[int, VoterEndpoint]:
        voters = {
            v.node_id: VoterEndpoint(v.node_id, v.host, v.port)
            for v in self.config.controller_quorum_voters
        }
        if not voters and self.config.quorum_bootstrap_addresses:
            return {}  # KIP-853: the voters come from the log (controller.quorum.bootstrap.servers)
        # Without controller.quorum.voters a node is a one-voter quorum of itself.
        return voters or {self.config.node_id: VoterEndpoint(self.config.node_id, "", -1)}

    def _metadata_directory_id(self) -> uuid.UUID | None:
        """The metadata log dir's ``directory.id`` (KIP-853's replica directory id)."""
        directory_id = read_meta_properties(self.config.log_dirs[0]).get("directory.id")
        return kafka_uuid(directory_id) if directory_id else None

    async def _serve(
        self,
        sockets: tuple[list[trio.SocketListener], list[trio.SocketListener]],
        log_manager: LogManager,
        raft_log: KafkaReplicatedLog,
        log_config_for: Any,
        task_status: Any,
    ) -> None:
        config = self.config
        controller_sockets, broker_sockets = sockets
        controller_bound = next(
            (b for b in self.bound if b.name in config.controller_listener_names), None
        )
        driver = RaftDriver(
            node_id=config.node_id,
            voters=self._voters(),
            log=raft_log,
            store=FileQuorumStateStore.in_log_dir(config.log_dirs[0]),
            cluster_id=self.cluster_id,
            config=self._quorum_config(),
            listener_name=config.controller_listener_names[0],
            controller_endpoint=(
                (controller_bound.host or "localhost", controller_bound.port)
                if controller_bound is not None
                else None
            ),
            retention=MetadataLogRetention(
                config.metadata_max_retention_bytes, config.metadata_max_retention_ms
            ),
            directory_id=self._metadata_directory_id(),
            bootstrap_servers=config.quorum_bootstrap_addresses,
        )
        channel = ControllerChannel(driver, node_id=config.node_id)
        controller = QuorumController(
            MetadataLog(raft_log.log),
            driver,
            node_id=config.node_id,
            default_num_partitions=config.num_partitions,
            default_replication_factor=config.default_replication_factor,
            clock=wall_clock_ms,
            cluster_id=self.cluster_id,
            channel=channel,
            broker_session_timeout_ms=config.broker_session_timeout_ms,
            unclean_leader_election_enable=config.unclean_leader_election_enable,
            auto_leader_rebalance_enable=config.auto_leader_rebalance_enable,
            leader_imbalance_check_interval_ms=(
                config.leader_imbalance_check_interval_seconds * 1000
            ),
        )
        controller.snapshot_policy = SnapshotPolicy(
            config.metadata_log_max_record_bytes_between_snapshots,
            config.metadata_log_max_snapshot_interval_ms,
        )
        driver.add_listener(controller)
        replica_manager = ReplicaManager(
            log_manager,
            node_id=config.node_id,
            log_config_for=log_config_for,
            clock=wall_clock_ms,
            replica_lag_time_max_ms=config.replica_lag_time_max_ms,
            min_insync_replicas=config.min_insync_replicas,
            controller_channel=channel,
        )
        controller.add_listener(replica_manager.on_metadata_update)
        fetcher_manager = ReplicaFetcherManager(
            replica_manager,
            ReplicaFetcherConfig(
                fetch_max_bytes=config.replica_fetch_max_bytes,
                fetch_response_max_bytes=config.replica_fetch_response_max_bytes,
                fetch_wait_max_ms=config.replica_fetch_wait_max_ms,
                fetch_backoff_ms=config.replica_fetch_backoff_ms,
            ),
            wall_clock_ms,
        )
        self._services.update(
            controller=controller,
            controller_channel=channel,
            raft=driver,
            replica_manager=replica_manager,
            replica_fetcher_manager=fetcher_manager,
            log_manager=log_manager,
        )
        group_coordinator = build_group_coordinator(self, controller, replica_manager)
        self._services["group_coordinator"] = group_coordinator
        producer_id_manager = ProducerIdManager(controller)
        self._services["producer_id_manager"] = producer_id_manager
        transaction_coordinator = build_transaction_coordinator(
            self, controller, replica_manager, group_coordinator, producer_id_manager
        )
        self._services["transaction_coordinator"] = transaction_coordinator

        handler = self._connection_handler(Dispatcher(self, trace=config.pykbroker_trace_requests))
        controller_handler = self._connection_handler(
            Dispatcher(
                self,
                trace=config.pykbroker_trace_requests,
                handlers=CONTROLLER_HANDLERS,
                supported=CONTROLLER_SUPPORTED,
            )
        )
        try:
            async with trio.open_nursery() as background:
                await self._start_storage_tasks(background, log_manager)
                # ISR expiration, AlterPartition and the replica fetchers (Kafka's
                # ReplicaManager.startup).
                await background.start(replica_manager.run)
                await background.start(fetcher_manager.run)
                async with trio.open_nursery() as connections:
                    controller_scope = trio.CancelScope()
                    broker_scope = trio.CancelScope()

                    async def serve(
                        scope: trio.CancelScope,
                        serving: ConnectionHandler,
                        sockets: list[trio.SocketListener],
                    ) -> None:
                        with scope:
                            await trio.serve_listeners(
                                serving, sockets, handler_nursery=connections
                            )

                    if controller_sockets:
                        connections.start_soon(
                            serve, controller_scope, controller_handler, controller_sockets
                        )
                    await background.start(driver.run)
                    is_broker = "broker" in config.process_roles
                    if not is_broker or await self._register(controller):
                        await background.start(
                            functools.partial(
                                controller.run_broker_lifecycle,
                                config.broker_heartbeat_interval_ms,
                                heartbeat=is_broker,
                            )
                        )
                        if is_broker:
                            await background.start(group_coordinator.run)
                            await background.start(transaction_coordinator.run)
                            connections.start_soon(serve, broker_scope, handler, broker_sockets)
                        log.info(
                            "pykbroker started (node.id=%d, cluster.id=%s), listening on %s",
                            config.node_id,
                            self.cluster_id,
                            ", ".join(str(b) for b in self.bound),
                        )
                        task_status.started(self)
                        await self._shutdown.wait()
                        if is_broker:
                            await self._controlled_shutdown(controller)
                    log.info("shutting down: no longer accepting connections")
                    broker_scope.cancel()
                    for listener in broker_sockets:
                        await listener.aclose()
                    self.shutting_down.set()
                    replica_manager.shutting_down.set()
                    replica_manager.wake_fetchers()
                    with trio.move_on_after(config.controlled_shutdown_timeout_ms / 1000):
                        while handler.in_flight:  # noqa: ASYNC110 - a bounded drain poll
                            await trio.sleep(0.01)
                    await self._resign(driver)
                    controller_scope.cancel()
                    for listener in controller_sockets:
                        await listener.aclose()
                    connections.cancel_scope.cancel()
                background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await channel.aclose()

    async def _register(self, controller: QuorumController) -> bool:
        """Register with the active controller, retrying (as Kafka's broker lifecycle manager)
        until it succeeds (True) or a shutdown is requested first (False)."""
        adv = self._advertised()
        log.info("waiting for the metadata quorum to register node %d", self.config.node_id)
        while not self._shutdown.is_set():  # until registered or shut down
            with trio.move_on_after(_REGISTRATION_TIMEOUT_S) as attempt:
                try:
                    await controller.register_broker(adv.host, adv.port, self.config.broker_rack)
                    return True
                except KafkaError as exc:
                    log.warning("broker registration failed (%s), retrying", exc)
            if attempt.cancelled_caught:
                log.warning("broker registration not done yet, retrying")
            with trio.move_on_after(_REGISTRATION_RETRY_S):
                await self._shutdown.wait()
        return False

    async def _controlled_shutdown(self, controller: QuorumController) -> None:
        """KIP-631, as Kafka's ``BrokerServer.shutdown``: still serving, ask the controller to
        move this broker's leaderships away and wait for its go, bounded by
        ``controlled.shutdown.timeout.ms`` (then shut down anyway)."""
        config = self.config
        with trio.move_on_after(config.controlled_shutdown_timeout_ms / 1000) as attempt:
            await controller.controlled_shutdown(config.broker_heartbeat_interval_ms)
        if attempt.cancelled_caught:
            log.error("timed out waiting for the controller to approve controlled shutdown")

    async def _resign(self, driver: RaftDriver) -> None:
        """A leader that shuts down tells the voters (EndQuorumEpoch), so one of them takes over
        at once instead of after an election timeout (as Kafka's graceful shutdown)."""
        if not driver.is_leader or len(driver.voters) < 2:
            return
        try:
            driver.resign()
        except NotLeaderError:
            return
        with trio.move_on_after(_RESIGN_GRACE_S):
            while driver.leader_and_epoch.leader_id == self.config.node_id:  # noqa: ASYNC110
                await trio.sleep(0.01)

    def _connection_handler(self, dispatcher: Dispatcher) -> ConnectionHandler:
        config = self.config
        return ConnectionHandler(
            dispatcher,
            max_frame_bytes=config.socket_request_max_bytes,
            idle_timeout_s=(
                config.connections_max_idle_ms / 1000
                if config.connections_max_idle_ms > 0
                else None
            ),
            shutting_down=self.shutting_down,
            max_connections=config.max_connections,
            max_connections_per_ip=config.max_connections_per_ip,
        )

    async def _start_storage_tasks(self, background: trio.Nursery, log_manager: LogManager) -> None:
        """Retention, flushing, checkpoints and compaction, as Kafka's LogManager schedules."""
        config = self.config
        flusher = FlushCoordinator(clock=wall_clock_ms)
        self._services["flush_coordinator"] = flusher
        await background.start(
            retention_loop, log_manager, config.log_retention_check_interval_ms, wall_clock_ms
        )
        await background.start(
            flush_loop,
            log_manager,
            flusher,
            min(config.log_flush_scheduler_interval_ms, 1000),
            wall_clock_ms,
        )
        await background.start(
            checkpoint_loop,
            log_manager,
            config.log_flush_offset_checkpoint_interval_ms,
            config.log_flush_start_offset_checkpoint_interval_ms,
        )
        if config.log_cleaner_enable:
            cleaner = LogCleaner(
                log_manager.retained_logs,
                dedupe_buffer_size=config.log_cleaner_dedupe_buffer_size,
            )
            await background.start(
                cleaner_loop, cleaner, config.log_cleaner_backoff_ms, wall_clock_ms
            )

    async def _open_listeners(
        self,
    ) -> tuple[list[trio.SocketListener], list[trio.SocketListener]]:
        """Bind every listener: (CONTROLLER listener sockets, broker listener sockets)."""
        controller_sockets: list[trio.SocketListener] = []
        broker_sockets: list[trio.SocketListener] = []
        for listener in self.config.listeners:
            # A lone listener of a broker serves clients whatever its name (single-node setups).
            is_controller = listener.name in self.config.controller_listener_names and (
                len(self.config.listeners) > 1 or "broker" not in self.config.process_roles
            )
            host = listener.host or None
            try:
                socket_listeners = await trio.open_tcp_listeners(listener.port, host=host)
            except OSError as exc:
                for opened in controller_sockets + broker_sockets:
                    await opened.aclose()
                raise ListenerError(
                    f"cannot bind listener {listener}: {exc.strerror or exc}"
                ) from exc
            port = socket_listeners[0].socket.getsockname()[1]
            self.bound.append(Listener(listener.name, listener.host, port))
            (controller_sockets if is_controller else broker_sockets).extend(socket_listeners)
        return controller_sockets, broker_sockets

    def _advertised(self) -> Endpoint:
        names = self.config.controller_listener_names
        bound = {b.name: b for b in self.bound if b.name not in names or len(self.bound) == 1}
        chosen = None
        for adv in self.config.advertised:
            if adv.name in bound:
                port = adv.port or bound[adv.name].port
                host = adv.host or bound[adv.name].host or "localhost"
                chosen = Endpoint(self.config.node_id, host, port)
                break
        if chosen is None:
            first = next(iter(bound.values()))
            chosen = Endpoint(self.config.node_id, first.host or "localhost", first.port)
        self._endpoint = chosen
        return chosen
