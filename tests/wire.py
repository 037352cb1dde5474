"""A minimal Kafka wire client for tests: encodes requests with pykbroker's codec."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import trio

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.header import (
    encode_request_header,
    response_header_version,
)
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message


def encode_request(
    api_key: int, version: int, body: dict[str, Any], correlation_id: int, client_id: str = "test"
) -> bytes:
    payload = encode_request_header(api_key, version, correlation_id, client_id)
    payload += codec.encode(request_message(api_key), version, body)
    return struct.pack(">i", len(payload)) + payload


class WireClient:
    """One connection; requests are answered in order."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, bootstrap: str) -> WireClient:
        host, port = bootstrap.rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive_frame(self) -> bytes | None:
        """The next response frame, or None when the broker closed the connection."""
        while True:
            if len(self._buffer) >= 4:
                size = struct.unpack_from(">i", self._buffer)[0]
                if len(self._buffer) >= 4 + size:
                    frame = bytes(self._buffer[4 : 4 + size])
                    del self._buffer[: 4 + size]
                    return frame
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self._buffer += data

    async def send(self, api_key: int, version: int, body: dict[str, Any]) -> int:
        correlation_id = next(self._ids)
        await self.send_raw(encode_request(api_key, version, body, correlation_id))
        return correlation_id

    async def receive(self, api_key: int, version: int, correlation_id: int) -> dict[str, Any]:
        frame = await self.receive_frame()
        assert frame is not None, "the broker closed the connection"
        header, offset = codec.decode_prefix(
            RESPONSE_HEADER, response_header_version(api_key, version), frame
        )
        assert header["correlation_id"] == correlation_id
        return codec.decode(response_message(api_key), version, frame[offset:])

    async def request(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        correlation_id = await self.send(api_key, version, body)
        return await self.receive(api_key, version, correlation_id)
