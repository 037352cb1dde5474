"""BrokerServer: wires the components of one pykbroker process and owns its lifetime.

Start-up order (as Kafka's BrokerServer/ControllerServer): format or check the log dirs
(``meta.properties``), recover the partition logs, replay ``__cluster_metadata`` into the
metadata image, create the hosted partitions, load the group coordinator, open the listeners,
register this broker, then answer requests. Shutdown: stop accepting, let requests in flight
finish (bounded by ``controlled.shutdown.timeout.ms``), answer parked fetches, then flush and
close every log and write the clean-shutdown marker.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from pykbroker.api.context import Endpoint
from pykbroker.api.dispatch import Dispatcher
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
from pykbroker.metadata.image import MetadataImage
from pykbroker.metadata.metadata_log import METADATA_TOPIC, MetadataLog
from pykbroker.replication.replica_manager import ReplicaManager

from .group_wiring import build_group_coordinator
from .socket_server import ConnectionHandler
from .storage import ensure_formatted
from .txn_wiring import build_transaction_coordinator

log = logging.getLogger(__name__)

METADATA_LOG_CONFIG = LogConfig.from_properties({"segment.bytes": str(64 * 1024 * 1024)})


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


class BrokerServer:
    """One broker+controller process (a single-voter quorum for now)."""

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
        self.cluster_id = ensure_formatted(config.log_dirs, config.node_id)
        log_config_for = log_config_factory(config)
        log_manager = LogManager(
            list(config.log_dirs),
            log_config_for({}),
            producer_id_expiration_ms=config.producer_id_expiration_ms,
        )
        await trio.to_thread.run_sync(log_manager.startup, wall_clock_ms())
        metadata_log = MetadataLog(
            log_manager.get_or_create_log(METADATA_TOPIC, 0, METADATA_LOG_CONFIG, wall_clock_ms())
        )
        try:
            await self._serve(log_manager, metadata_log, log_config_for, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(log_manager.shutdown)
            log.info("logs flushed and closed")
            self.stopped.set()

    async def _serve(
        self,
        log_manager: LogManager,
        metadata_log: MetadataLog,
        log_config_for: Any,
        task_status: Any,
    ) -> None:
        config = self.config
        controller = QuorumController(
            metadata_log,
            node_id=config.node_id,
            default_num_partitions=config.num_partitions,
            default_replication_factor=config.default_replication_factor,
            clock=wall_clock_ms,
        )
        image = controller.load()
        replica_manager = ReplicaManager(
            log_manager, node_id=config.node_id, log_config_for=log_config_for, clock=wall_clock_ms
        )
        replica_manager.on_metadata_update(MetadataImage(), image)
        controller.add_listener(replica_manager.on_metadata_update)
        self._services.update(
            controller=controller,
            replica_manager=replica_manager,
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

        handler = ConnectionHandler(
            Dispatcher(self, trace=config.pykbroker_trace_requests),
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
        async with trio.open_nursery() as background:
            await self._start_storage_tasks(background, log_manager)
            await background.start(group_coordinator.run)
            await background.start(transaction_coordinator.run)
            listeners = await self._open_listeners()
            adv = self._advertised()
            await controller.register_broker(adv.host, adv.port, None)
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept() -> None:
                    with accept_scope:
                        await trio.serve_listeners(handler, listeners, handler_nursery=connections)

                connections.start_soon(accept)
                log.info(
                    "pykbroker started (node.id=%d, cluster.id=%s), listening on %s",
                    config.node_id,
                    self.cluster_id,
                    ", ".join(str(b) for b in self.bound),
                )
                task_status.started(self)
                await self._shutdown.wait()
                log.info("shutting down: no longer accepting connections")
                accept_scope.cancel()
                for listener in listeners:
                    await listener.aclose()
                self.shutting_down.set()
                replica_manager.shutting_down.set()
                replica_manager.wake_fetchers()
                with trio.move_on_after(config.controlled_shutdown_timeout_ms / 1000):
                    while handler.in_flight:  # noqa: ASYNC110 - a bounded drain poll
                        await trio.sleep(0.01)
                connections.cancel_scope.cancel()
            background.cancel_scope.cancel()

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

    async def _open_listeners(self) -> list[trio.SocketListener]:
        opened: list[trio.SocketListener] = []
        for listener in self.config.listeners:
            if listener.name in self.config.controller_listener_names and (
                len(self.config.listeners) > 1
            ):
                continue  # the controller listener serves the KRaft quorum (not wired yet)
            host = listener.host or None
            socket_listeners = await trio.open_tcp_listeners(listener.port, host=host)
            port = socket_listeners[0].socket.getsockname()[1]
            self.bound.append(Listener(listener.name, listener.host, port))
            opened.extend(socket_listeners)
        return opened

    def _advertised(self) -> Endpoint:
        bound = {b.name: b for b in self.bound}
        chosen = None
        for adv in self.config.advertised:
            if adv.name in bound:
                port = adv.port or bound[adv.name].port
                host = adv.host or bound[adv.name].host or "localhost"
                chosen = Endpoint(self.config.node_id, host, port)
                break
        if chosen is None:
            first = self.bound[0]
            chosen = Endpoint(self.config.node_id, first.host or "localhost", first.port)
        self._endpoint = chosen
        return chosen
