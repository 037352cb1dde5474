"""The advertised version table (``RELEASE_4_1``) against Kafka 4.1 and against the declarations.

``RELEASE_4_1`` must be exactly the "4.1" column of ``api-versions-by-release.json``, and every
range it advertises for an API pykbroker declares must lie within that declaration's
validVersions, so the codec can decode every version a client may pick. The one deliberate
exception is Produce: Kafka advertises v0-v2 for old librdkafka (KAFKA-18659) but the 4.x
schema starts at v3.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pykbroker.api.protocol import registry
from pykbroker.api.protocol.api_keys import RELEASE, RELEASE_4_1, ApiKey
from pykbroker.api.protocol.messages import MODULES

from .support import KAFKA_PROTOCOL

RELEASES_JSON = KAFKA_PROTOCOL / "api-versions-by-release.json"

#: Advertised by Kafka 4.1 but not declared. Empty: keys 90-92, whose JSON is not in
#: shared/kafka-protocol, are declared from Kafka 4.1's JSON (tools/gen_messages.py LATER_FILES),
#: and ShareGroupHeartbeat/ShareGroupDescribe/ShareFetch/ShareAcknowledge v1 and Vote v2 through
#: LATER_VERSIONS.
UNDECLARED_IN_4_1: set[int] = set()


def test_release_is_4_1() -> None:
    assert RELEASE == "4.1"


@pytest.mark.skipif(not RELEASES_JSON.is_file(), reason=f"{RELEASES_JSON} is absent")
def test_release_table_equals_kafka_4_1_api_versions() -> None:
    column = json.loads(RELEASES_JSON.read_text(encoding="utf-8"))["4.1"]
    expected = {int(key): (low, high) for key, (low, high) in column.items()}
    assert dict(RELEASE_4_1) == expected


def test_release_table_keys_without_declarations_are_known() -> None:
    assert set(RELEASE_4_1) - set(MODULES) == UNDECLARED_IN_4_1


def _range_params() -> list[Any]:
    params: list[Any] = []
    for api_key in sorted(set(RELEASE_4_1) & set(MODULES)):
        if api_key == ApiKey.PRODUCE:
            continue  # the KAFKA-18659 exception has its own test below
        params.append(pytest.param(api_key, id=registry.api_name(api_key)))
    return params


@pytest.mark.parametrize("api_key", _range_params())
def test_advertised_range_lies_within_the_declared_versions(api_key: int) -> None:
    low, high = RELEASE_4_1[api_key]
    for message in (registry.request_message(api_key), registry.response_message(api_key)):
        assert low in message.valid, f"{message.name}: advertised min {low} not in {message.valid}"
        assert high in message.valid, (
            f"{message.name}: advertised max {high} not in {message.valid}"
        )


def test_produce_advertises_v0_although_declared_from_v3() -> None:
    """KAFKA-18659: 4.x lists Produce v0-2 for old librdkafka, and rejects them."""
    low, high = RELEASE_4_1[ApiKey.PRODUCE]
    assert (low, high) == (0, 13)
    for message in (
        registry.request_message(ApiKey.PRODUCE),
        registry.response_message(ApiKey.PRODUCE),
    ):
        assert message.valid.low == 3
        assert high in message.valid
        assert all(v not in message.valid for v in range(3))


def test_api_key_enum_covers_every_declared_api() -> None:
    for api_key, module in MODULES.items():
        assert ApiKey(api_key).name.lower() == module, (api_key, module)


def test_declarations_carry_their_api_key() -> None:
    for api_key in MODULES:
        assert registry.request_message(api_key).api_key == api_key
        assert registry.response_message(api_key).api_key == api_key
        assert registry.request_message(api_key).type == "request"
        assert registry.response_message(api_key).type == "response"


def test_request_and_response_share_valid_and_flexible_versions() -> None:
    for api_key in MODULES:
        request, response = registry.request_message(api_key), registry.response_message(api_key)
        assert request.valid == response.valid, request.name
        assert request.flexible == response.flexible, request.name


def test_kafka_4_1_declarations_behind_the_shared_json() -> None:
    """Share-group APIs are v1 only in 4.1, Vote reaches v2 (PreVote), keys 90-92 exist."""
    for api_key in (
        ApiKey.SHARE_GROUP_HEARTBEAT,
        ApiKey.SHARE_GROUP_DESCRIBE,
        ApiKey.SHARE_FETCH,
        ApiKey.SHARE_ACKNOWLEDGE,
    ):
        assert str(registry.request_message(api_key).valid) == "1"
    vote = registry.request_message(ApiKey.VOTE)
    assert str(vote.valid) == "0-2"
    partitions = next(f for f in vote.fields if f.name == "topics").fields[1]
    pre_vote = next(f for f in partitions.fields if f.name == "pre_vote")
    assert (pre_vote.type, str(pre_vote.versions)) == ("bool", "2+")
    for api_key, name in (
        (90, "DescribeShareGroupOffsets"),
        (91, "AlterShareGroupOffsets"),
        (92, "DeleteShareGroupOffsets"),
    ):
        assert registry.api_name(api_key) == name
        assert str(registry.response_message(api_key).valid) == "0"


def test_api_name_of_unknown_key() -> None:
    assert registry.api_name(ApiKey.PRODUCE) == "Produce"
    assert registry.api_name(999) == "Unknown(999)"
