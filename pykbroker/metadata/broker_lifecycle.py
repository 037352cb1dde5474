"""Broker registration, heartbeats and fencing on the controller (Kafka's
``ClusterControlManager`` / ``BrokerHeartbeatManager``) and this node's own broker lifecycle
(Kafka's ``BrokerLifecycleManager``).

A broker registers fenced (a ``RegisterBrokerRecord``; its offset is the broker epoch) and is
unfenced by its first heartbeat after it replayed its own registration. The active controller
fences a broker whose last heartbeat is older than ``broker.session.timeout.ms``. Fencing, and
a registration of a new incarnation while the old one still held partitions, move leadership
and shrink ISRs (``leader_election.broker_fenced_changes``, written before the fence); an
unfencing gives leaderless partitions a leader (``broker_unfenced_changes``, written after the
UnfenceBrokerRecord). UnregisterBroker removes a registration (``UnregisterBrokerRecord``)
after the same changes as a fencing.

Controlled shutdown (KIP-631; Kafka's ``BrokerHeartbeatManager.calculateNextBrokerState`` and
``BrokerLifecycleManager.beginControlledShutdown``): a stopping broker heartbeats with
``want_shut_down``. An unfenced broker that leads partitions enters CONTROLLED_SHUTDOWN: a
BrokerRegistrationChangeRecord (``in_controlled_shutdown``) then the changes of
``broker_controlled_shutdown_changes`` (out of every ISR unless the last member, leadership to
another active ISR member, else -1). It stays unfenced and is answered ``should_shut_down=false``
until it leads nothing and every unfenced broker (itself included) reported a metadata offset at
or past that batch; then SHUTDOWN_NOW: it is fenced and told ``should_shut_down=true``. A broker
leading nothing, or fenced, is granted SHUTDOWN_NOW at once (fenced if it was not). A new
registration of the broker clears the state. The controller keeps the shutdown offsets in memory,
as Kafka's heartbeat manager does; a new active controller starts again from the registration.
The stopping broker (``controlled_shutdown``) skips it when no other broker is active in its
image (pykbroker's shortcut for a cluster's last broker, which Kafka makes wait its deadline).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from . import schemas
from .controller_base import METADATA_VERSION, RETRY_BACKOFF_S, ControllerBase
from .image import MetadataImage
from .leader_election import (
    broker_controlled_shutdown_changes,
    broker_fenced_changes,
    broker_unfenced_changes,
    has_leaderships,
)
from .records import MetadataRecord, record

log = logging.getLogger(__name__)

#: The BrokerHeartbeat version used to forward to the active controller.
BROKER_HEARTBEAT_VERSION = 1
#: Kafka's BrokerLifecycleManager: the heartbeat after the first "not yet" comes this soon.
_FIRST_SHUTDOWN_RETRY_S = 0.05
_SHUTDOWN_ERROR_BACKOFF_S = 0.1


class BrokerControlState(enum.Enum):
    """A broker as the controller's heartbeat manager sees it (Kafka's ``BrokerControlState``)."""

    FENCED = "fenced"
    UNFENCED = "unfenced"
    CONTROLLED_SHUTDOWN = "controlled_shutdown"
    SHUTDOWN_NOW = "shutdown_now"

    @property
    def fenced(self) -> bool:
        return self in (BrokerControlState.FENCED, BrokerControlState.SHUTDOWN_NOW)


@dataclass(frozen=True, slots=True)
class BrokerHeartbeatReply:
    """The controller's answer to a BrokerHeartbeat (Kafka's ``BrokerHeartbeatReply``)."""

    error: ErrorCode
    is_caught_up: bool = False
    is_fenced: bool = True
    in_controlled_shutdown: bool = False
    should_shut_down: bool = False


class BrokerLifecycleControl(ControllerBase):
    """Broker registrations, heartbeats, fencing and controlled shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Active controller: the metadata offset each broker last reported.
        self._metadata_offsets: dict[int, int] = {}
        #: Active controller: broker -> (broker epoch, offset of the batch that put it in
        #: controlled shutdown) (Kafka's ``BrokerHeartbeatState.controlledShutdownOffset``).
        self._controlled_shutdown_offsets: dict[int, tuple[int, int]] = {}
        #: This broker is shutting down: its heartbeats carry ``want_shut_down``.
        self.want_shut_down = False

    def _broker_features(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "metadata.version",
                "min_supported_version": 7,
                "max_supported_version": METADATA_VERSION,
            }
        ]

    async def register_broker(
        self, host: str, port: int, rack: str | None, listener_name: str = "PLAINTEXT"
    ) -> int:
        """Register this broker (a new incarnation each start) with the active controller and
        wait until the registration is in the local image; return the broker epoch."""
        deadline = self._deadline()
        listeners = [{"name": listener_name, "host": host, "port": port, "security_protocol": 0}]
        if await self._await_active(deadline):
            epoch = await self.handle_broker_registration(
                self.node_id, self.cluster_id, self.incarnation_id, listeners, rack
            )
        else:
            body = {
                "broker_id": self.node_id,
                "cluster_id": self.cluster_id,
                "incarnation_id": self.incarnation_id,
                "listeners": listeners,
                "features": self._broker_features(),
                "rack": rack,
                "is_migrating_zk_broker": False,
                "log_dirs": [],
                "previous_broker_epoch": self.broker_epoch,
            }
            response = await self._forward(
                ApiKey.BROKER_REGISTRATION, 4, body, deadline, lambda r: [r["error_code"]]
            )
            if response["error_code"]:
                raise KafkaError(ErrorCode(response["error_code"]), "broker registration failed")
            epoch = response["broker_epoch"]
        self.broker_epoch = epoch

        def registered(image: MetadataImage) -> bool:
            reg = image.brokers.get(self.node_id)
            return reg is not None and reg.incarnation_id == self.incarnation_id

        if not await self._await_image(registered, deadline):
            raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "registration not replicated in time")
        # Registered fenced; caught up (it replayed its own registration): heartbeat until the
        # controller unfences it, as Kafka's BrokerLifecycleManager does before serving.
        while self.image.brokers[self.node_id].fenced:  # bounded by the deadline
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "not unfenced in time")
            if not await self.heartbeat(reregister=False):
                await self._await_image(
                    lambda image: not image.brokers[self.node_id].fenced, deadline
                )
            else:
                await trio.sleep(RETRY_BACKOFF_S)
        return epoch

    async def handle_broker_registration(
        self,
        broker_id: int,
        cluster_id: str,
        incarnation_id: uuid.UUID,
        listeners: Sequence[dict[str, Any]],
        rack: str | None,
    ) -> int:
        """Active controller: write a RegisterBrokerRecord; return the new broker epoch."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        if self.cluster_id and cluster_id != self.cluster_id:
            raise KafkaError(
                ErrorCode.INCONSISTENT_CLUSTER_ID,
                f"cluster id {cluster_id!r} is not {self.cluster_id!r}",
            )
        existing = self._validation_image().brokers.get(broker_id)
        if existing is not None and existing.incarnation_id == incarnation_id:
            return existing.epoch  # a retried registration
        image = self._validation_image()
        records: list[MetadataRecord] = []
        if "metadata.version" not in image.features:
            records.append(
                record(
                    schemas.FEATURE_LEVEL_RECORD,
                    name="metadata.version",
                    feature_level=METADATA_VERSION,
                )
            )
        if existing is not None:
            # A new incarnation of a broker that may still lead partitions (a quick restart,
            # never fenced): it may have lost unflushed data, so it is treated as fenced --
            # out of the ISRs (unless the last member) and no longer leader -- until it is
            # unfenced and the leaders take it back into their ISRs.
            records.extend(
                broker_fenced_changes(image, broker_id, self.unclean_leader_election_enable)
            )
        epoch = self.metadata_log.end_offset + len(records)
        records.append(
            record(
                schemas.REGISTER_BROKER_RECORD,
                broker_id=broker_id,
                incarnation_id=incarnation_id,
                broker_epoch=epoch,
                end_points=[dict(listener) for listener in listeners],
                features=[],
                rack=rack,
                # Fenced until its first heartbeat after catching up (Kafka's way).
                fenced=True,
            )
        )
        self._heartbeats[broker_id] = self._clock()
        self._controlled_shutdown_offsets.pop(broker_id, None)
        await self._commit(records, deadline)
        log.info("registered broker %d (epoch %d)", broker_id, epoch)
        return epoch

    async def heartbeat(self, *, reregister: bool = True) -> bool:
        """Send this broker's heartbeat to the active controller; True if it is fenced. With
        ``reregister``, a controller that no longer knows this incarnation gets a new
        registration (not while shutting down)."""
        reply = await self._send_heartbeat()
        if (
            reregister
            and not self.want_shut_down
            and reply.error in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED)
        ):
            reg = self.image.brokers.get(self.node_id)
            if reg is not None:
                log.warning("heartbeat rejected (%s): registering again", reply.error.name)
                await self.register_broker(reg.host, reg.port, reg.rack)
        return reply.is_fenced

    async def _send_heartbeat(self) -> BrokerHeartbeatReply:
        """One heartbeat of this broker, with ``want_shut_down`` once it is shutting down;
        ``KafkaError`` when no controller answered in time."""
        deadline = trio.current_time() + self.broker_session_timeout_ms / 2000
        offset = self._applied_end - 1
        if await self._await_active(deadline):
            return await self.handle_broker_heartbeat_request(
                self.node_id,
                self.broker_epoch,
                current_metadata_offset=offset,
                want_shut_down=self.want_shut_down,
            )
        body = {
            "broker_id": self.node_id,
            "broker_epoch": self.broker_epoch,
            "current_metadata_offset": offset,
            "want_fence": False,
            "want_shut_down": self.want_shut_down,
            "offline_log_dirs": [],
        }
        response = await self._forward(
            ApiKey.BROKER_HEARTBEAT,
            BROKER_HEARTBEAT_VERSION,
            body,
            deadline,
            lambda r: [r["error_code"]],
        )
        return BrokerHeartbeatReply(
            ErrorCode(response["error_code"]),
            is_caught_up=bool(response["is_caught_up"]),
            is_fenced=bool(response["is_fenced"]),
            should_shut_down=bool(response["should_shut_down"]),
        )

    async def controlled_shutdown(self, heartbeat_interval_ms: int) -> bool:
        """This broker's controlled shutdown (Kafka's ``beginControlledShutdown``): heartbeat
        with ``want_shut_down`` -- the first retry after 50 ms, then every
        ``broker.heartbeat.interval.ms``, failures retried -- until the controller answers
        ``should_shut_down``: True. False if the controller no longer knows this broker. Never
        gives up otherwise: the caller bounds it with a timeout (Kafka's shutdown deadline)."""
        self.want_shut_down = True
        if not any(b != self.node_id and reg.is_active for b, reg in self.image.brokers.items()):
            # pykbroker's shortcut: no other broker could take a leadership (the last broker of
            # a cluster, whose quorum may be gone too); Kafka would wait for its deadline.
            log.info("no other live broker: no controlled shutdown of broker %d", self.node_id)
            return False
        log.info("beginning controlled shutdown of broker %d", self.node_id)
        first = True
        while True:  # until granted; the caller's timeout bounds it
            try:
                reply = await self._send_heartbeat()
            except KafkaError as exc:
                log.info("controlled shutdown heartbeat failed: %s", exc)
                await trio.sleep(_SHUTDOWN_ERROR_BACKOFF_S)
                continue
            if reply.error in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED):
                log.warning("controlled shutdown refused: %s", reply.error.name)
                return False
            if reply.error == ErrorCode.NO_ERROR and reply.should_shut_down:
                log.info(
                    "the controller granted the controlled shutdown of broker %d", self.node_id
                )
                return True
            if reply.error != ErrorCode.NO_ERROR:
                await trio.sleep(_SHUTDOWN_ERROR_BACKOFF_S)
                continue
            log.info("controlled shutdown: still waiting for the active controller")
            await trio.sleep(_FIRST_SHUTDOWN_RETRY_S if first else heartbeat_interval_ms / 1000)
            first = False

    async def handle_broker_heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        want_fence: bool = False,
        current_metadata_offset: int = -1,
        want_shut_down: bool = False,
    ) -> tuple[ErrorCode, bool]:
        """Active controller: ``handle_broker_heartbeat_request`` as (error, is_fenced)."""
        reply = await self.handle_broker_heartbeat_request(
            broker_id,
            broker_epoch,
            want_fence=want_fence,
            current_metadata_offset=current_metadata_offset,
            want_shut_down=want_shut_down,
        )
        return reply.error, reply.is_fenced

    async def broker_heartbeat_response(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Active controller: a BrokerHeartbeat request body -> the response body."""
        try:
            reply = await self.handle_broker_heartbeat_request(
                request["broker_id"],
                request["broker_epoch"],
                want_fence=request["want_fence"],
                current_metadata_offset=request["current_metadata_offset"],
                want_shut_down=request["want_shut_down"],
            )
        except KafkaError as exc:
            reply = BrokerHeartbeatReply(exc.code)
        return {
            "throttle_time_ms": 0,
            "error_code": reply.error,
            "is_caught_up": reply.is_caught_up,
            "is_fenced": reply.is_fenced,
            "should_shut_down": reply.should_shut_down,
        }

    async def handle_broker_heartbeat_request(
        self,
        broker_id: int,
        broker_epoch: int,
        *,
        want_fence: bool = False,
        current_metadata_offset: int = -1,
        want_shut_down: bool = False,
    ) -> BrokerHeartbeatReply:
        """Active controller: note the heartbeat and move the broker to its next state (Kafka's
        ``ReplicationControlManager.processBrokerHeartbeat``): unfence a fenced broker once it
        has replayed the metadata up to its own registration; fence it on ``want_fence``;
        controlled shutdown on ``want_shut_down`` (see the module docstring)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return BrokerHeartbeatReply(ErrorCode.NOT_CONTROLLER)
        image = self._validation_image()
        reg = image.brokers.get(broker_id)
        if reg is None:
            return BrokerHeartbeatReply(ErrorCode.BROKER_ID_NOT_REGISTERED)
        if reg.epoch != broker_epoch:
            return BrokerHeartbeatReply(ErrorCode.STALE_BROKER_EPOCH)
        self._heartbeats[broker_id] = self._clock()
        self._metadata_offsets[broker_id] = current_metadata_offset
        shutdown = self._controlled_shutdown_offsets.get(broker_id)
        if shutdown is not None and shutdown[0] != reg.epoch:
            del self._controlled_shutdown_offsets[broker_id]
            shutdown = None
        if shutdown is not None and not reg.fenced:
            current = BrokerControlState.CONTROLLED_SHUTDOWN
        else:
            current = BrokerControlState.FENCED if reg.fenced else BrokerControlState.UNFENCED
        state = self._next_broker_state(
            current, image, broker_id, want_fence, want_shut_down, current_metadata_offset
        )
        records: list[MetadataRecord] = []
        if state is not current:
            records = self._transition_records(image, broker_id, state)
        if records:
            offset = await self._commit(records, deadline)
        else:
            offset = self.metadata_log.end_offset - 1
        if state is BrokerControlState.CONTROLLED_SHUTDOWN and shutdown is None:
            self._controlled_shutdown_offsets[broker_id] = (reg.epoch, offset)
            log.info("broker %d is in controlled shutdown (offset %d)", broker_id, offset)
        elif state is BrokerControlState.SHUTDOWN_NOW:
            self._controlled_shutdown_offsets.pop(broker_id, None)
            log.info("broker %d is granted its shutdown", broker_id)
        elif state is BrokerControlState.UNFENCED and current is BrokerControlState.FENCED:
            log.info("unfenced broker %d", broker_id)
        return BrokerHeartbeatReply(
            ErrorCode.NO_ERROR,
            is_caught_up=current_metadata_offset >= reg.epoch,
            is_fenced=state.fenced,
            in_controlled_shutdown=state is BrokerControlState.CONTROLLED_SHUTDOWN,
            should_shut_down=state is BrokerControlState.SHUTDOWN_NOW,
        )

    def _next_broker_state(
        self,
        current: BrokerControlState,
        image: MetadataImage,
        broker_id: int,
        want_fence: bool,
        want_shut_down: bool,
        current_metadata_offset: int,
    ) -> BrokerControlState:
        """Kafka's ``BrokerHeartbeatManager.calculateNextBrokerState``."""
        if current is BrokerControlState.FENCED:
            if want_shut_down:
                return BrokerControlState.SHUTDOWN_NOW
            if not want_fence and current_metadata_offset >= image.brokers[broker_id].epoch:
                return BrokerControlState.UNFENCED
            return BrokerControlState.FENCED
        if current is BrokerControlState.UNFENCED:
            if want_fence:
                return (
                    BrokerControlState.SHUTDOWN_NOW if want_shut_down else BrokerControlState.FENCED
                )
            if want_shut_down:
                if has_leaderships(image, broker_id):
                    return BrokerControlState.CONTROLLED_SHUTDOWN
                return BrokerControlState.SHUTDOWN_NOW
            return BrokerControlState.UNFENCED
        # CONTROLLED_SHUTDOWN: done once it leads nothing and every unfenced broker (itself
        # too) has replayed the batch that moved its leaderships away.
        if has_leaderships(image, broker_id):
            return BrokerControlState.CONTROLLED_SHUTDOWN
        _, shutdown_offset = self._controlled_shutdown_offsets[broker_id]
        if shutdown_offset <= self._lowest_active_offset(image):
            return BrokerControlState.SHUTDOWN_NOW
        return BrokerControlState.CONTROLLED_SHUTDOWN

    def _lowest_active_offset(self, image: MetadataImage) -> int:
        """The lowest metadata offset an unfenced broker reported (Kafka's
        ``lowestActiveOffset``); -1 for one that has not reported any yet."""
        return min(
            (
                self._metadata_offsets.get(b, -1)
                for b, reg in image.brokers.items()
                if not reg.fenced
            ),
            default=2**63 - 1,
        )

    def _transition_records(
        self, image: MetadataImage, broker_id: int, state: BrokerControlState
    ) -> list[MetadataRecord]:
        """The records of moving ``broker_id`` to ``state``, in Kafka's order."""
        reg = image.brokers[broker_id]
        unclean = self.unclean_leader_election_enable
        if state is BrokerControlState.UNFENCED:
            return [
                record(schemas.UNFENCE_BROKER_RECORD, id=broker_id, epoch=reg.epoch),
                *broker_unfenced_changes(image, broker_id, unclean),
            ]
        if state is BrokerControlState.CONTROLLED_SHUTDOWN:
            records: list[MetadataRecord] = []
            if not reg.in_controlled_shutdown:
                records.append(
                    record(
                        schemas.BROKER_REGISTRATION_CHANGE_RECORD,
                        broker_id=broker_id,
                        broker_epoch=reg.epoch,
                        fenced=0,
                        in_controlled_shutdown=1,
                        log_dirs=[],
                    )
                )
            image = image.apply(records)
            records.extend(broker_controlled_shutdown_changes(image, broker_id, unclean))
            return records
        if reg.fenced:  # FENCED / SHUTDOWN_NOW of a fenced broker: nothing to write
            return []
        return [
            *broker_fenced_changes(image, broker_id, unclean),
            record(schemas.FENCE_BROKER_RECORD, id=broker_id, epoch=reg.epoch),
        ]

    async def fence_expired_brokers(self) -> list[int]:
        """Active controller: fence brokers whose last heartbeat is older than
        ``broker.session.timeout.ms`` (Kafka's BrokerHeartbeatManager); the fenced ids."""
        if not self.is_active:
            return []
        now = self._clock()
        fenced: list[int] = []
        records: list[MetadataRecord] = []
        image = self._validation_image()
        for broker_id, reg in sorted(image.brokers.items()):
            last = self._heartbeats.setdefault(broker_id, now)
            if not reg.fenced and now - last > self.broker_session_timeout_ms:
                # Each broker's changes see the ones before (two brokers fenced at once).
                changes = broker_fenced_changes(
                    image, broker_id, self.unclean_leader_election_enable
                )
                changes.append(record(schemas.FENCE_BROKER_RECORD, id=broker_id, epoch=reg.epoch))
                image = image.apply(changes)
                records.extend(changes)
                fenced.append(broker_id)
        if records:
            log.info(
                "fencing brokers %s: no heartbeat for %d ms", fenced, self.broker_session_timeout_ms
            )
            await self._commit(records, self._deadline())
        return fenced

    async def unregister_broker(self, broker_id: int) -> None:
        """UnregisterBroker (an admin operation), forwarded (v0) when this node is not the
        active controller; ``KafkaError`` (BROKER_ID_NOT_REGISTERED, ...) on failure. Returns
        once this node's image no longer shows the registration it knew."""
        deadline = self._deadline()
        known = self.image.brokers.get(broker_id)
        if await self._await_active(deadline):
            await self.handle_unregister_broker(broker_id)
        else:
            response = await self._forward(
                ApiKey.UNREGISTER_BROKER,
                0,
                {"broker_id": broker_id},
                deadline,
                lambda r: [r["error_code"]],
            )
            if response["error_code"]:
                raise KafkaError(ErrorCode(response["error_code"]), response["error_message"])
        if known is not None:

            def gone(image: MetadataImage) -> bool:
                reg = image.brokers.get(broker_id)
                return reg is None or reg.epoch != known.epoch

            await self._await_image(gone, deadline)

    async def handle_unregister_broker(self, broker_id: int) -> None:
        """Active controller: the broker leaves every ISR it is in (unless the last member) and
        every leadership, then its registration is removed (Kafka's ``unregisterBroker``)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        image = self._validation_image()
        reg = image.brokers.get(broker_id)
        if reg is None:
            raise KafkaError(
                ErrorCode.BROKER_ID_NOT_REGISTERED,
                f"Broker ID {broker_id} is not currently registered",
            )
        records = broker_fenced_changes(image, broker_id, self.unclean_leader_election_enable)
        records.append(
            record(schemas.UNREGISTER_BROKER_RECORD, broker_id=broker_id, broker_epoch=reg.epoch)
        )
        self._heartbeats.pop(broker_id, None)
        await self._commit(records, deadline)
        log.info("unregistered broker %d (epoch %d)", broker_id, reg.epoch)
