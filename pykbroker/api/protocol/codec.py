"""Build construct codecs from message declarations; encode and decode messages.

``encode(message, version, obj)`` and ``decode(message, version, data)`` are the whole public
surface. A message decodes to a plain ``dict`` keyed by snake_case field names; fields absent
in that version are filled with their defaults (as Kafka's generated message classes are), so
handlers need not branch on versions to read them. Codecs are built lazily, on first use of a
(message, version), and cached: start-up pays for nothing it does not use.

Every decoding failure, whatever its cause, surfaces as ``CodecError``.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import construct as c

from . import primitives as p
from .schema import _MISSING, Field, Message


class CodecError(Exception):
    """Bytes that do not decode as the declared message, or a value that cannot be encoded."""


class KStruct(c.Construct):  # type: ignore[misc]
    """A Kafka struct at one version: its fields in order, then (flexible) its tagged fields."""

    def __init__(
        self,
        fields: list[tuple[str, c.Construct, Any]],
        absent: list[tuple[str, Any]],
        tagged: p.TaggedFields | None,
    ) -> None:
        super().__init__()
        self.fields = fields
        self.absent = absent
        self.tagged = tagged

    def _parse(self, stream: Any, context: Any, path: str) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for name, sub, _default in self.fields:
            obj[name] = sub._parse(stream, context, path)
        for name, default in self.absent:
            obj[name] = _fresh(default)
        if self.tagged is not None:
            obj.update(self.tagged._parse(stream, context, path))
        return obj

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        for name, sub, default in self.fields:
            value = obj.get(name, default)
            if value is _MISSING:
                raise c.ConstructError(f"missing field {name!r}", path=path)
            sub._build(value, stream, context, path)
        if self.tagged is not None:
            self.tagged._build(obj, stream, context, path)
        return obj


class NullableStruct(c.Construct):  # type: ignore[misc]
    """A struct-typed field that may be null: an int8 marker (-1 null, 1 present) first.

    As a tagged field the marker is an unsigned varint instead (0 null, 1 present), as Kafka's
    generated code writes it.
    """

    def __init__(self, struct: KStruct, tagged: bool = False) -> None:
        super().__init__()
        self.struct = struct
        self.tagged = tagged

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        if self.tagged:
            is_null = p.read_uvarint(stream, path) == 0
        else:
            is_null = p.Int8._parse(stream, context, path) < 0
        if is_null:
            return None
        return self.struct._parse(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if obj is None:
            stream.write(b"\x00" if self.tagged else b"\xff")
            return obj
        stream.write(b"\x01")
        return self.struct._build(obj, stream, context, path)


def _fresh(default: Any) -> Any:
    """Defaults that are mutable containers must not be shared between decoded messages."""
    if isinstance(default, (list, dict)):
        return copy.deepcopy(default)
    return default


_FIXED: dict[str, c.Construct] = {
    "int8": p.Int8,
    "int16": p.Int16,
    "uint16": p.UInt16,
    "int32": p.Int32,
    "uint32": p.UInt32,
    "int64": p.Int64,
    "float64": p.Float64,
    "bool": p.Bool(),
    "uuid": p.Uuid(),
}


def _default_for(f: Field, version: int) -> Any:
    value = f.default_value(version)
    if value is _MISSING and f.is_struct and not f.is_array:
        # Kafka's default struct has every field at its default, so handlers can read them.
        defaults = ((sub.name, _default_for(sub, version)) for sub in f.fields)
        return {name: None if v is _MISSING else v for name, v in defaults}
    return value


def _field_construct(f: Field, version: int, flexible: bool) -> c.Construct:
    if f.flexible is not None:
        flexible = version in f.flexible
    nullable = version in f.nullable
    element = f.element_type
    if f.is_struct:
        struct = build_struct(f.fields, version, flexible)
        if f.is_array:
            return p.KArray(struct, flexible, nullable)
        return NullableStruct(struct) if nullable else struct
    if f.is_array:
        return p.KArray(_primitive(element, flexible, False), flexible, nullable)
    return _primitive(element, flexible, nullable)


def _primitive(type_name: str, flexible: bool, nullable: bool) -> c.Construct:
    if type_name == "string":
        return p.KString(flexible, nullable)
    if type_name in ("bytes", "records"):
        return p.KBytes(flexible, nullable)
    try:
        return _FIXED[type_name]
    except KeyError:
        raise ValueError(f"unknown Kafka type {type_name!r}") from None


def build_struct(fields: tuple[Field, ...], version: int, flexible: bool) -> KStruct:
    """The construct for a list of field declarations at one version."""
    present: list[tuple[str, c.Construct, Any]] = []
    absent: list[tuple[str, Any]] = []
    tagged: dict[int, tuple[str, c.Construct, Any]] = {}
    for f in fields:
        default = _default_for(f, version)
        if version not in f.versions:
            absent.append((f.name, None if default is _MISSING else default))
            continue
        sub = _field_construct(f, version, flexible)
        if flexible and version in f.tagged and f.tag is not None:
            if isinstance(sub, NullableStruct):
                sub = NullableStruct(sub.struct, tagged=True)
            tagged[f.tag] = (f.name, sub, default)
            absent.append((f.name, None if default is _MISSING else default))
            continue
        present.append((f.name, sub, default))
    return KStruct(present, absent, p.TaggedFields(tagged) if flexible else None)


_CACHE: dict[tuple[int, int], KStruct] = {}


def struct_for(message: Message, version: int) -> KStruct:
    """The cached codec of ``message`` at ``version``."""
    key = (id(message), version)
    struct = _CACHE.get(key)
    if struct is None:
        if version not in message.valid:
            raise CodecError(f"{message.name} has no version {version}")
        struct = build_struct(message.fields, version, version in message.flexible)
        _CACHE[key] = struct
    return struct


def decode(message: Message, version: int, data: bytes | memoryview) -> dict[str, Any]:
    """Decode ``data`` as ``message`` at ``version``; trailing bytes are ignored."""
    obj, _ = decode_prefix(message, version, data)
    return obj


def decode_prefix(
    message: Message, version: int, data: bytes | memoryview, offset: int = 0
) -> tuple[dict[str, Any], int]:
    """Decode from ``offset``; return the message and the offset just after it."""
    struct = struct_for(message, version)
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        obj = struct._parse(stream, None, "(parsing)")
    except CodecError:
        raise
    except (c.ConstructError, ValueError, OverflowError, RecursionError) as exc:
        raise CodecError(f"{message.name} v{version}: {exc}") from exc
    return obj, stream.tell()


def encode(message: Message, version: int, obj: dict[str, Any]) -> bytes:
    """Encode ``obj`` as ``message`` at ``version``."""
    stream = io.BytesIO()
    encode_into(message, version, obj, stream)
    return stream.getvalue()


def encode_into(message: Message, version: int, obj: dict[str, Any], stream: io.BytesIO) -> None:
    struct = struct_for(message, version)
    try:
        struct._build(obj, stream, None, "(building)")
    except (c.ConstructError, ValueError, OverflowError, TypeError, AttributeError) as exc:
        raise CodecError(f"cannot encode {message.name} v{version}: {exc}") from exc
