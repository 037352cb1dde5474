"""The trio GroupCoordinator over an in-memory CoordinatorLog, on trio's MockClock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.coordinator import GroupCoordinator
from pykbroker.coordinator.group.group import EMPTY, STABLE

from .support import MemoryLog

OK = ErrorCode.NO_ERROR


def make(log: MemoryLog, **kwargs: Any) -> GroupCoordinator:
    counter = itertools.count(1)
    return GroupCoordinator(
        log,
        node_id=1,
        offsets_topic_num_partitions=5,
        wall_clock=lambda: 1_700_000_000_000,
        new_uuid=lambda: f"u{next(counter)}",
        **kwargs,
    )


def join_request(member_id: str = "", **overrides: Any) -> dict[str, Any]:
    request = {
        "group_id": "g",
        "session_timeout_ms": 10_000,
        "rebalance_timeout_ms": 30_000,
        "member_id": member_id,
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b"meta"}],
        "reason": None,
    }
    request.update(overrides)
    return request


async def join(coordinator: GroupCoordinator, client_id: str, version: int = 9) -> dict[str, Any]:
    """JoinGroup the way a client does: rejoin after MEMBER_ID_REQUIRED."""
    response = await coordinator.join_group(join_request(), version, client_id, "/127.0.0.1")
    if response["error_code"] == ErrorCode.MEMBER_ID_REQUIRED:
        response = await coordinator.join_group(
            join_request(response["member_id"]), version, client_id, "/127.0.0.1"
        )
    return response


def sync_request(
    member_id: str, generation_id: int, assignments: dict[str, bytes]
) -> dict[str, Any]:
    return {
        "group_id": "g",
        "generation_id": generation_id,
        "member_id": member_id,
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocol_name": "range",
        "assignments": [{"member_id": m, "assignment": a} for m, a in assignments.items()],
    }


def heartbeat_request(member_id: str, generation_id: int) -> dict[str, Any]:
    return {
        "group_id": "g",
        "generation_id": generation_id,
        "member_id": member_id,
        "group_instance_id": None,
    }


def commit_request(
    offsets: dict[tuple[str, int], int], generation_id: int = -1, member_id: str = ""
) -> dict[str, Any]:
    topics: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": offset,
                "committed_leader_epoch": 3,
                "commit_timestamp": -1,
                "committed_metadata": f"m{offset}",
            }
        )
    return {
        "group_id": "g",
        "generation_id_or_member_epoch": generation_id,
        "member_id": member_id,
        "group_instance_id": None,
        "retention_time_ms": -1,
        "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
    }


async def form_group(
    coordinator: GroupCoordinator, *clients: str
) -> tuple[dict[str, dict[str, Any]], int]:
    """Join all clients concurrently, sync, and return their join responses and generation."""
    responses: dict[str, dict[str, Any]] = {}

    async def one(client_id: str) -> None:
        responses[client_id] = await join(coordinator, client_id)

    async with trio.open_nursery() as nursery:
        for client_id in clients:
            nursery.start_soon(one, client_id)
    generation = responses[clients[0]]["generation_id"]
    leader = responses[clients[0]]["leader"]
    assignments = {r["member_id"]: r["member_id"].encode() for r in responses.values()}
    synced: dict[str, dict[str, Any]] = {}

    async def sync(client_id: str) -> None:
        member_id = responses[client_id]["member_id"]
        given = assignments if member_id == leader else {}
        synced[client_id] = await coordinator.sync_group(
            sync_request(member_id, generation, given), 5
        )

    async with trio.open_nursery() as nursery:
        for client_id in clients:
            nursery.start_soon(sync, client_id)
    for client_id in clients:
        assert synced[client_id]["assignment"] == responses[client_id]["member_id"].encode()
    return responses, generation


async def test_two_consumers_join_after_the_initial_delay(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log = MemoryLog()
    coordinator = make(log)
    await nursery.start(coordinator.run)
    start = trio.current_time()
    responses, generation = await form_group(coordinator, "a", "b")
    # InitialDelayedJoin: 3 s after the first member, extended by 3 s since b arrived.
    assert trio.current_time() - start == pytest.approx(6.0)
    assert generation == 1
    assert {r["leader"] for r in responses.values()} == {responses["a"]["leader"]}
    assert sum(1 for r in responses.values() if r["members"]) == 1
    group = coordinator.shard_for("g").classic.group("g")
    assert group is not None
    assert group.is_in_state(STABLE)
    assert log.ensure_calls == 1  # created on the first append
    assert log.partitions[coordinator.partition_for("g")]


async def test_find_coordinator_creates_the_topic_once(nursery: trio.Nursery) -> None:
    log = MemoryLog()
    coordinator = make(log)
    await nursery.start(coordinator.run)
    assert log.ensure_calls == 0  # not at start-up
    assert await coordinator.find_coordinator("my-group") == (OK, 1906497762 % 5)
    assert await coordinator.find_coordinator("hello") == (OK, 99162322 % 5)
    assert log.ensure_calls == 1


async def test_requests_before_loading_get_load_in_progress() -> None:
    coordinator = make(MemoryLog())
    response = await coordinator.join_group(join_request(), 9, "c", "/h")
    assert response["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    fetched = await coordinator.fetch_offsets({"group_id": "g", "topics": None}, 7)
    assert fetched["error_code"] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    committed = await coordinator.commit_offsets(commit_request({("t", 0): 1}), 9)
    assert committed["topics"][0]["partitions"][0]["error_code"] == (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    )


async def test_session_expiry_on_the_mock_clock(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    coordinator = make(MemoryLog(), group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    responses, generation = await form_group(coordinator, "a", "b")
    a, b = responses["a"]["member_id"], responses["b"]["member_id"]
    for _ in range(3):
        await trio.sleep(3)
        response = await coordinator.heartbeat(heartbeat_request(a, generation), 4)
        assert response["error_code"] == OK
    await trio.sleep(3)
    group = coordinator.shard_for("g").classic.group("g")
    assert group is not None
    assert not group.has_member(b)  # b never heartbeated: expired after 10 s
    response = await coordinator.heartbeat(heartbeat_request(a, generation), 4)
    assert response["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS


async def test_offsets_and_groups_survive_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = MemoryLog()
    first = make(log, group_initial_rebalance_delay_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        responses, generation = await form_group(first, "a")
        a = responses["a"]["member_id"]
        committed = await first.commit_offsets(
            commit_request({("t", 0): 10, ("t", 1): 11, ("u", 0): 5}, generation, a), 9
        )
        assert all(p["error_code"] == OK for t in committed["topics"] for p in t["partitions"])
        nursery.cancel_scope.cancel()

    second = make(log, group_initial_rebalance_delay_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        group = second.shard_for("g").classic.group("g")
        assert group is not None
        assert group.is_in_state(STABLE)
        assert group.generation_id == generation
        assert group.member(a).assignment == a.encode()

        v7 = await second.fetch_offsets({"group_id": "g", "topics": None}, 7)
        assert v7["error_code"] == OK
        assert {
            (t["name"], p["partition_index"]): (p["committed_offset"], p["metadata"])
            for t in v7["topics"]
            for p in t["partitions"]
        } == {("t", 0): (10, "m10"), ("t", 1): (11, "m11"), ("u", 0): (5, "m5")}
        v8 = await second.fetch_offsets(
            {
                "groups": [
                    {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [1, 7]}]},
                    {"group_id": "nobody", "topics": None},
                ],
                "require_stable": True,
            },
            8,
        )
        [g, nobody] = v8["groups"]
        assert [
            (p["partition_index"], p["committed_offset"], p["committed_leader_epoch"])
            for p in g["topics"][0]["partitions"]
        ] == [(1, 11, 3), (7, -1, -1)]
        assert nobody == {"group_id": "nobody", "error_code": OK, "topics": []}

        # The loaded member keeps its session by heartbeating with its generation ...
        response = await second.heartbeat(heartbeat_request(a, generation), 4)
        assert response["error_code"] == OK
        # ... and loses it when it stops.
        await trio.sleep(11)
        assert group.is_in_state(EMPTY)
        nursery.cancel_scope.cancel()


async def test_failed_append_is_reported(nursery: trio.Nursery) -> None:
    log = MemoryLog()
    coordinator = make(log)
    await nursery.start(coordinator.run)
    log.fail_with = ErrorCode.NOT_LEADER_OR_FOLLOWER
    response = await coordinator.commit_offsets(commit_request({("t", 0): 1}), 9)
    assert response["topics"][0]["partitions"][0]["error_code"] == ErrorCode.NOT_COORDINATOR
    fetched = await coordinator.fetch_offsets({"group_id": "g", "topics": None}, 7)
    assert fetched["topics"] == []


class SlowLog(MemoryLog):
    """Appends wait until released."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.waiting = 0

    async def append(self, partition: int, records: Any) -> None:
        self.waiting += 1
        await self.gate.wait()
        await super().append(partition, records)


