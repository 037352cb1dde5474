"""Hypothesis round trips: encode then decode gives back the input, with defaults filled in.

Parametrized over every (api_key, version) of every request and response in
``messages.MODULES``, and over every version of the headers, the consumer-protocol data and
the record schemas (KRaft, group and transaction coordinators). Values are generated from the
declaration itself (``support.message_strategy``), so every field type, nullability, nested
struct and tagged field is exercised, plus unknown tagged fields in flexible structs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.messages.api_versions import REQUEST as API_VERSIONS_REQUEST
from pykbroker.api.protocol.messages.api_versions import RESPONSE as API_VERSIONS_RESPONSE
from pykbroker.api.protocol.messages.metadata import REQUEST as METADATA_REQUEST
from pykbroker.api.protocol.primitives import uvarint_bytes
from pykbroker.api.protocol.schema import Message

from .support import (
    UNKNOWN_KEY,
    api_version_cases,
    is_tagged,
    message_strategy,
    message_with_defaults,
    record_version_cases,
    rich_example,
)

ROUNDTRIP = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

API_CASES = list(api_version_cases())
RECORD_CASES = list(record_version_cases())


def _assert_roundtrip(message: Message, version: int, obj: dict[str, Any]) -> None:
    data = codec.encode(message, version, obj)
    decoded, end = codec.decode_prefix(message, version, data)
    assert end == len(data), "decoding did not consume exactly the encoded bytes"
    assert decoded == message_with_defaults(message, version, obj)
    assert codec.encode(message, version, decoded) == data, "re-encoding the decoded value differs"


@pytest.mark.parametrize(
    ("message", "version"),
    [pytest.param(m, v, id=i) for i, m, v in API_CASES],
)
def test_api_message_roundtrips_with_defaults_filled(message: Message, version: int) -> None:
    @ROUNDTRIP
    @given(obj=message_strategy(message, version))
    def check(obj: dict[str, Any]) -> None:
        _assert_roundtrip(message, version, obj)

    check()
    _assert_roundtrip(message, version, rich_example(message, version))


@pytest.mark.parametrize(
    ("message", "version"),
    [pytest.param(m, v, id=i) for i, m, v in RECORD_CASES],
)
def test_header_and_record_schema_roundtrips_with_defaults_filled(
    message: Message, version: int
) -> None:
    @ROUNDTRIP
    @given(obj=message_strategy(message, version))
    def check(obj: dict[str, Any]) -> None:
        _assert_roundtrip(message, version, obj)

    check()
    _assert_roundtrip(message, version, rich_example(message, version))


def test_every_api_and_record_version_is_covered() -> None:
    # 91 API keys (0-87 and Kafka 4.1's 90-92), request and response; the count changes only
    # when declarations do.
    assert len({m.api_key for _, m, _ in API_CASES}) == 91
    assert len(API_CASES) >= 600
    assert len(RECORD_CASES) >= 90


# --- unknown tagged fields -------------------------------------------------------------------


def _inject_top_level_tag(data: bytes, tag: int, payload: bytes) -> bytes:
    """Append an unknown tag to a top-level tagged section that is currently empty (``00``)."""
    assert data.endswith(b"\x00"), "expected an empty top-level tagged-field section"
    entry = uvarint_bytes(tag) + uvarint_bytes(len(payload)) + payload
    return data[:-1] + b"\x01" + entry


FLEXIBLE_API_CASES = [(i, m, v) for i, m, v in API_CASES if v in m.flexible]


@pytest.mark.parametrize(
    ("message", "version"),
    [pytest.param(m, v, id=i) for i, m, v in FLEXIBLE_API_CASES],
)
def test_unknown_tagged_field_is_skipped_and_preserved(message: Message, version: int) -> None:
    # Known top-level tagged fields left out, so the encoding ends with an empty section.
    obj = {
        k: v
        for k, v in rich_example(message, version).items()
        if not any(f.name == k and is_tagged(f, version, True) for f in message.fields)
    }
    clean = codec.encode(message, version, obj)
    injected = _inject_top_level_tag(clean, 77, b"\xde\xad\xbe\xef")

    decoded, end = codec.decode_prefix(message, version, injected)

    assert end == len(injected)
    assert decoded[UNKNOWN_KEY] == [(77, b"\xde\xad\xbe\xef")]
    without_unknown = {k: v for k, v in decoded.items() if k != UNKNOWN_KEY}
    assert without_unknown == message_with_defaults(message, version, obj)
    assert codec.encode(message, version, decoded) == injected


def test_unknown_tag_after_known_tags_is_kept_in_tag_order() -> None:
    # ApiVersionsResponse v3 knows tags 0-3; the wire carries tags 1 and 3 (known) and 9.
    obj: dict[str, Any] = {
        "error_code": 0,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}],
        "throttle_time_ms": 0,
        "finalized_features_epoch": 5,
        "zk_migration_ready": True,
    }
    known = b"\x01\x08" + (5).to_bytes(8, "big") + b"\x03\x01\x01"
    clean = codec.encode(API_VERSIONS_RESPONSE, 3, obj)
    assert clean.endswith(b"\x02" + known)
    injected = clean[: -len(known) - 1] + b"\x03" + known + b"\x09\x02hi"

    decoded = codec.decode(API_VERSIONS_RESPONSE, 3, injected)

    assert decoded["finalized_features_epoch"] == 5
    assert decoded["zk_migration_ready"] is True
    assert decoded[UNKNOWN_KEY] == [(9, b"hi")]
    assert codec.encode(API_VERSIONS_RESPONSE, 3, decoded) == injected


def test_unknown_tagged_field_in_nested_struct_is_preserved() -> None:
    topic = {"topic_id": uuid.UUID(int=1), "name": "t", UNKNOWN_KEY: [(500, b"x")]}
    obj = {
        "topics": [topic],
        "allow_auto_topic_creation": True,
        "include_topic_authorized_operations": False,
    }
    data = codec.encode(METADATA_REQUEST, 12, obj)
    assert codec.decode(METADATA_REQUEST, 12, data)["topics"][0][UNKNOWN_KEY] == [(500, b"x")]


@given(
    tags=st.lists(st.integers(4, 2**20), min_size=1, max_size=4, unique=True).map(sorted),
    payload=st.binary(max_size=20),
)
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
def test_any_number_of_unknown_tags_round_trip(tags: list[int], payload: bytes) -> None:
    obj = {"client_software_name": "a", "client_software_version": "b"}
    obj_with_unknown: dict[str, Any] = dict(obj, _unknown=[(t, payload) for t in tags])
    data = codec.encode(API_VERSIONS_REQUEST, 4, obj_with_unknown)
    assert codec.decode(API_VERSIONS_REQUEST, 4, data) == obj_with_unknown


# --- defaults of absent fields ---------------------------------------------------------------


def test_absent_struct_decodes_to_kafka_default_struct() -> None:
    from pykbroker.api.protocol.messages.fetch import REQUEST as FETCH_REQUEST

    body = {
        "replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": 1024,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": [],
        "forgotten_topics_data": [], "rack_id": "",
    }  # fmt: skip
    decoded = codec.decode(FETCH_REQUEST, 12, codec.encode(FETCH_REQUEST, 12, body))
    # ReplicaState is v15+ (tagged): absent at v12, read as Kafka's default struct.
    assert decoded["replica_state"] == {"replica_id": -1, "replica_epoch": -1}
    assert decoded["cluster_id"] is None


def test_decoded_defaults_are_not_shared_between_messages() -> None:
    from pykbroker.api.protocol.messages.fetch import REQUEST as FETCH_REQUEST

    data = bytes.fromhex("ffffffff 000001f4 00000001 00000400 00 00000000")  # v4, no topics
    first = codec.decode(FETCH_REQUEST, 4, data)
    first["replica_state"]["replica_id"] = 5
    first["forgotten_topics_data"].append({"topic": "x"})
    second = codec.decode(FETCH_REQUEST, 4, data)
    assert second["replica_state"] == {"replica_id": -1, "replica_epoch": -1}
    assert second["forgotten_topics_data"] == []
