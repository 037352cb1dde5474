"""ListGroups / DescribeGroups / ConsumerGroupDescribe / DeleteGroups / OffsetDelete and
``offsets.retention.minutes`` expiry, on the pure core with an explicit clock."""

from __future__ import annotations

from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.records import GroupMetadataRecord, OffsetCommitRecord
from pykbroker.coordinator.group.result import ResponseFuture
from pykbroker.coordinator.group.shard import GROUP_AUTHORIZED_OPERATIONS

from .support import ShardHarness, topic_id

OK = ErrorCode.NO_ERROR
MINUTE = 60_000


def delete_offsets(h: ShardHarness, group_id: str, topics: list[tuple[str, list[int]]]) -> Any:
    future = ResponseFuture()
    h.apply(h.shard.delete_offsets(group_id, topics, future))
    return future.result()


def delete_groups(h: ShardHarness, group_ids: list[str]) -> Any:
    future = ResponseFuture()
    h.apply(h.shard.delete_groups(group_ids, future))
    return future.result()


def mixed(h: ShardHarness) -> None:
    """A stable classic group "c", a consumer group "g", a simple group "s"."""
    h.classic_member("a", group_id="c")
    h.join("m1", group_id="g")
    h.commit({("t", 0): 1}, group_id="s")


def test_list_groups_filters_by_state_and_type() -> None:
    h = ShardHarness({"t": 2})
    mixed(h)
    listed = {
        g["group_id"]: (g["protocol_type"], g["group_state"], g["group_type"])
        for g in h.shard.list_groups()
    }
    assert listed == {
        "c": ("consumer", "Stable", "classic"),
        "g": ("consumer", "Stable", "consumer"),
        "s": ("", "Empty", "classic"),
    }
    assert [g["group_id"] for g in h.shard.list_groups(["STABLE"])] == ["c", "g"]
    assert [g["group_id"] for g in h.shard.list_groups([" empty "])] == ["s"]
    assert [g["group_id"] for g in h.shard.list_groups([], ["Consumer"])] == ["g"]
    assert [g["group_id"] for g in h.shard.list_groups(["stable"], ["classic"])] == ["c"]
    assert h.shard.list_groups([], ["share"]) == []
    assert h.shard.list_groups(["nonsense"]) == []


