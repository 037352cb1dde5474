"""Declarations of Kafka messages: fields, types and the versions each field exists in.

This is the vocabulary the message modules in ``messages/`` are written in. It mirrors the
shape of Kafka's JSON message definitions (``validVersions``, ``flexibleVersions``,
``nullableVersions``, ``taggedVersions``, ``tag``, ``default``) with snake_case field names.
Pure data: building a wire codec from a declaration is ``codec.py``'s job.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

PRIMITIVES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "float64",
        "string",
        "bytes",
        "records",
        "uuid",
    }
)


def snake_case(name: str) -> str:
    """``GroupInstanceId`` -> ``group_instance_id`` (Kafka's JSON name in snake case)."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive version range as Kafka writes it: ``"3+"``, ``"0-12"``, ``"5"``, ``"none"``."""

    low: int
    high: int  # -1 means unbounded ("N+"); low > high (with high >= 0) means "none"

    @classmethod
    def parse(cls, text: str) -> Versions:
        text = text.strip()
        if text == "none":
            return cls(1, 0)
        if text.endswith("+"):
            return cls(int(text[:-1]), -1)
        if "-" in text:
            low, high = text.split("-", 1)
            return cls(int(low), int(high))
        return cls(int(text), int(text))

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, int):
            return False
        return version >= self.low and (self.high < 0 or version <= self.high)

    def is_none(self) -> bool:
        return 0 <= self.high < self.low

    def __str__(self) -> str:
        if self.is_none():
            return "none"
        if self.high < 0:
            return f"{self.low}+"
        if self.low == self.high:
            return str(self.low)
        return f"{self.low}-{self.high}"


NONE = Versions(1, 0)
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message or struct.

    ``type`` is Kafka's type name: a primitive, ``[]primitive``, ``[]StructName`` or
    ``StructName`` (a nested struct, whose fields are in ``fields``).
    """

    name: str
    type: str
    versions: Versions
    nullable: Versions = NONE
    tagged: Versions = NONE
    tag: int | None = None
    default: Any = _MISSING
    flexible: Versions | None = None  # a per-field override (RequestHeader.ClientId: "none")
    fields: tuple[Field, ...] = ()

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        return self.element_type not in PRIMITIVES

    def default_value(self, version: int) -> Any:
        """The value used when encoding and the field is absent (Kafka's defaults)."""
        if self.default is not _MISSING:
            return self.default
        if version in self.nullable and self.type != "bool":
            return None
        if self.is_array:
            return []
        return _TYPE_DEFAULTS.get(self.type, _MISSING)


_TYPE_DEFAULTS: dict[str, Any] = {
    "bool": False,
    "int8": 0,
    "int16": 0,
    "uint16": 0,
    "int32": 0,
    "uint32": 0,
    "int64": 0,
    "float64": 0.0,
    "string": "",
    "bytes": b"",
    "records": None,
    "uuid": uuid.UUID(int=0),
}


@dataclass(frozen=True, slots=True)
class Message:
    """A top-level message: an API request/response, a header, or a data/metadata record."""

    name: str
    type: str  # "request", "response", "header", "data", "metadata"
    valid: Versions
    flexible: Versions
    fields: tuple[Field, ...]
    api_key: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def F(
    name: str,
    type: str,
    versions: str,
    *children: Field,
    nullable: str = "none",
    tagged: str = "none",
    tag: int | None = None,
    default: Any = _MISSING,
    flexible: str | None = None,
) -> Field:
    """Declare a field; nested fields follow the versions for struct types."""
    return Field(
        name=name,
        type=type,
        versions=Versions.parse(versions),
        nullable=Versions.parse(nullable),
        tagged=Versions.parse(tagged),
        tag=tag,
        default=default,
        flexible=None if flexible is None else Versions.parse(flexible),
        fields=tuple(children),
    )


def M(
    name: str,
    type: str,
    valid: str,
    flexible: str,
    *fields: Field,
    api_key: int | None = None,
) -> Message:
    """Declare a message."""
    return Message(
        name=name,
        type=type,
        valid=Versions.parse(valid),
        flexible=Versions.parse(flexible),
        fields=tuple(fields),
        api_key=api_key,
    )