async def test_cancelled_leader_sync_still_completes_the_rebalance(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log = SlowLog()
    coordinator = make(log, group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    response = await join(coordinator, "a")
    member_id = response["member_id"]
    with trio.move_on_after(1):  # the client goes away while the group is being stored
        await coordinator.sync_group(sync_request(member_id, 1, {member_id: b"A"}), 5)
    assert log.waiting == 1
    log.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    group = coordinator.shard_for("g").classic.group("g")
    assert group is not None
    assert group.is_in_state(STABLE)
    again = await coordinator.sync_group(sync_request(member_id, 1, {}), 5)
    assert again["assignment"] == b"A"


async def test_leave_group_versions(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    coordinator = make(MemoryLog(), group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    responses, _ = await form_group(coordinator, "a", "b")
    a, b = responses["a"]["member_id"], responses["b"]["member_id"]
    v0 = await coordinator.leave_group({"group_id": "g", "member_id": "ghost"}, 0)
    assert v0 == {"error_code": ErrorCode.UNKNOWN_MEMBER_ID}
    v0 = await coordinator.leave_group({"group_id": "g", "member_id": a}, 2)
    assert v0 == {"error_code": OK}
    v3 = await coordinator.leave_group(
        {
            "group_id": "g",
            "members": [
                {"member_id": b, "group_instance_id": None, "reason": "bye"},
                {"member_id": "ghost", "group_instance_id": None, "reason": None},
            ],
        },
        5,
    )
    assert v3 == {
        "error_code": OK,
        "members": [
            {"member_id": b, "group_instance_id": None, "error_code": OK},
            {"member_id": "ghost", "group_instance_id": None, "error_code": 25},
        ],
    }
    empty = await coordinator.leave_group({"group_id": "", "members": []}, 3)
    assert empty == {"error_code": ErrorCode.INVALID_GROUP_ID, "members": []}


async def test_join_response_shapes_per_version(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    coordinator = make(MemoryLog(), group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    v0 = await coordinator.join_group(join_request(rebalance_timeout_ms=-1), 0, "c", "/h")
    assert v0["error_code"] == OK  # no MEMBER_ID_REQUIRED before v4
    assert v0["member_id"] == "c-u1"
    member = coordinator.shard_for("g").classic.group("g").member("c-u1")  # type: ignore[union-attr]
    assert member.rebalance_timeout_ms == 10_000  # v0: the session timeout
    error = await coordinator.join_group(join_request("bad"), 6, "c", "/h")
    assert error["protocol_name"] == ""  # not nullable before v7
    error = await coordinator.join_group(join_request("bad"), 7, "c", "/h")
    assert error["protocol_name"] is None


async def test_sync_v5_requires_protocol_type_and_name(nursery: trio.Nursery) -> None:
    coordinator = make(MemoryLog())
    await nursery.start(coordinator.run)
    request = sync_request("m", 1, {})
    request["protocol_name"] = None
    response = await coordinator.sync_group(request, 5)
    assert response["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


async def test_describe_list_and_delete_groups(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log = MemoryLog()
    coordinator = make(log, group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    responses, _ = await form_group(coordinator, "a")
    a = responses["a"]["member_id"]
    [described] = coordinator.describe_groups(["g"])
    assert described["group_state"] == "Stable"
    assert described["protocol_data"] == "range"
    assert described["members"][0]["member_id"] == a
    assert described["members"][0]["client_host"] == "/127.0.0.1"
    assert described["members"][0]["member_assignment"] == a.encode()
    [unknown] = coordinator.describe_groups(["none"], version=5)
    assert unknown["group_state"] == "Dead"
    assert unknown["error_code"] == OK
    [unknown] = coordinator.describe_groups(["none"], version=6)
    assert unknown["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert coordinator.list_groups() == (
        OK,
        [
            {
                "group_id": "g",
                "protocol_type": "consumer",
                "group_state": "Stable",
                "group_type": "classic",
            }
        ],
    )
    assert coordinator.list_groups(["empty"]) == (OK, [])
    assert await coordinator.delete_groups(["g", "none"]) == {
        "g": ErrorCode.NON_EMPTY_GROUP,
        "none": ErrorCode.GROUP_ID_NOT_FOUND,
    }
    await coordinator.commit_offsets(commit_request({("t", 0): 1}, 1, a), 9)
    await coordinator.leave_group({"group_id": "g", "member_id": a}, 1)
    assert await coordinator.delete_groups(["g"]) == {"g": OK}
    assert coordinator.shard_for("g").classic.group("g") is None
    fetched = await coordinator.fetch_offsets({"group_id": "g", "topics": None}, 7)
    assert fetched["topics"] == []
    # After a restart the deleted group stays deleted.
    again = make(log)
    async with trio.open_nursery() as inner:
        await inner.start(again.run)
        assert again.shard_for("g").classic.group("g") is None
        assert again.shard_for("g").offsets.offsets == {}
        inner.cancel_scope.cancel()


async def test_simple_consumer_offsets_reload_as_an_empty_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = MemoryLog()
    first = make(log)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await first.commit_offsets(commit_request({("t", 0): 42}), 2)
        nursery.cancel_scope.cancel()
    second = make(log)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        group = second.shard_for("g").classic.group("g")
        assert group is not None
        assert group.is_in_state(EMPTY)
        fetched = await second.fetch_offsets(
            {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}]}, 1
        )
        assert fetched["topics"][0]["partitions"][0]["committed_offset"] == 42
        # A member may now join the group the offsets made.
        response = await join(second, "a")
        assert response["error_code"] == OK
        nursery.cancel_scope.cancel()


async def test_leave_is_answered_once_the_empty_group_is_written(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """As Kafka: a clean LeaveGroup is durable when answered (a crash right after it must not
    bring the member back)."""
    log = MemoryLog()
    coordinator = make(log, group_initial_rebalance_delay_ms=0)
    await nursery.start(coordinator.run)
    responses, _ = await form_group(coordinator, "a")
    a = responses["a"]["member_id"]

    async def slow_append(partition: int, records: Any) -> None:
        await trio.sleep(5)
        log.partitions.setdefault(partition, []).extend(records)

    log.append = slow_append  # type: ignore[method-assign]
    before = trio.current_time()
    response = await coordinator.leave_group({"group_id": "g", "member_id": a}, 1)
    assert response["error_code"] == OK
    assert trio.current_time() - before >= 5
    again = make(log)
    async with trio.open_nursery() as inner:
        await inner.start(again.run)
        group = again.shard_for("g").classic.group("g")
        assert group is not None
        assert group.size() == 0
        inner.cancel_scope.cancel()
