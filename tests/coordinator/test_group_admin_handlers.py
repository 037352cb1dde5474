"""The admin and KIP-848 handlers at every version: requests go through the codec, responses
must encode. DescribeGroups, ListGroups, DeleteGroups, OffsetDelete, ConsumerGroupHeartbeat,
ConsumerGroupDescribe, and the consumer-group side of OffsetCommit/OffsetFetch."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from pykbroker.api.handlers import (
    consumer_group_describe,
    consumer_group_heartbeat,
    delete_groups,
    describe_groups,
    list_groups,
    offset_commit,
    offset_delete,
    offset_fetch,
)
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.coordinator import GroupCoordinator

from .support import MemoryLog
from .test_handlers import TOPIC_ID, FakeBroker, call, commit_body, join_and_sync, versions
from .test_handlers import broker as broker  # the fixture

OK = ErrorCode.NO_ERROR


def cg_body(member_id: str, epoch: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "group_id": "cg",
        "member_id": member_id,
        "member_epoch": epoch,
        "instance_id": None,
        "rack_id": None,
        "rebalance_timeout_ms": -1,
        "subscribed_topic_names": None,
        "subscribed_topic_regex": None,
        "server_assignor": None,
        "topic_partitions": None,
    }
    body.update(fields)
    return body


def join_body(member_id: str = "m1", **fields: Any) -> dict[str, Any]:
    joining: dict[str, Any] = {
        "rebalance_timeout_ms": 30_000,
        "subscribed_topic_names": ["t"],
        "topic_partitions": [],
    }
    return cg_body(member_id, 0, **{**joining, **fields})


@pytest.mark.parametrize("version", versions(consumer_group_heartbeat))
async def test_consumer_group_heartbeat_every_version(broker: FakeBroker, version: int) -> None:
    response = await call(broker, consumer_group_heartbeat, version, join_body())
    assert response["error_code"] == OK
    assert (response["member_id"], response["member_epoch"]) == ("m1", 1)
    assert response["heartbeat_interval_ms"] == 5000
    assert response["assignment"] == {
        "topic_partitions": [{"topic_id": TOPIC_ID, "partitions": [0, 1]}]
    }
    owned = [{"topic_id": TOPIC_ID, "partitions": [0, 1]}]
    response = await call(
        broker, consumer_group_heartbeat, version, cg_body("m1", 1, topic_partitions=owned)
    )
    assert (response["error_code"], response["member_epoch"], response["assignment"]) == (
        OK,
        1,
        None,
    )
    response = await call(broker, consumer_group_heartbeat, version, cg_body("m1", -1))
    assert (response["error_code"], response["member_epoch"]) == (OK, -1)


async def test_consumer_group_heartbeat_member_ids_per_version(broker: FakeBroker) -> None:
    v0 = await call(broker, consumer_group_heartbeat, 0, join_body(""))
    assert (v0["error_code"], v0["member_id"]) == (OK, "u1")
    v1 = await call(broker, consumer_group_heartbeat, 1, join_body(""))
    assert (v1["error_code"], v1["error_message"]) == (
        ErrorCode.INVALID_REQUEST,
        "MemberId can't be empty.",
    )
    assert v1["member_id"] is None
    regex = await call(
        broker,
        consumer_group_heartbeat,
        1,
        join_body("m2", subscribed_topic_names=None, subscribed_topic_regex="t|x"),
    )
    assert regex["error_code"] == OK


async def test_consumer_group_describe_v0(broker: FakeBroker) -> None:
    await call(broker, consumer_group_heartbeat, 1, join_body(instance_id="i1"))
    request = {"group_ids": ["cg", "missing"], "include_authorized_operations": True}
    response = await call(broker, consumer_group_describe, 0, request)
    described, missing = response["groups"]
    assert (described["group_state"], described["group_epoch"], described["assignor_name"]) == (
        "Stable",
        1,
        "uniform",
    )
    assert described["authorized_operations"] == 3400
    [member] = described["members"]
    assert (member["member_id"], member["instance_id"], member["client_id"]) == (
        "m1",
        "i1",
        "client-1",
    )
    assert member["assignment"]["topic_partitions"] == [
        {"topic_id": TOPIC_ID, "topic_name": "t", "partitions": [0, 1]}
    ]
    assert missing["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND


async def test_consumer_group_describe_v1_says_members_use_the_consumer_protocol(
    broker: FakeBroker,
) -> None:
    await call(broker, consumer_group_heartbeat, 1, join_body())
    request = {"group_ids": ["cg"], "include_authorized_operations": False}
    [v1] = (await call(broker, consumer_group_describe, 1, request))["groups"]
    [v0] = (await call(broker, consumer_group_describe, 0, request))["groups"]
    assert [m["member_type"] for m in v1["members"]] == [1]
    assert [m["member_type"] for m in v0["members"]] == [-1]  # not on the wire before v1
    assert v1["authorized_operations"] == -2147483648


@pytest.mark.parametrize("version", versions(describe_groups))
async def test_describe_groups_every_version(broker: FakeBroker, version: int) -> None:
    member_id = await join_and_sync(broker, 9, 5)
    request = {"groups": ["g", "missing"], "include_authorized_operations": True}
    response = await call(broker, describe_groups, version, request)
    described, missing = response["groups"]
    assert (described["error_code"], described["group_state"]) == (OK, "Stable")
    assert (described["protocol_type"], described["protocol_data"]) == ("consumer", "range")
    [member] = described["members"]
    assert (member["member_id"], member["client_id"]) == (member_id, "client-1")
    assert (member["member_metadata"], member["member_assignment"]) == (b"sub", b"asg")
    if version >= 3:
        assert described["authorized_operations"] == 3400
    if version >= 6:
        assert missing["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
        assert missing["error_message"] == "Group missing not found."
    else:
        assert (missing["error_code"], missing["group_state"]) == (OK, "Dead")


@pytest.mark.parametrize("version", versions(list_groups))
async def test_list_groups_every_version(broker: FakeBroker, version: int) -> None:
    await join_and_sync(broker, 9, 5)
    await call(broker, consumer_group_heartbeat, 1, join_body())
    response = await call(
        broker, list_groups, version, {"states_filter": ["stable"], "types_filter": ["consumer"]}
    )
    assert response["error_code"] == OK
    listed = sorted((g["group_id"], g["protocol_type"]) for g in response["groups"])
    if version >= 5:
        assert listed == [("cg", "consumer")]
        assert response["groups"][0]["group_type"] == "consumer"
    else:
        assert listed == [("cg", "consumer"), ("g", "consumer")]
    if version >= 4:
        assert {g["group_state"] for g in response["groups"]} == {"Stable"}


@pytest.mark.parametrize("version", versions(delete_groups))
async def test_delete_groups_every_version(broker: FakeBroker, version: int) -> None:
    await join_and_sync(broker, 9, 5)
    await call(broker, offset_commit, 9, {**commit_body([("t", [0])]), "group_id": "simple"})
    request = {"groups_names": ["g", "simple", "missing", "simple"]}
    response = await call(broker, delete_groups, version, request)
    assert [(r["group_id"], r["error_code"]) for r in response["results"]] == [
        ("g", ErrorCode.NON_EMPTY_GROUP),
        ("simple", OK),
        ("missing", ErrorCode.GROUP_ID_NOT_FOUND),
    ]


async def test_offset_delete(broker: FakeBroker) -> None:
    await call(broker, offset_commit, 9, commit_body([("t", [0, 1])]))
    request = {
        "group_id": "g",
        "topics": [
            {"name": "t", "partitions": [{"partition_index": 0}, {"partition_index": 7}]},
            {"name": "nope", "partitions": [{"partition_index": 0}]},
        ],
    }
    response = await call(broker, offset_delete, 0, request)
    assert response["error_code"] == OK
    assert [
        (t["name"], p["partition_index"], p["error_code"])
        for t in response["topics"]
        for p in t["partitions"]
    ] == [
        ("t", 7, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("t", 0, OK),
        ("nope", 0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    missing = await call(broker, offset_delete, 0, {**request, "group_id": "missing"})
    assert (missing["error_code"], missing["topics"]) == (ErrorCode.GROUP_ID_NOT_FOUND, [])


async def test_offsets_of_a_consumer_group_member(broker: FakeBroker) -> None:
    await call(broker, consumer_group_heartbeat, 1, join_body())
    commit = {**commit_body([("t", [0])]), "group_id": "cg", "member_id": "m1"}
    ok = await call(broker, offset_commit, 9, {**commit, "generation_id_or_member_epoch": 1})
    assert ok["topics"][0]["partitions"][0]["error_code"] == OK
    stale = await call(broker, offset_commit, 9, {**commit, "generation_id_or_member_epoch": 7})
    assert stale["topics"][0]["partitions"][0]["error_code"] == ErrorCode.STALE_MEMBER_EPOCH
    old = await call(broker, offset_commit, 8, {**commit, "generation_id_or_member_epoch": 1})
    assert old["topics"][0]["partitions"][0]["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    topics = [{"name": "t", "partition_indexes": [0]}]

    def fetch(member_id: str | None, epoch: int) -> dict[str, Any]:
        group = {"group_id": "cg", "member_id": member_id, "member_epoch": epoch, "topics": topics}
        return {"groups": [group], "require_stable": True}

    response = await call(broker, offset_fetch, 9, fetch("m1", 1))
    [group] = response["groups"]
    assert group["error_code"] == OK
    assert group["topics"][0]["partitions"][0]["committed_offset"] == 100
    response = await call(broker, offset_fetch, 9, fetch("m1", 0))
    assert response["groups"][0]["error_code"] == ErrorCode.STALE_MEMBER_EPOCH
    response = await call(broker, offset_fetch, 9, fetch("x", 1))
    assert response["groups"][0]["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    response = await call(broker, offset_fetch, 9, fetch(None, -1))  # the admin client
    assert response["groups"][0]["error_code"] == OK
    # Before v9 the member is not known to the request: no check.
    response = await call(broker, offset_fetch, 8, fetch("m1", 0))
    assert response["groups"][0]["error_code"] == OK


async def test_require_stable_reads_after_pending_commits(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A commit whose append is slow is visible to a require_stable fetch sent after it."""

    class SlowLog(MemoryLog):
        async def append(self, partition: int, records: Any) -> None:
            await trio.sleep(1)
            await super().append(partition, records)

    coordinator = GroupCoordinator(SlowLog(), node_id=1, group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    nursery.start_soon(coordinator.commit_offsets, commit_body([("t", [0])]), 9)
    await trio.testing.wait_all_tasks_blocked()
    request = {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}]}
    unstable = await coordinator.fetch_offsets({**request, "require_stable": False}, 7)
    assert unstable["topics"][0]["partitions"][0]["committed_offset"] == -1
    stable = await coordinator.fetch_offsets({**request, "require_stable": True}, 7)
    assert stable["topics"][0]["partitions"][0]["committed_offset"] == 100


