"""The seven handlers, every version: requests go through the codec, responses must encode."""

from __future__ import annotations

import itertools
import uuid
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from pykbroker.api.context import Endpoint, RequestContext
from pykbroker.api.handlers import (
    find_coordinator,
    heartbeat,
    join_group,
    leave_group,
    offset_commit,
    offset_fetch,
    sync_group,
)
from pykbroker.api.protocol import codec
from pykbroker.api.protocol.api_keys import RELEASE_4_1
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.header import RequestHeader
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.coordinator.group.coordinator import GroupCoordinator
from pykbroker.metadata.image import MetadataImage, PartitionRegistration, TopicImage

from .support import MemoryLog

OK = ErrorCode.NO_ERROR
TOPIC_ID = uuid.UUID(int=7)


def versions(module: ModuleType) -> list[int]:
    low, high = RELEASE_4_1[module.API_KEY]
    return list(range(low, high + 1))


class FakeBroker:
    def __init__(self, coordinator: GroupCoordinator) -> None:
        partition = PartitionRegistration((1,), (1,), 1, 0, 0)
        topic = TopicImage("t", TOPIC_ID, {0: partition, 1: partition})
        image = MetadataImage(topics={"t": topic}, topics_by_id={TOPIC_ID: topic})
        self.services: dict[str, Any] = {
            "group_coordinator": coordinator,
            "controller": SimpleNamespace(image=image),
        }
        self.config: Any = None
        self.cluster_id = "cluster"

    def endpoint(self) -> Endpoint:
        return Endpoint(1, "broker.local", 9092)

    def service(self, name: str) -> Any:
        return self.services[name]


@pytest.fixture
async def broker(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> FakeBroker:
    counter = itertools.count(1)
    coordinator = GroupCoordinator(
        MemoryLog(),
        node_id=1,
        group_initial_rebalance_delay_ms=0,
        new_uuid=lambda: f"u{next(counter)}",
    )
    await nursery.start(coordinator.run)
    return FakeBroker(coordinator)


async def call(
    broker: FakeBroker, module: ModuleType, version: int, request: dict[str, Any]
) -> dict[str, Any]:
    """Encode the request, decode it as the dispatcher would, handle, encode the response."""
    decoded = codec.decode(
        request_message(module.API_KEY),
        version,
        codec.encode(request_message(module.API_KEY), version, request),
    )
    header = RequestHeader(module.API_KEY, version, 1, "client-1", 2)
    ctx = RequestContext(header, broker, "127.0.0.1", "conn-1")
    response = await module.handle(ctx, decoded)
    assert response is not None
    wire = codec.encode(response_message(module.API_KEY), version, response)
    return codec.decode(response_message(module.API_KEY), version, wire)


def join_body(member_id: str = "", instance_id: str | None = None) -> dict[str, Any]:
    return {
        "group_id": "g",
        "session_timeout_ms": 10_000,
        "rebalance_timeout_ms": 20_000,
        "member_id": member_id,
        "group_instance_id": instance_id,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b"sub"}],
        "reason": None,
    }


async def join_and_sync(broker: FakeBroker, join_version: int, sync_version: int) -> str:
    """One member joins and syncs at the given versions; returns its member id."""
    response = await call(broker, join_group, join_version, join_body())
    if response["error_code"] == ErrorCode.MEMBER_ID_REQUIRED:
        assert join_version >= 4
        response = await call(broker, join_group, join_version, join_body(response["member_id"]))
    assert response["error_code"] == OK
    member_id: str = response["member_id"]
    assert member_id.startswith("client-1-u")
    assert response["leader"] == member_id
    assert response["protocol_name"] == "range"
    assert [m["member_id"] for m in response["members"]] == [member_id]
    if join_version >= 7:
        assert response["protocol_type"] == "consumer"
    generation = response["generation_id"]
    sync = await call(
        broker,
        sync_group,
        sync_version,
        {
            "group_id": "g",
            "generation_id": generation,
            "member_id": member_id,
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": member_id, "assignment": b"asg"}],
        },
    )
    assert sync["error_code"] == OK
    assert sync["assignment"] == b"asg"
    if sync_version >= 5:
        assert (sync["protocol_type"], sync["protocol_name"]) == ("consumer", "range")
    return member_id


