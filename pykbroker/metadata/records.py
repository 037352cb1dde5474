"""Metadata records as Kafka writes them into ``__cluster_metadata``.

Mirrors ``MetadataRecordSerde``: each record value is an unsigned-varint frame version (1), the
record's API key and version (unsigned varints), then the record in its (flexible) encoding. The
record key is null. Pure: bytes in, ``MetadataRecord`` out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from typing import Any

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.primitives import read_uvarint, uvarint_bytes
from pykbroker.api.protocol.schema import Message

from . import schemas

FRAME_VERSION = 1


@dataclass(frozen=True, slots=True)
class MetadataRecord:
    """One decoded metadata record: its schema, version and fields."""

    message: Message
    version: int
    data: dict[str, Any]

    @property
    def api_key(self) -> int:
        assert self.message.api_key is not None
        return self.message.api_key

    @property
    def name(self) -> str:
        return self.message.name


@cache
def _by_api_key() -> dict[int, Message]:
    found: dict[int, Message] = {}
    for value in vars(schemas).values():
        if isinstance(value, Message) and value.api_key is not None:
            found[value.api_key] = value
    return found


def latest_version(message: Message) -> int:
    return message.valid.high if message.valid.high >= 0 else message.valid.low


def record(message: Message, **data: Any) -> MetadataRecord:
    """A record of ``message`` at its newest version."""
    return MetadataRecord(message, latest_version(message), data)


def serialize(rec: MetadataRecord) -> bytes:
    head = uvarint_bytes(FRAME_VERSION) + uvarint_bytes(rec.api_key) + uvarint_bytes(rec.version)
    return head + codec.encode(rec.message, rec.version, rec.data)


def deserialize(value: bytes) -> MetadataRecord:
    """Decode a record value; ``CodecError`` for unknown frames, keys or versions."""
    stream = io.BytesIO(value)
    try:
        frame = read_uvarint(stream, "frame")
        api_key = read_uvarint(stream, "api_key")
        version = read_uvarint(stream, "version")
    except Exception as exc:  # construct errors: report them as codec errors
        raise CodecError(f"bad metadata record header: {exc}") from exc
    if frame != FRAME_VERSION:
        raise CodecError(f"unknown metadata record frame version {frame}")
    message = _by_api_key().get(api_key)
    if message is None:
        raise CodecError(f"unknown metadata record type {api_key}")
    data = codec.decode(message, version, value[stream.tell() :])
    return MetadataRecord(message, version, data)