async def test_new_apis_before_loading() -> None:
    coordinator = GroupCoordinator(MemoryLog(), node_id=1)
    assert coordinator.list_groups() == (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, [])
    response = await coordinator.consumer_group_heartbeat(join_body(), 1, "c", "/h", None)  # type: ignore[arg-type]
    assert response["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
    deleted = await coordinator.delete_offsets("g", [("t", [0])])
    assert deleted["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


def test_settings_come_from_kafka_property_names() -> None:
    coordinator = GroupCoordinator(
        MemoryLog(),
        node_id=1,
        properties={
            "offsets.retention.minutes": "5",
            "offsets.retention.check.interval.ms": "1000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.consumer.assignors": (
                "org.apache.kafka.coordinator.group.assignor.RangeAssignor,uniform"
            ),
            "log.dirs": "/ignored",
        },
    )
    config = coordinator.config
    assert config.offsets_retention_ms == 300_000
    assert config.offsets_retention_check_interval_ms == 1000
    assert (
        config.group_consumer_session_timeout_ms,
        config.group_consumer_heartbeat_interval_ms,
    ) == (
        6000,
        1000,
    )
    assert config.group_consumer_assignors == ("range", "uniform")
    assert config.default_consumer_assignor == "range"
    with pytest.raises(ValueError, match="heartbeat"):
        GroupCoordinator(MemoryLog(), node_id=1, group_consumer_heartbeat_interval_ms=45_000)
    with pytest.raises(ValueError, match="unknown assignors"):
        GroupCoordinator(MemoryLog(), node_id=1, properties={"group.consumer.assignors": "sticky"})
