"""construct pieces for Kafka's primitive types.

Fixed-width integers are construct's own. This module adds what Kafka needs on top: unsigned
varints, classic and compact (flexible) strings, bytes and arrays with their null markers, UUIDs
and tagged-field sections. Every length or count is checked against the bytes left in the
stream before anything is allocated, so garbage input fails fast with a construct error (turned
into ``CodecError`` by ``codec.py``).
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import construct as c

Int8 = c.Int8sb
Int16 = c.Int16sb
Int32 = c.Int32sb
Int64 = c.Int64sb
UInt16 = c.Int16ub
UInt32 = c.Int32ub
Float64 = c.Float64b

_MAX_VARINT_BYTES = 5
ZERO_UUID = uuid.UUID(int=0)


def _remaining(stream: io.BytesIO) -> int:
    pos = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(pos)
    return int(end - pos)


def read_uvarint(stream: io.BytesIO, path: str) -> int:
    """An unsigned LEB128 varint of at most 5 bytes (Kafka's unsigned varint)."""
    result = 0
    shift = 0
    for _ in range(_MAX_VARINT_BYTES):
        raw = stream.read(1)
        if not raw:
            raise c.StreamError("stream ended inside a varint", path=path)
        byte = raw[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
    raise c.ConstructError("varint longer than 5 bytes", path=path)


def uvarint_bytes(value: int) -> bytes:
    if value < 0:
        raise c.ConstructError(f"negative unsigned varint {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_exact(stream: io.BytesIO, length: int, path: str) -> bytes:
    if length > _remaining(stream):
        raise c.StreamError(f"length {length} exceeds the bytes left", path=path)
    return stream.read(length)


class UVarInt(c.Construct):  # type: ignore[misc]
    """Kafka's unsigned varint (LEB128, at most 5 bytes)."""

    def _parse(self, stream: Any, context: Any, path: str) -> int:
        return read_uvarint(stream, path)

    def _build(self, obj: int, stream: Any, context: Any, path: str) -> int:
        stream.write(uvarint_bytes(obj))
        return obj


class KString(c.Construct):  # type: ignore[misc]
    """A string: int16 length (classic) or uvarint length+1 (compact); null is -1 / 0."""

    def __init__(self, compact: bool, nullable: bool) -> None:
        super().__init__()
        self.compact = compact
        self.nullable = nullable

    def _parse(self, stream: Any, context: Any, path: str) -> str | None:
        if self.compact:
            length = read_uvarint(stream, path) - 1
        else:
            length = Int16._parsereport(stream, context, path)
        if length < 0:
            if length == -1 and self.nullable:
                return None
            raise c.ConstructError(f"null or negative length {length} for a string", path=path)
        data = _read_exact(stream, length, path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise c.ConstructError(f"invalid UTF-8 in a string: {exc}", path=path) from exc

    def _build(self, obj: str | None, stream: Any, context: Any, path: str) -> str | None:
        if obj is None:
            if not self.nullable:
                raise c.ConstructError("None for a non-nullable string", path=path)
            stream.write(b"\x00" if self.compact else b"\xff\xff")
            return obj
        data = obj.encode("utf-8")
        if self.compact:
            stream.write(uvarint_bytes(len(data) + 1))
        else:
            if len(data) > 0x7FFF:
                raise c.ConstructError("string longer than 32767 bytes", path=path)
            stream.write(len(data).to_bytes(2, "big"))
        stream.write(data)
        return obj


class KBytes(c.Construct):  # type: ignore[misc]
    """Bytes (and record sets): int32 length (classic) or uvarint length+1 (compact)."""

    def __init__(self, compact: bool, nullable: bool) -> None:
        super().__init__()
        self.compact = compact
        self.nullable = nullable

    def _parse(self, stream: Any, context: Any, path: str) -> bytes | None:
        if self.compact:
            length = read_uvarint(stream, path) - 1
        else:
            length = Int32._parsereport(stream, context, path)
        if length < 0:
            if length == -1 and self.nullable:
                return None
            raise c.ConstructError(f"null or negative length {length} for bytes", path=path)
        return _read_exact(stream, length, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if obj is None:
            if not self.nullable:
                raise c.ConstructError("None for non-nullable bytes", path=path)
            stream.write(b"\x00" if self.compact else b"\xff\xff\xff\xff")
            return obj
        length = len(obj)
        if self.compact:
            stream.write(uvarint_bytes(length + 1))
        else:
            stream.write(length.to_bytes(4, "big"))
        stream.write(obj)
        return obj


class KArray(c.Construct):  # type: ignore[misc]
    """An array: int32 count (classic) or uvarint count+1 (compact); null is -1 / 0."""

    def __init__(self, element: c.Construct, compact: bool, nullable: bool) -> None:
        super().__init__()
        self.element = element
        self.compact = compact
        self.nullable = nullable

    def _parse(self, stream: Any, context: Any, path: str) -> list[Any] | None:
        if self.compact:
            count = read_uvarint(stream, path) - 1
        else:
            count = Int32._parsereport(stream, context, path)
        if count < 0:
            if count == -1 and self.nullable:
                return None
            raise c.ConstructError(f"null or negative array count {count}", path=path)
        if count > _remaining(stream):
            raise c.StreamError(f"array count {count} exceeds the bytes left", path=path)
        parse = self.element._parsereport
        return [parse(stream, context, path) for _ in range(count)]

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if obj is None:
            if not self.nullable:
                raise c.ConstructError("None for a non-nullable array", path=path)
            stream.write(b"\x00" if self.compact else b"\xff\xff\xff\xff")
            return obj
        if self.compact:
            stream.write(uvarint_bytes(len(obj) + 1))
        else:
            stream.write(len(obj).to_bytes(4, "big"))
        build = self.element._build
        for item in obj:
            build(item, stream, context, path)
        return obj


class Uuid(c.Construct):  # type: ignore[misc]
    """A 16-byte UUID as ``uuid.UUID``."""

    def _parse(self, stream: Any, context: Any, path: str) -> uuid.UUID:
        return uuid.UUID(bytes=_read_exact(stream, 16, path))

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if isinstance(obj, uuid.UUID):
            stream.write(obj.bytes)
        elif isinstance(obj, (bytes, bytearray)) and len(obj) == 16:
            stream.write(bytes(obj))
        else:
            raise c.ConstructError(f"not a UUID: {obj!r}", path=path)
        return obj


class Bool(c.Construct):  # type: ignore[misc]
    """A one-byte boolean; any non-zero byte reads as true, as in Kafka."""

    def _parse(self, stream: Any, context: Any, path: str) -> bool:
        raw = stream.read(1)
        if not raw:
            raise c.StreamError("stream ended inside a bool", path=path)
        return bool(raw != b"\x00")

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        stream.write(b"\x01" if obj else b"\x00")
        return obj


TAGGED_KEY = "_tagged_fields"


class TaggedFields(c.Construct):  # type: ignore[misc]
    """The tagged-field section that ends every struct in flexible versions.

    ``known`` maps tag -> (field name, construct). Parsing returns a dict of the known fields
    present plus, under ``_unknown``, the raw (tag, bytes) pairs it skipped. Building writes the
    known fields whose value differs from their default, in tag order, then the unknown ones.
    """

    def __init__(self, known: dict[int, tuple[str, c.Construct, Any]]) -> None:
        super().__init__()
        self.known = dict(sorted(known.items()))

    def _parse(self, stream: Any, context: Any, path: str) -> dict[str, Any]:
        count = read_uvarint(stream, path)
        if count > _remaining(stream):
            raise c.StreamError("tagged field count exceeds the bytes left", path=path)
        found: dict[str, Any] = {}
        last_tag = -1
        for _ in range(count):
            tag = read_uvarint(stream, path)
            if tag <= last_tag:
                raise c.ConstructError("tagged fields out of order", path=path)
            last_tag = tag
            size = read_uvarint(stream, path)
            data = _read_exact(stream, size, path)
            entry = self.known.get(tag)
            if entry is None:
                found.setdefault("_unknown", []).append((tag, data))
                continue
            name, sub, _default = entry
            sub_stream = io.BytesIO(data)
            found[name] = sub._parsereport(sub_stream, context, path)
        return found

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        entries: list[tuple[int, bytes]] = []
        obj = obj or {}
        for tag, (name, sub, default) in self.known.items():
            if name not in obj:
                continue
            value = obj[name]
            if value == default:
                continue
            buf = io.BytesIO()
            sub._build(value, buf, context, path)
            entries.append((tag, buf.getvalue()))
        entries.extend(obj.get("_unknown", ()))
        entries.sort(key=lambda entry: entry[0])
        stream.write(uvarint_bytes(len(entries)))
        for tag, data in entries:
            stream.write(uvarint_bytes(tag))
            stream.write(uvarint_bytes(len(data)))
            stream.write(data)
        return obj


EMPTY_TAGGED_FIELDS = b"\x00"
