"""Shared helpers of the protocol tests: where declarations live, and values built from them.

Three things are derived from a ``Message`` declaration and a version, independently of the
codec's own default logic:

* ``message_strategy``: a Hypothesis strategy of valid message dicts (every field present in
  the version, tagged fields sometimes, unknown tagged fields in flexible structs sometimes);
* ``with_defaults``: what decoding the encoding of such a dict must return (fields absent in
  the version, and tagged fields not sent, filled with their defaults);
* ``rich_example``: one deterministic, "everything set" value (each array holds one element,
  nullable values are not null, tagged fields differ from their defaults), used as the seed
  that the fuzz tests mutate.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from pykbroker.api.protocol.messages import MODULES
from pykbroker.api.protocol.schema import _MISSING, Field, Message

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED = PROJECT_ROOT.parent / "shared"
KAFKA_PROTOCOL = SHARED / "kafka-protocol"

#: Modules that hold declarations other than API requests and responses.
RECORD_MODULES = (
    "pykbroker.api.protocol.messages.headers",
    "pykbroker.api.protocol.messages.consumer_protocol",
    "pykbroker.raft.schemas",
    "pykbroker.metadata.schemas",
    "pykbroker.coordinator.group.schemas",
    "pykbroker.coordinator.transaction.schemas",
)

UNKNOWN_KEY = "_unknown"
#: Tags no declaration uses (Kafka's tags are small); used to inject unknown tagged fields.
UNUSED_TAGS = range(1000, 1010)

INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def api_module(api_key: int) -> ModuleType:
    return importlib.import_module(f"pykbroker.api.protocol.messages.{MODULES[api_key]}")


def versions(message: Message) -> range:
    """Every version a declaration covers (declarations always have an upper bound)."""
    assert message.valid.high >= 0, f"{message.name} has an open-ended validVersions"
    return range(message.valid.low, message.valid.high + 1)


@cache
def api_messages() -> tuple[tuple[int, str, Message], ...]:
    """(api_key, "request" | "response", declaration) for every API key in ``MODULES``."""
    out: list[tuple[int, str, Message]] = []
    for api_key in sorted(MODULES):
        module = api_module(api_key)
        out.append((api_key, "request", module.REQUEST))
        out.append((api_key, "response", module.RESPONSE))
    return tuple(out)


@cache
def record_messages() -> tuple[tuple[str, str, Message], ...]:
    """(module, constant, declaration) for headers, consumer protocol and record schemas."""
    out: list[tuple[str, str, Message]] = []
    for module_name in RECORD_MODULES:
        module = importlib.import_module(module_name)
        for const, value in vars(module).items():
            if isinstance(value, Message):
                parts = module_name.split(".")
                short = parts[-2] if parts[-1] == "schemas" else parts[-1]
                out.append((short, const, value))
    return tuple(out)


def api_version_cases(kind: str | None = None) -> Iterator[tuple[str, Message, int]]:
    """(test id, declaration, version) for every API (api_key, version), request and response."""
    for api_key, which, message in api_messages():
        if kind is not None and which != kind:
            continue
        for version in versions(message):
            yield f"{api_key}-{message.name}-v{version}", message, version


def record_version_cases() -> Iterator[tuple[str, Message, int]]:
    for module, const, message in record_messages():
        for version in versions(message):
            yield f"{module}.{const}-v{version}", message, version


# --- defaults, computed from the declaration as Kafka documents them -----------------------

_EMPTY: dict[str, Any] = {
    "bool": False,
    "float64": 0.0,
    "string": "",
    "bytes": b"",
    "records": None,
    "uuid": uuid.UUID(int=0),
}


def expected_default(f: Field, version: int) -> Any:
    """The value a decoder fills in for ``f`` when it is not on the wire at ``version``."""
    if f.default is not _MISSING:
        return f.default
    if version in f.nullable and f.type != "bool":
        return None
    if f.is_array:
        return []
    if f.is_struct:  # Kafka's default struct: every field at its own default
        return {sub.name: expected_default(sub, version) for sub in f.fields}
    if f.type in INT_RANGES:
        return 0
    return _EMPTY[f.type]


def is_tagged(f: Field, version: int, flexible: bool) -> bool:
    return flexible and version in f.tagged and f.tag is not None


def _field_flexible(f: Field, version: int, flexible: bool) -> bool:
    return version in f.flexible if f.flexible is not None else flexible


def with_defaults(
    fields: tuple[Field, ...], version: int, flexible: bool, obj: dict[str, Any]
) -> dict[str, Any]:
    """What decoding the encoding of ``obj`` must give: ``obj`` with every default filled in."""
    out: dict[str, Any] = {}
    for f in fields:
        if version not in f.versions or (is_tagged(f, version, flexible) and f.name not in obj):
            out[f.name] = expected_default(f, version)
            continue
        value = obj[f.name]
        if f.is_struct and value is not None:
            if f.is_array:
                value = [with_defaults(f.fields, version, flexible, item) for item in value]
            else:
                value = with_defaults(f.fields, version, flexible, value)
        out[f.name] = value
    if flexible and obj.get(UNKNOWN_KEY):
        out[UNKNOWN_KEY] = list(obj[UNKNOWN_KEY])
    return out


def message_with_defaults(message: Message, version: int, obj: dict[str, Any]) -> dict[str, Any]:
    return with_defaults(message.fields, version, version in message.flexible, obj)


# --- Hypothesis strategies ------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
_BYTES = st.binary(max_size=8)


def _primitive_strategy(type_name: str) -> st.SearchStrategy[Any]:
    if type_name in INT_RANGES:
        low, high = INT_RANGES[type_name]
        return st.integers(low, high)
    simple: dict[str, st.SearchStrategy[Any]] = {
        "bool": st.booleans(),
        "float64": st.floats(allow_nan=False),
        "string": _TEXT,
        "bytes": _BYTES,
        "records": _BYTES,
        "uuid": st.uuids(),
    }
    return simple[type_name]


def _unknown_tags() -> st.SearchStrategy[list[tuple[int, bytes]]]:
    pairs = st.lists(
        st.tuples(st.sampled_from(UNUSED_TAGS), st.binary(max_size=4)),
        max_size=2,
        unique_by=lambda pair: pair[0],
    )
    return pairs.map(sorted)


def _field_strategy(f: Field, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    if f.is_struct:
        element: st.SearchStrategy[Any] = struct_strategy(f.fields, version, flexible)
    else:
        element = _primitive_strategy(f.element_type)
    if f.is_array:
        value: st.SearchStrategy[Any] = st.lists(element, max_size=2)
    else:
        value = element
    if version in f.nullable:
        value = st.none() | value
    return value


def struct_strategy(
    fields: tuple[Field, ...], version: int, flexible: bool
) -> st.SearchStrategy[dict[str, Any]]:
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in fields:
        if version not in f.versions:
            continue
        sub = _field_strategy(f, version, _field_flexible(f, version, flexible))
        if is_tagged(f, version, flexible):
            optional[f.name] = sub
        else:
            required[f.name] = sub
    if flexible:
        optional[UNKNOWN_KEY] = _unknown_tags()
    return st.fixed_dictionaries(required, optional=optional)


_STRATEGIES: dict[tuple[int, int], st.SearchStrategy[dict[str, Any]]] = {}


def message_strategy(message: Message, version: int) -> st.SearchStrategy[dict[str, Any]]:
    """Valid values of ``message`` at ``version`` (cached by id: messages are unhashable)."""
    key = (id(message), version)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = struct_strategy(message.fields, version, version in message.flexible)
    return _STRATEGIES[key]


# --- one deterministic, fully populated value -----------------------------------------------

_RICH: dict[str, Any] = {
    "bool": True,
    "int8": 7,
    "int16": 300,
    "uint16": 40000,
    "int32": 70000,
    "uint32": 3_000_000_000,
    "int64": 2**40 + 5,
    "float64": 1.5,
    "string": "kafka",
    "bytes": b"\x00\x01\x02",
    "records": b"records!",
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def rich_struct(fields: tuple[Field, ...], version: int, flexible: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if version not in f.versions:
            continue
        if f.is_struct:
            element: Any = rich_struct(f.fields, version, flexible)
        else:
            element = _RICH[f.element_type]
        out[f.name] = [element] if f.is_array else element
    return out


def rich_example(message: Message, version: int) -> dict[str, Any]:
    return rich_struct(message.fields, version, version in message.flexible)
