"""The broker's own Kafka client for talking to other nodes (Kafka's NetworkClient analogue).

One ``NodeConnection`` per remote node: requests are encoded with pykbroker's codec, sent with
increasing correlation ids, and answered in order on the same connection, as the protocol
guarantees. A broken connection fails the requests in flight with ``NodeUnavailable`` and is
re-opened on the next request after ``reconnect_backoff_ms``. Timeouts are the caller's cancel
scopes (trio's convention).
"""

from __future__ import annotations

import itertools
import logging
import struct
from typing import Any

import trio

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.framing import FrameBuffer
from pykbroker.api.protocol.header import encode_request_header, response_header_version
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
_MAX_RESPONSE_BYTES = 512 * 1024 * 1024


class NodeUnavailable(Exception):
    """The node could not be reached, or the connection broke before the answer came."""


class NodeConnection:
    """Requests to one node over one connection, one at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        reconnect_backoff_ms: int = 50,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.reconnect_backoff_s = reconnect_backoff_ms / 1000
        self.connect_timeout_s = connect_timeout_s
        self._stream: trio.SocketStream | None = None
        self._frames = FrameBuffer(_MAX_RESPONSE_BYTES)
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        self._next_attempt = 0.0

    async def _connect(self) -> trio.SocketStream:
        if self._stream is not None:
            return self._stream
        now = trio.current_time()
        if now < self._next_attempt:
            await trio.sleep(self._next_attempt - now)
        try:
            with trio.fail_after(self.connect_timeout_s):
                self._stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            self._next_attempt = trio.current_time() + self.reconnect_backoff_s
            raise NodeUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        self._frames = FrameBuffer(_MAX_RESPONSE_BYTES)
        return self._stream

    async def _broken(self, exc: BaseException) -> NodeUnavailable:
        stream, self._stream = self._stream, None
        self._next_attempt = trio.current_time() + self.reconnect_backoff_s
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        return NodeUnavailable(f"{self.host}:{self.port}: {exc}")

    async def request(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its decoded response."""
        async with self._lock:
            stream = await self._connect()
            correlation_id = next(self._ids) & 0x7FFFFFFF
            payload = encode_request_header(api_key, version, correlation_id, self.client_id)
            payload += codec.encode(request_message(api_key), version, body)
            try:
                await stream.send_all(_SIZE.pack(len(payload)) + payload)
                frame = await self._receive_frame(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise await self._broken(exc) from exc
            except trio.Cancelled:
                # The answer may still arrive later and would be read as the next one's.
                await self._broken(RuntimeError("request cancelled"))
                raise
            header, offset = codec.decode_prefix(
                RESPONSE_HEADER, response_header_version(api_key, version), frame
            )
            if header["correlation_id"] != correlation_id:
                raise await self._broken(
                    RuntimeError(f"correlation id {header['correlation_id']} != {correlation_id}")
                )
            response, _ = codec.decode_prefix(response_message(api_key), version, frame, offset)
            return response

    async def _receive_frame(self, stream: trio.SocketStream) -> bytes:
        while True:
            frame = self._frames.next_frame()
            if frame is not None:
                return frame
            data = await stream.receive_some(max(self._frames.bytes_wanted, 65536))
            if not data:
                raise trio.BrokenResourceError("connection closed by the peer")
            self._frames.receive_data(data)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