@pytest.mark.parametrize("version", versions(join_group))
async def test_join_sync_heartbeat_leave_every_join_version(
    broker: FakeBroker, version: int
) -> None:
    sync_version = min(version, 5)
    member_id = await join_and_sync(broker, version, sync_version)
    group = broker.service("group_coordinator").shard_for("g").classic.group("g")
    assert group.member(member_id).client_host == "/127.0.0.1"
    for hb_version in versions(heartbeat):
        response = await call(
            broker,
            heartbeat,
            hb_version,
            {
                "group_id": "g",
                "generation_id": 1,
                "member_id": member_id,
                "group_instance_id": None,
            },
        )
        assert response["error_code"] == OK
    leave_version = min(version, 5)
    response = await call(
        broker,
        leave_group,
        leave_version,
        {
            "group_id": "g",
            "member_id": member_id,
            "members": [{"member_id": member_id, "group_instance_id": None, "reason": None}],
        },
    )
    assert response["error_code"] == OK
    if leave_version >= 3:
        assert response["members"][0]["error_code"] == OK
    assert group.members == {}


@pytest.mark.parametrize("version", versions(sync_group))
async def test_sync_errors_encode_at_every_version(broker: FakeBroker, version: int) -> None:
    response = await call(
        broker,
        sync_group,
        version,
        {
            "group_id": "",
            "generation_id": 1,
            "member_id": "m",
            "group_instance_id": None,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [],
        },
    )
    assert response["error_code"] == ErrorCode.INVALID_GROUP_ID


async def test_static_member_join_v5(broker: FakeBroker) -> None:
    response = await call(broker, join_group, 5, join_body(instance_id="inst"))
    assert response["error_code"] == OK
    assert response["member_id"].startswith("inst-u")
    assert response["members"][0]["group_instance_id"] == "inst"


@pytest.mark.parametrize("version", versions(find_coordinator))
async def test_find_coordinator_every_version(broker: FakeBroker, version: int) -> None:
    request = {"key": "g", "key_type": 0, "coordinator_keys": ["g", "h"]}
    response = await call(broker, find_coordinator, version, request)
    if version < 4:
        assert response["error_code"] == OK
        assert (response["node_id"], response["host"], response["port"]) == (
            1,
            "broker.local",
            9092,
        )
    else:
        assert [(c["key"], c["node_id"], c["error_code"]) for c in response["coordinators"]] == [
            ("g", 1, OK),
            ("h", 1, OK),
        ]


class _FakeTxnCoordinator:
    def __init__(self, error: ErrorCode) -> None:
        self.error = error

    async def find_coordinator(self, transactional_id: str) -> ErrorCode:
        return self.error


@pytest.mark.parametrize("version", [1, 3, 4, 6])
@pytest.mark.parametrize("error", [ErrorCode.NO_ERROR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS])
async def test_find_transaction_coordinator(
    broker: FakeBroker, version: int, error: ErrorCode
) -> None:
    broker.services["transaction_coordinator"] = _FakeTxnCoordinator(error)
    request = {"key": "txn", "key_type": 1, "coordinator_keys": ["txn"]}
    response = await call(broker, find_coordinator, version, request)
    answers = (
        [(response["error_code"], response["node_id"])]
        if version < 4
        else [(c["error_code"], c["node_id"]) for c in response["coordinators"]]
    )
    assert answers == [(error, 1 if error == ErrorCode.NO_ERROR else -1)]


async def test_find_coordinator_unknown_key_type(broker: FakeBroker) -> None:
    request = {"key": "x", "key_type": 9, "coordinator_keys": ["x"]}
    response = await call(broker, find_coordinator, 4, request)
    assert response["coordinators"][0]["error_code"] == ErrorCode.INVALID_REQUEST
    response = await call(broker, find_coordinator, 2, request)
    assert response["error_code"] == ErrorCode.INVALID_REQUEST
    assert response["node_id"] == -1


