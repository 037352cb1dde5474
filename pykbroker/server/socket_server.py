"""The network layer: trio listeners, one task per connection, requests answered in order.

Mirrors Kafka's ``SocketServer``: frames are read with a size limit checked before any
allocation (``socket.request.max.bytes``); requests of one connection are processed one after
another, in order (Kafka mutes a channel while its request is in flight), and the responses
that are ready together are written together in one ``send_all``. Before a request that may
wait (a long-poll Fetch, JoinGroup, SyncGroup) the responses already made are sent first.
Idle connections close after ``connections.max.idle.ms``. A connection beyond
``max.connections`` (all clients) or ``max.connections.per.ip`` is closed as soon as it is
accepted, with a log line, so excess connections never pile up. Nothing a peer sends can take
the server down: every failure ends at most that one connection, with a log line.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Any

import trio

from pykbroker.api.dispatch import CloseConnection, Dispatcher
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.framing import FrameBuffer

log = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536
_MAY_WAIT = frozenset({ApiKey.FETCH, ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP})
_ids = itertools.count(1)


class ConnectionHandler:
    """Serves one client connection."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        max_frame_bytes: int,
        idle_timeout_s: float | None,
        shutting_down: trio.Event,
        max_connections: int = 2**31 - 1,
        max_connections_per_ip: int = 2**31 - 1,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout_s = idle_timeout_s
        self.shutting_down = shutting_down
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.in_flight = 0
        self.connections = 0
        self.per_ip: Counter[str] = Counter()

    async def __call__(self, stream: trio.SocketStream) -> None:
        connection_id = f"conn-{next(_ids)}"
        try:
            peer = stream.socket.getpeername()
            client_host = str(peer[0])
        except OSError:
            client_host = "?"
        if self.per_ip[client_host] >= self.max_connections_per_ip:
            log.warning(
                "closing connection %s from %s: max.connections.per.ip=%d reached",
                connection_id,
                client_host,
                self.max_connections_per_ip,
            )
            await stream.aclose()
            return
        if self.connections >= self.max_connections:
            # Kafka's Acceptor stops taking connections at max.connections; a trio listener
            # has already accepted this one, so it is closed at once instead of parked.
            log.warning(
                "closing connection %s from %s: max.connections=%d reached",
                connection_id,
                client_host,
                self.max_connections,
            )
            await stream.aclose()
            return
        self.per_ip[client_host] += 1
        self.connections += 1
        try:
            await self._serve(stream, client_host, connection_id)
        except CloseConnection as exc:
            log.warning("closing connection %s from %s: %s", connection_id, client_host, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
            log.debug("connection %s from %s ended: %s", connection_id, client_host, exc)
        except Exception:
            log.exception("connection %s from %s failed", connection_id, client_host)
        finally:
            self.connections -= 1
            self.per_ip[client_host] -= 1
            if not self.per_ip[client_host]:
                del self.per_ip[client_host]
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _serve(self, stream: trio.SocketStream, client_host: str, connection_id: str) -> None:
        frames = FrameBuffer(self.max_frame_bytes)
        pending: list[bytes] = []
        while not self.shutting_down.is_set():
            data = await self._receive(stream, connection_id)
            if not data:
                return
            frames.receive_data(data)
            self.in_flight += 1
            try:
                await self._process(stream, frames, pending, client_host, connection_id)
            finally:
                self.in_flight -= 1

    async def _process(
        self,
        stream: trio.SocketStream,
        frames: FrameBuffer,
        pending: list[bytes],
        client_host: str,
        connection_id: str,
    ) -> None:
        """Answer every complete frame received so far; send the responses together."""
        while not self.shutting_down.is_set():
            try:
                frame = frames.next_frame()
            except CodecError as exc:
                raise CloseConnection(str(exc)) from exc
            if frame is None:
                break
            parsed = self.dispatcher.parse(frame)
            if isinstance(parsed, bytes):
                pending.append(parsed)
                continue
            header, request = parsed
            if pending and header.request_api_key in _MAY_WAIT:
                await self._send(stream, pending)
            response = await self.dispatcher.handle(header, request, client_host, connection_id)
            if response is not None:
                pending.append(response)
        if pending:
            await self._send(stream, pending)

    async def _receive(self, stream: trio.SocketStream, connection_id: str) -> bytes:
        if self.idle_timeout_s is None:
            return await stream.receive_some(_RECEIVE_SIZE)
        with trio.move_on_after(self.idle_timeout_s):
            return await stream.receive_some(_RECEIVE_SIZE)
        log.info("closing idle connection %s (connections.max.idle.ms)", connection_id)
        return b""

    @staticmethod
    async def _send(stream: trio.SocketStream, pending: list[Any]) -> None:
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        await stream.send_all(data)