def test_describe_groups_describes_classic_groups_only() -> None:
    h = ShardHarness({"t": 2})
    mixed(h)
    c, g, none = h.shard.describe_groups(["c", "g", "none"], 6, True)
    assert (c["error_code"], c["group_state"], c["protocol_data"]) == (OK, "Stable", "range")
    assert c["authorized_operations"] == GROUP_AUTHORIZED_OPERATIONS == 3400
    assert len(c["members"]) == 1
    assert c["members"][0]["client_id"] == "a"
    assert c["members"][0]["member_metadata"].startswith(b"\x00\x00")
    assert (g["error_code"], g["error_message"]) == (
        ErrorCode.GROUP_ID_NOT_FOUND,
        "Group g is not a classic group.",
    )
    assert none["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    # Before v6 an unknown group is "Dead" without an error.
    [old] = h.shard.describe_groups(["g"], 5, False)
    assert (old["error_code"], old["group_state"], old["members"]) == (OK, "Dead", [])
    assert old["authorized_operations"] == -(2**31)


def test_consumer_group_describe() -> None:
    h = ShardHarness({"t": 4})
    h.join("m1", instance_id="i1")
    h.join("m2")
    g, c, empty = h.shard.consumer_group_describe(["g", "c", ""], False, h.image)
    assert (g["error_code"], g["group_state"], g["group_epoch"], g["assignment_epoch"]) == (
        OK,
        "Reconciling",
        2,
        2,
    )
    assert g["assignor_name"] == "uniform"
    members = {m["member_id"]: m for m in g["members"]}
    m1 = members["m1"]
    assert (m1["instance_id"], m1["member_epoch"], m1["member_type"]) == ("i1", 1, 1)
    assert m1["subscribed_topic_names"] == ["t"]
    assert m1["client_host"] == "/127.0.0.1"
    assert m1["assignment"]["topic_partitions"] == [
        {"topic_id": topic_id("t"), "topic_name": "t", "partitions": [0, 1, 2, 3]}
    ]
    assert m1["target_assignment"]["topic_partitions"][0]["partitions"] == [0, 1]
    assert members["m2"]["assignment"] == {"topic_partitions": []}
    assert c["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert empty["error_code"] == ErrorCode.INVALID_GROUP_ID


def test_delete_groups_rules_and_tombstones() -> None:
    h = ShardHarness({"t": 2})
    mixed(h)
    assert delete_groups(h, ["c", "g", "s", "none", ""]) == {
        "c": ErrorCode.NON_EMPTY_GROUP,
        "g": ErrorCode.NON_EMPTY_GROUP,
        "s": OK,
        "none": ErrorCode.GROUP_ID_NOT_FOUND,
        "": ErrorCode.INVALID_GROUP_ID,
    }
    assert h.shard.classic.group("s") is None
    assert h.committed("s") == {}
    assert OffsetCommitRecord("s", "t", 0, None) in h.records()
    assert GroupMetadataRecord("s", None) in h.records()
    h.cg_heartbeat("m1", -1)
    assert delete_groups(h, ["g"]) == {"g": OK}
    assert [g["group_id"] for g in h.shard.list_groups()] == ["c"]
    assert [g["group_id"] for g in h.restarted().shard.list_groups()] == ["c"]


def test_failed_delete_reports_the_error_and_keeps_the_group() -> None:
    h = ShardHarness({"t": 2})
    h.commit({("t", 0): 1}, group_id="s")
    h.append_error = ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert delete_groups(h, ["s"]) == {"s": ErrorCode.NOT_COORDINATOR}
    assert h.committed("s") == {("t", 0): 1}


def test_offset_delete() -> None:
    h = ShardHarness({"t": 2, "u": 2})
    h.join("m1", topics=["t"])
    h.cg_heartbeat("m1", -1)  # empty now, offsets may be committed by the admin
    h.commit({("t", 0): 1, ("u", 0): 2, ("u", 1): 3})
    h.join("m1", topics=["t"])  # subscribed to t again
    result = delete_offsets(h, "g", [("t", [0]), ("u", [0, 1])])
    assert result["error_code"] == OK
    assert [
        (t["name"], p["partition_index"], p["error_code"])
        for t in result["topics"]
        for p in t["partitions"]
    ] == [("t", 0, ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC), ("u", 0, OK), ("u", 1, OK)]
    assert h.committed() == {("t", 0): 1}
    # A partition without an offset is left out.
    assert delete_offsets(h, "g", [("u", [0])])["topics"] == [{"name": "u", "partitions": []}]
    assert delete_offsets(h, "none", [("u", [0])]) == {
        "error_code": ErrorCode.GROUP_ID_NOT_FOUND,
        "topics": [],
    }
    assert delete_offsets(h, "", [])["error_code"] == ErrorCode.INVALID_GROUP_ID


def test_offset_delete_in_classic_groups() -> None:
    h = ShardHarness({"t": 2, "u": 2})
    member, generation = h.classic_member("a", group_id="c", topics=["t"])
    h.commit({("t", 0): 1, ("u", 0): 1}, group_id="c", generation_id=generation, member_id=member)
    result = delete_offsets(h, "c", [("t", [0]), ("u", [0])])
    assert [p["error_code"] for t in result["topics"] for p in t["partitions"]] == [
        ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC,
        OK,
    ]
    h.classic_member("b", group_id="k", protocol_type="connect")
    assert delete_offsets(h, "k", [("t", [0])])["error_code"] == ErrorCode.NON_EMPTY_GROUP


def test_simple_offsets_expire_after_the_retention_and_the_group_goes() -> None:
    h = ShardHarness(
        {"t": 2}, offsets_retention_minutes=1, offsets_retention_check_interval_ms=10_000
    )
    h.shard.on_loaded(h.now)
    h.commit({("t", 0): 5}, group_id="s")
    h.advance(MINUTE - 10_000)  # checks at 10 s ... 50 s: too young
    assert h.committed("s") == {("t", 0): 5}
    h.advance(10_000)  # the check at 60 s
    assert h.committed("s") == {}
    assert h.shard.classic.group("s") is None
    assert OffsetCommitRecord("s", "t", 0, None) in h.records()
    assert GroupMetadataRecord("s", None) in h.records()
    assert h.restarted().shard.classic.group("s") is None


def test_expiry_spares_subscribed_topics_and_counts_from_the_empty_state() -> None:
    h = ShardHarness(
        {"t": 2, "u": 1}, offsets_retention_minutes=1, offsets_retention_check_interval_ms=10_000
    )
    h.shard.on_loaded(h.now)
    # A consumer group subscribed to t: its t offset stays, its u offset expires.
    h.join("m1", topics=["t"])
    h.commit({("t", 0): 1, ("u", 0): 1}, generation_id=1, member_id="m1")
    # A classic group: its offsets count from the moment it became Empty.
    member, generation = h.classic_member("a", group_id="c", topics=["t"])
    h.commit({("t", 0): 2}, group_id="c", generation_id=generation, member_id=member)
    for _ in range(6):  # keep everyone alive for 30 s
        h.advance(5_000)
        h.cg_heartbeat("m1", 1, owned={"t": [0, 1]})
        h.shard.classic.heartbeat("c", member, None, generation, h.now)
    _, errors, writes = h.shard.classic.leave_group("c", [(member, None)], h.now)
    h.apply(writes)
    assert errors == [OK]
    for _ in range(8):
        h.advance(5_000)
        h.cg_heartbeat("m1", 1, owned={"t": [0, 1]})
    # 70 s: the consumer group's u offset (committed at 0) expired, t is subscribed.
    assert h.committed("g") == {("t", 0): 1}
    # The classic group has been Empty for 40 s: its offset stays.
    assert h.committed("c") == {("t", 0): 2}
    for _ in range(5):
        h.advance(5_000)
        h.cg_heartbeat("m1", 1, owned={"t": [0, 1]})
    assert h.committed("c") == {}
    assert h.shard.classic.group("c") is None
    assert h.committed("g") == {("t", 0): 1}
    assert h.shard.consumer.group("g") is not None


def test_an_empty_consumer_group_without_offsets_is_deleted_by_the_cleanup() -> None:
    h = ShardHarness({"t": 2}, offsets_retention_check_interval_ms=10_000)
    h.shard.on_loaded(h.now)
    h.join("m1")
    h.cg_heartbeat("m1", -1)
    h.advance(10_000)
    assert h.shard.consumer.group("g") is None
    assert h.restarted().shard.consumer.group("g") is None