def commit_body(topics: list[tuple[str, list[int]]], metadata: str | None = "md") -> dict[str, Any]:
    return {
        "group_id": "g",
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "group_instance_id": None,
        "retention_time_ms": -1,
        "topics": [
            {
                "name": name,
                "partitions": [
                    {
                        "partition_index": p,
                        "committed_offset": 100 + p,
                        "committed_leader_epoch": 4,
                        "commit_timestamp": -1,
                        "committed_metadata": metadata,
                    }
                    for p in parts
                ],
            }
            for name, parts in topics
        ],
    }


@pytest.mark.parametrize("version", versions(offset_commit))
async def test_offset_commit_every_version(broker: FakeBroker, version: int) -> None:
    response = await call(
        broker, offset_commit, version, commit_body([("t", [0, 5, 1]), ("missing", [0])])
    )
    assert [
        (t["name"], [(p["partition_index"], p["error_code"]) for p in t["partitions"]])
        for t in response["topics"]
    ] == [
        ("t", [(0, OK), (5, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), (1, OK)]),
        ("missing", [(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]),
    ]


@pytest.mark.parametrize("version", versions(offset_fetch))
async def test_offset_fetch_every_version(broker: FakeBroker, version: int) -> None:
    await call(broker, offset_commit, 9, commit_body([("t", [0, 1])], metadata=None))
    topics = [{"name": "t", "partition_indexes": [0, 1, 2]}]
    request = {
        "group_id": "g",
        "topics": topics,
        "groups": [{"group_id": "g", "member_id": None, "member_epoch": -1, "topics": topics}],
        "require_stable": True,
    }
    response = await call(broker, offset_fetch, version, request)
    if version >= 8:
        [group] = response["groups"]
        assert group["group_id"] == "g"
        assert group["error_code"] == OK
        partitions = group["topics"][0]["partitions"]
    else:
        if version >= 2:
            assert response["error_code"] == OK
        partitions = response["topics"][0]["partitions"]
    expected_epoch = 4 if version >= 5 else -1
    assert [
        (p["partition_index"], p["committed_offset"], p["committed_leader_epoch"], p["metadata"])
        for p in partitions
    ] == [(0, 100, expected_epoch, ""), (1, 101, expected_epoch, ""), (2, -1, -1, "")]
    assert all(p["error_code"] == OK for p in partitions)


@pytest.mark.parametrize("version", [2, 7, 8, 9])
async def test_offset_fetch_all_topics(broker: FakeBroker, version: int) -> None:
    await call(broker, offset_commit, 9, commit_body([("t", [1, 0])]))
    request = {
        "group_id": "g",
        "topics": None,
        "groups": [{"group_id": "g", "member_id": None, "member_epoch": -1, "topics": None}],
        "require_stable": False,
    }
    response = await call(broker, offset_fetch, version, request)
    topics = response["groups"][0]["topics"] if version >= 8 else response["topics"]
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in topics] == [
        ("t", [0, 1])
    ]
    assert topics[0]["partitions"][0]["metadata"] == "md"


async def test_empty_group_id_is_invalid_for_membership_apis(broker: FakeBroker) -> None:
    body = join_body()
    body["group_id"] = ""
    response = await call(broker, join_group, 9, body)
    assert response["error_code"] == ErrorCode.INVALID_GROUP_ID
    hb = {"group_id": "", "generation_id": 1, "member_id": "m", "group_instance_id": None}
    assert (await call(broker, heartbeat, 4, hb))["error_code"] == ErrorCode.INVALID_GROUP_ID
    leave = {"group_id": "", "member_id": "m", "members": []}
    assert (await call(broker, leave_group, 1, leave))["error_code"] == ErrorCode.INVALID_GROUP_ID
