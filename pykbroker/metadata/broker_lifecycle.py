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
after the same changes as a fencing. Not implemented: controlled shutdown (``want_shut_down``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from . import schemas
from .controller_base import METADATA_VERSION, RETRY_BACKOFF_S, ControllerBase
from .image import MetadataImage
from .leader_election import broker_fenced_changes, broker_unfenced_changes
from .records import MetadataRecord, record

log = logging.getLogger(__name__)


class BrokerLifecycleControl(ControllerBase):
    """Broker registrations, heartbeats and fencing."""

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
        await self._commit(records, deadline)
        log.info("registered broker %d (epoch %d)", broker_id, epoch)
        return epoch

    async def heartbeat(self, *, reregister: bool = True) -> bool:
        """Send this broker's heartbeat to the active controller; True if it is fenced. With
        ``reregister``, a controller that no longer knows this incarnation gets a new
        registration."""
        deadline = trio.current_time() + self.broker_session_timeout_ms / 2000
        if await self._await_active(deadline):
            error, fenced = await self.handle_broker_heartbeat(
                self.node_id, self.broker_epoch, current_metadata_offset=self._applied_end - 1
            )
        else:
            body = {
                "broker_id": self.node_id,
                "broker_epoch": self.broker_epoch,
                "current_metadata_offset": self._applied_end - 1,
                "want_fence": False,
                "want_shut_down": False,
                "offline_log_dirs": [],
            }
            response = await self._forward(
                ApiKey.BROKER_HEARTBEAT, 1, body, deadline, lambda r: [r["error_code"]]
            )
            error, fenced = ErrorCode(response["error_code"]), bool(response["is_fenced"])
        if reregister and error in (
            ErrorCode.STALE_BROKER_EPOCH,
            ErrorCode.BROKER_ID_NOT_REGISTERED,
        ):
            reg = self.image.brokers.get(self.node_id)
            if reg is not None:
                log.warning("heartbeat rejected (%s): registering again", error.name)
                await self.register_broker(reg.host, reg.port, reg.rack)
        return fenced

    async def handle_broker_heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        want_fence: bool = False,
        current_metadata_offset: int = -1,
    ) -> tuple[ErrorCode, bool]:
        """Active controller: note the heartbeat; unfence a fenced broker once it has replayed
        the metadata up to its own registration; (error, is_fenced). ``want_fence`` keeps it
        fenced (controlled shutdown itself is not implemented)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return ErrorCode.NOT_CONTROLLER, True
        reg = self._validation_image().brokers.get(broker_id)
        if reg is None:
            return ErrorCode.BROKER_ID_NOT_REGISTERED, True
        if reg.epoch != broker_epoch:
            return ErrorCode.STALE_BROKER_EPOCH, True
        self._heartbeats[broker_id] = self._clock()
        if not reg.fenced:
            return ErrorCode.NO_ERROR, False
        if want_fence or current_metadata_offset < reg.epoch:
            return ErrorCode.NO_ERROR, True  # not caught up yet
        if reg.fenced:
            image = self._validation_image()
            await self._commit(
                [
                    record(schemas.UNFENCE_BROKER_RECORD, id=broker_id, epoch=broker_epoch),
                    *broker_unfenced_changes(image, broker_id, self.unclean_leader_election_enable),
                ],
                deadline,
            )
            log.info("unfenced broker %d", broker_id)
        return ErrorCode.NO_ERROR, False

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
