"""ControllerChannel: a broker's requests to the active controller (Kafka's
``NodeToControllerChannelManager``).

The active controller is the Raft leader; its address is its entry in
``controller.quorum.voters`` (the CONTROLLER listener). ``send`` waits for a leader to be known,
sends over a ``NodeConnection`` to it, and on a network failure retries (with a short backoff)
until the caller's deadline, then raises ``KafkaError(REQUEST_TIMED_OUT)``. Answers are
returned as decoded; retrying on NOT_CONTROLLER is the caller's (``QuorumController._forward``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from .network_client import NodeConnection, NodeUnavailable
from .raft_driver import RaftDriver

log = logging.getLogger(__name__)

_RETRY_BACKOFF_S = 0.05


class ControllerChannel:
    """Requests to whichever voter currently leads the quorum."""

    def __init__(self, driver: RaftDriver, *, node_id: int) -> None:
        self.driver = driver
        self.node_id = node_id
        self._connections: dict[int, NodeConnection] = {}

    def _connection(self, leader_id: int) -> NodeConnection | None:
        endpoint = self.driver.voters.get(leader_id)
        if endpoint is None or endpoint.port < 0:
            return None
        connection = self._connections.get(leader_id)
        if connection is None:
            connection = NodeConnection(
                endpoint.host, endpoint.port, client_id=f"broker-{self.node_id}-to-controller"
            )
            self._connections[leader_id] = connection
        return connection

    async def send(
        self, api_key: int, version: int, body: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        while True:  # bounded by the deadline
            leader_id = self.driver.leader_and_epoch.leader_id
            connection = self._connection(leader_id) if leader_id >= 0 else None
            if connection is not None:
                try:
                    with trio.move_on_at(deadline):
                        return await connection.request(api_key, version, body)
                except NodeUnavailable as exc:
                    log.debug("controller %d unreachable: %s", leader_id, exc)
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "no controller answered in time")
            await trio.sleep(_RETRY_BACKOFF_S)

    async def aclose(self) -> None:
        for connection in self._connections.values():
            await connection.aclose()
        self._connections.clear()
