"""KIP-848 consumer groups on the pure core, with an explicit clock: joins, revocation before
assignment, leaves, session and rebalance timeouts, static members, epochs, persistence."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group import consumer_group_records as cgr
from pykbroker.coordinator.group.consumer_group import (
    ConsumerGroup,
    ConsumerGroupMember,
    ConsumerGroupState,
    MemberState,
)
from pykbroker.coordinator.group.current_assignment import reconcile
from pykbroker.coordinator.group.records import GroupMetadataRecord, OffsetCommitRecord

from .support import ShardHarness, topic_id

OK = ErrorCode.NO_ERROR
T = topic_id("t")
ALL = list(range(6))


def group(h: ShardHarness, group_id: str = "g") -> ConsumerGroup:
    found = h.shard.consumer.group(group_id)
    assert found is not None
    return found


def assert_exclusive(g: ConsumerGroup) -> None:
    """Every partition has at most one owner, and the partition epochs say exactly that."""
    seen: dict[tuple[uuid.UUID, int], str] = {}
    for member in g.members.values():
        for assignment in (member.assigned_partitions, member.partitions_pending_revocation):
            for t, parts in assignment.items():
                for p in parts:
                    assert (t, p) not in seen, f"{t}-{p}: {seen.get((t, p))} and {member.member_id}"
                    seen[(t, p)] = member.member_id
                    assert g.partition_epochs[t][p] == member.member_epoch
    assert sum(len(e) for e in g.partition_epochs.values()) == len(seen)


def test_first_member_gets_every_partition_at_epoch_one() -> None:
    h = ShardHarness({"t": 6})
    r = h.join("m1")
    assert r["error_code"] == OK
    assert (r["member_id"], r["member_epoch"]) == ("m1", 1)
    assert r["heartbeat_interval_ms"] == 5000
    assert h.assigned(r) == {"t": ALL}
    g = group(h)
    assert (g.group_epoch, g.assignment_epoch, g.state) == (1, 1, ConsumerGroupState.STABLE)
    # The records, in Kafka's order: subscription, metadata, epoch, target, current assignment.
    assert [type(r).__name__ for r in h.records()] == [
        "ConsumerGroupMemberSubscription",
        "ConsumerGroupSubscriptionMetadata",
        "ConsumerGroupEpoch",
        "ConsumerGroupTargetAssignmentMember",
        "ConsumerGroupTargetAssignmentEpoch",
        "ConsumerGroupCurrentAssignment",
    ]
    # A plain heartbeat changes nothing, writes nothing and carries no assignment.
    written = len(h.records())
    r = h.cg_heartbeat("m1", 1, owned={"t": ALL})
    assert (r["error_code"], r["member_epoch"], r["assignment"]) == (OK, 1, None)
    assert len(h.records()) == written


def test_revocation_before_assignment() -> None:
    h = ShardHarness({"t": 6})
    h.join("m1")
    r2 = h.join("m2")
    g = group(h)
    # m2 is at the new epoch but gets nothing until m1 released the partitions.
    assert (r2["member_epoch"], h.assigned(r2)) == (2, {})
    assert g.members["m2"].state is MemberState.UNRELEASED_PARTITIONS
    assert g.state is ConsumerGroupState.RECONCILING
    # m1 is asked to give up half, staying at epoch 1.
    r1 = h.cg_heartbeat("m1", 1, owned={"t": ALL})
    assert (r1["member_epoch"], h.assigned(r1)) == (1, {"t": [0, 1, 2]})
    assert g.members["m1"].state is MemberState.UNREVOKED_PARTITIONS
    assert_exclusive(g)
    # While m1 still reports the partitions, m2 still waits.
    r2 = h.cg_heartbeat("m2", 2, owned={})
    assert (r2["member_epoch"], r2["assignment"]) == (2, None)
    r1 = h.cg_heartbeat("m1", 1, owned={"t": ALL})
    assert (r1["member_epoch"], r1["assignment"]) == (1, None)
    # m1 acknowledges: it moves to epoch 2, and the partitions are free.
    r1 = h.cg_heartbeat("m1", 1, owned={"t": [0, 1, 2]})
    assert (r1["member_epoch"], r1["assignment"]) == (2, None)
    assert_exclusive(g)
    r2 = h.cg_heartbeat("m2", 2, owned={})
    assert (r2["member_epoch"], h.assigned(r2)) == (2, {"t": [3, 4, 5]})
    assert group(h).state is ConsumerGroupState.STABLE
    assert_exclusive(g)


def two_stable_members(h: ShardHarness) -> None:
    h.join("m1")
    h.join("m2")
    h.cg_heartbeat("m1", 1, owned={"t": ALL})
    h.cg_heartbeat("m1", 1, owned={"t": [0, 1, 2]})
    h.cg_heartbeat("m2", 2, owned={})
    assert group(h).state is ConsumerGroupState.STABLE


def test_a_leaving_member_hands_its_partitions_over() -> None:
    h = ShardHarness({"t": 6})
    two_stable_members(h)
    r = h.cg_heartbeat("m2", -1)
    assert (r["error_code"], r["member_id"], r["member_epoch"]) == (OK, "m2", -1)
    g = group(h)
    assert set(g.members) == {"m1"}
    assert g.group_epoch == 3
    r = h.cg_heartbeat("m1", 2, owned={"t": [0, 1, 2]})
    assert (r["member_epoch"], h.assigned(r)) == (3, {"t": ALL})
    # Leaving again: the member is gone.
    assert h.cg_heartbeat("m2", -1)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID


def test_session_timeout_fences_a_silent_member() -> None:
    h = ShardHarness({"t": 6})
    two_stable_members(h)
    for _ in range(8):  # m1 heartbeats every 5 s for 40 s; m2 stays silent
        h.advance(5000)
        r = h.cg_heartbeat("m1", 2, owned={"t": [0, 1, 2]})
        assert r["member_epoch"] == 2
    h.advance(5000)  # 45 s after m2's last heartbeat
    assert "m2" not in group(h).members
    r = h.cg_heartbeat("m1", 2, owned={"t": [0, 1, 2]})
    assert (r["member_epoch"], h.assigned(r)) == (3, {"t": ALL})
    assert h.cg_heartbeat("m2", 2, owned={})["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID


def test_a_member_that_does_not_revoke_in_time_is_fenced() -> None:
    h = ShardHarness({"t": 6})
    h.join("m1")  # rebalance timeout 30 s
    h.join("m2")
    h.cg_heartbeat("m1", 1, owned={"t": ALL})
    for _ in range(5):  # m1 keeps its partitions for 25 s
        h.advance(5000)
        assert h.cg_heartbeat("m1", 1, owned={"t": ALL})["error_code"] == OK
        h.cg_heartbeat("m2", 2, owned={})
    h.advance(5000)
    assert "m1" not in group(h).members
    assert h.cg_heartbeat("m1", 1, owned={"t": ALL})["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    r = h.cg_heartbeat("m2", 2, owned={})
    assert h.assigned(r) == {"t": ALL}


def test_member_epoch_checks() -> None:
    h = ShardHarness({"t": 6})
    h.join("m1")
    r = h.cg_heartbeat("m1", 2, owned={"t": ALL})
    assert r["error_code"] == ErrorCode.FENCED_MEMBER_EPOCH
    assert h.cg_heartbeat("nobody", 1, owned={})["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    # The topic grows: m1 moves to epoch 2 with 8 partitions; its answer is "lost".
    h.set_topics({"t": 8})
    r = h.cg_heartbeat("m1", 1, owned={"t": ALL})
    assert (r["member_epoch"], h.assigned(r)) == (2, {"t": list(range(8))})
    # The previous epoch with a subset of the assignment is accepted...
    assert h.cg_heartbeat("m1", 1, owned={"t": ALL})["member_epoch"] == 2
    # ... an older epoch, or partitions it was never given, are not.
    assert h.join("m1")["member_epoch"] == 2  # epoch 0: a rejoin
    h.set_topics({"t": 8, "u": 1})
    bad = h.cg_heartbeat("m1", 1, owned={"u": [0]})
    assert bad["error_code"] == ErrorCode.FENCED_MEMBER_EPOCH


def test_a_rejoining_member_gets_its_whole_assignment_again() -> None:
    h = ShardHarness({"t": 6})
    h.join("m1")
    r = h.join("m1")  # e.g. after an error the client gave up its partitions
    assert (r["member_epoch"], h.assigned(r)) == (1, {"t": ALL})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"member_id": "", "member_epoch": 0, "version": 1}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "", "member_epoch": 3, "version": 0}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "m", "member_epoch": 0}, ErrorCode.INVALID_REQUEST),  # no timeout
        ({"member_id": "m", "member_epoch": 0, "rebalance_timeout_ms": 1, "owned": None}, None),
        ({"member_id": "m", "member_epoch": -2}, ErrorCode.INVALID_REQUEST),  # no instance
        ({"member_id": "m", "member_epoch": -3}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "m", "member_epoch": 1, "group_id": " "}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "m", "member_epoch": 1, "instance_id": ""}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "m", "member_epoch": 1, "regex": "("}, ErrorCode.INVALID_REQUEST),
        (
            {"member_id": "m", "member_epoch": 1, "assignor": "sticky"},
            ErrorCode.UNSUPPORTED_ASSIGNOR,
        ),
    ],
)
def test_malformed_heartbeats_are_rejected_without_a_trace(
    kwargs: dict[str, Any], error: ErrorCode | None
) -> None:
    h = ShardHarness({"t": 6})
    member_id = kwargs.pop("member_id")
    epoch = kwargs.pop("member_epoch")
    kwargs.setdefault("topics", ["t"])
    if error is None:  # epoch 0 with null owned partitions
        error = ErrorCode.INVALID_REQUEST
    r = h.cg_heartbeat(member_id, epoch, **kwargs)
    assert r["error_code"] == error
    assert r["error_message"]
    assert h.log == {}
    assert h.shard.consumer.groups == {}


def test_v0_lets_the_coordinator_name_a_joining_member() -> None:
    h = ShardHarness({"t": 2})
    r = h.cg_heartbeat("", 0, topics=["t"], owned={}, rebalance_timeout_ms=1000, version=0)
    assert (r["error_code"], r["member_id"], r["member_epoch"]) == (OK, "u1", 1)


def test_group_max_size() -> None:
    h = ShardHarness({"t": 2}, group_consumer_max_size=1)
    assert h.join("m1")["error_code"] == OK
    assert h.join("m2")["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert h.join("m1")["error_code"] == OK  # a known member may rejoin


def test_static_member_leaves_temporarily_and_is_replaced() -> None:
    h = ShardHarness({"t": 6})
    r = h.join("a1", instance_id="i1")
    assert h.assigned(r) == {"t": ALL}
    r = h.cg_heartbeat("a1", -2, instance_id="i1")
    assert (r["error_code"], r["member_epoch"]) == (OK, -2)
    g = group(h)
    assert g.members["a1"].member_epoch == -2
    # A dynamic member joins: the static member's partitions stay reserved.
    r = h.join("m2")
    assert h.assigned(r) == {}
    assert_exclusive(g)
    # The same instance comes back with a new member id: it takes its old target over.
    r = h.join("a2", instance_id="i1")
    assert r["error_code"] == OK
    assert h.assigned(r) == {"t": [0, 1, 2]}
    assert "a1" not in g.members
    assert g.static_members == {"i1": "a2"}
    assert_exclusive(g)
    r = h.cg_heartbeat("m2", g.members["m2"].member_epoch, owned={})
    assert h.assigned(r) == {"t": [3, 4, 5]}
    # While a2 is active, another process with the same instance id is refused ...
    assert h.join("a3", instance_id="i1")["error_code"] == ErrorCode.UNRELEASED_INSTANCE_ID
    # ... and the old member id is fenced.
    r = h.cg_heartbeat("a1", 1, instance_id="i1", owned={})
    assert r["error_code"] == ErrorCode.FENCED_INSTANCE_ID
    # A temporary leave without coming back ends with the session.
    h.cg_heartbeat("a2", group(h).members["a2"].member_epoch, instance_id="i1", owned={})
    h.cg_heartbeat("a2", -2, instance_id="i1")
    for _ in range(9):
        h.advance(5000)
        h.cg_heartbeat("m2", group(h).members["m2"].member_epoch, owned={"t": [3, 4, 5]})
    assert "a2" not in g.members
    assert g.members["m2"].assigned_partitions == {T: frozenset(ALL)}


def test_static_member_leaving_for_good() -> None:
    h = ShardHarness({"t": 2})
    h.join("a1", instance_id="i1")
    assert h.cg_heartbeat("a1", -1, instance_id="x")["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.cg_heartbeat("a9", -1, instance_id="i1")["error_code"] == (
        ErrorCode.FENCED_INSTANCE_ID
    )
    assert h.cg_heartbeat("a1", -1, instance_id="i1")["error_code"] == OK
    assert group(h).members == {}
    assert group(h).state is ConsumerGroupState.EMPTY


def test_topic_changes_reassign() -> None:
    h = ShardHarness({"t": 2})
    h.join("m1", topics=["t", "u"])
    assert group(h).subscription_metadata.keys() == {"t"}  # u does not exist yet
    h.set_topics({"t": 4, "u": 1})
    r = h.cg_heartbeat("m1", 1, owned={"t": [0, 1]})
    assert (r["member_epoch"], h.assigned(r)) == (2, {"t": [0, 1, 2, 3], "u": [0]})
    # The subscription changes: u is dropped (revoked first).
    r = h.cg_heartbeat("m1", 2, topics=["t"], owned={"t": [0, 1, 2, 3], "u": [0]})
    assert (r["member_epoch"], h.assigned(r)) == (2, {"t": [0, 1, 2, 3]})
    r = h.cg_heartbeat("m1", 2, owned={"t": [0, 1, 2, 3]})
    assert r["member_epoch"] == 3


def test_regular_expression_subscription() -> None:
    h = ShardHarness({"t1": 2, "t2": 1, "x": 3, "__consumer_offsets": 3})
    r = h.cg_heartbeat("m1", 0, regex="t.*|__.*", owned={}, rebalance_timeout_ms=1000)
    assert h.assigned(r) == {"t1": [0, 1], "t2": [0]}
    h.set_topics({"t1": 2, "t2": 1, "t3": 1, "x": 3})
    r = h.cg_heartbeat("m1", 1, owned={"t1": [0, 1], "t2": [0]})
    assert h.assigned(r) == {"t1": [0, 1], "t2": [0], "t3": [0]}
    assert group(h).is_subscribed_to_topic("t3")
    assert not group(h).is_subscribed_to_topic("x")


def test_server_assignor_choice_and_range_co_partitioning() -> None:
    h = ShardHarness({"t": 4, "u": 4})
    ra = h.join("a", topics=["t", "u"], assignor="range")
    rb = h.join("b", topics=["t", "u"], assignor="range")
    g = group(h)
    assert g.preferred_server_assignor("uniform") == "range"
    assert h.assigned(ra) == {"t": [0, 1, 2, 3], "u": [0, 1, 2, 3]}
    assert h.assigned(rb) == {}
    r = h.cg_heartbeat("a", 1, owned={"t": [0, 1, 2, 3], "u": [0, 1, 2, 3]})
    assert h.assigned(r) == {"t": [0, 1], "u": [0, 1]}
    h.cg_heartbeat("a", 1, owned={"t": [0, 1], "u": [0, 1]})
    r = h.cg_heartbeat("b", 2, owned={})
    assert h.assigned(r) == {"t": [2, 3], "u": [2, 3]}


def test_state_survives_a_restart() -> None:
    h = ShardHarness({"t": 6})
    two_stable_members(h)
    h.join("s1", instance_id="i1")  # a third member, still reconciling
    before = group(h)
    again = h.restarted()
    after = group(again)
    assert after.members == before.members
    assert after.target_assignment == before.target_assignment
    assert (after.group_epoch, after.assignment_epoch, after.state) == (
        before.group_epoch,
        before.assignment_epoch,
        before.state,
    )
    assert after.static_members == {"i1": "s1"}
    assert after.partition_epochs == before.partition_epochs
    # The members go on where they were.
    epoch = after.members["m1"].member_epoch
    r = again.cg_heartbeat("m1", epoch, owned={"t": [0, 1, 2]})
    assert r["error_code"] == OK
    # Sessions restarted with the load: silent members are fenced 45 s later.
    again.advance(45_000)
    assert again.shard.consumer.group("g") is not None
    assert group(again).members == {}


def test_deleted_group_stays_deleted_after_a_restart() -> None:
    h = ShardHarness({"t": 2})
    h.join("m1")
    h.commit({("t", 0): 5})  # a simple commit into a non-empty group: refused
    assert h.committed() == {}
    future_results = delete(h, ["g"])
    assert future_results == {"g": ErrorCode.NON_EMPTY_GROUP}
    h.cg_heartbeat("m1", -1)
    assert h.commit({("t", 0): 5}) == {("t", 0): OK}
    assert delete(h, ["g"]) == {"g": OK}
    assert h.shard.consumer.group("g") is None
    again = h.restarted()
    assert again.shard.consumer.group("g") is None
    assert again.shard.classic.group("g") is None
    assert again.committed() == {}


def delete(h: ShardHarness, group_ids: list[str]) -> dict[str, ErrorCode]:
    from pykbroker.coordinator.group.result import ResponseFuture

    future = ResponseFuture()
    h.apply(h.shard.delete_groups(group_ids, future))
    result: dict[str, ErrorCode] = future.result()
    return result


def test_consumer_group_takes_over_an_empty_classic_group_keeping_offsets() -> None:
    h = ShardHarness({"t": 2})
    assert h.commit({("t", 0): 7}, group_id="g") == {("t", 0): OK}
    assert h.shard.classic.group("g") is not None  # a simple (Empty classic) group
    r = h.join("m1")
    assert r["error_code"] == OK
    assert h.shard.classic.group("g") is None
    assert h.committed() == {("t", 0): 7}
    tombstones = [r for r in h.records() if isinstance(r, GroupMetadataRecord)]
    assert tombstones == [GroupMetadataRecord("g", None)]
    again = h.restarted()
    assert again.shard.classic.group("g") is None
    assert group(again).members.keys() == {"m1"}


def test_group_types_do_not_mix() -> None:
    h = ShardHarness({"t": 2})
    h.classic_member("a", group_id="c")
    r = h.join("m1", group_id="c")
    assert r["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert "not a consumer group" in r["error_message"]
    h.join("m1", group_id="k")
    with pytest.raises(AssertionError, match="INCONSISTENT_GROUP_PROTOCOL"):
        h.classic_member("b", group_id="k")
    # Once the consumer group is empty, a classic member may take the id over.
    h.cg_heartbeat("m1", -1, group_id="k")
    h.classic_member("b", group_id="k")
    assert h.shard.consumer.group("k") is None
    classic = h.shard.classic.group("k")
    assert classic is not None
    assert classic.size() == 1
    assert any(
        isinstance(r, cgr.ConsumerGroupEpoch) and r.epoch is None and r.group_id == "k"
        for r in h.records()
    )


def test_offset_commit_and_fetch_check_member_epochs() -> None:
    h = ShardHarness({"t": 2})
    h.join("m1")
    assert h.commit({("t", 0): 1}, generation_id=1, member_id="m1") == {("t", 0): OK}
    assert h.commit({("t", 0): 2}, generation_id=0, member_id="m1") == {
        ("t", 0): ErrorCode.STALE_MEMBER_EPOCH
    }
    assert h.commit({("t", 0): 2}, generation_id=1, member_id="x") == {
        ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
    }
    assert h.commit({("t", 0): 2}, generation_id=1, member_id="m1", api_version=8) == {
        ("t", 0): ErrorCode.UNSUPPORTED_VERSION
    }
    assert h.committed() == {("t", 0): 1}
    fetch = h.shard.fetch_offsets
    assert fetch("g", [("t", [0])], "m1", 1)[0] == OK
    assert fetch("g", [("t", [0])], "m1", 0)[0] == ErrorCode.STALE_MEMBER_EPOCH
    assert fetch("g", [("t", [0])], "x", 1)[0] == ErrorCode.UNKNOWN_MEMBER_ID
    assert fetch("g", [("t", [0])], None, -1) == (
        OK,
        [
            {
                "name": "t",
                "partitions": [
                    {
                        "partition_index": 0,
                        "committed_offset": 1,
                        "committed_leader_epoch": -1,
                        "metadata": "",
                        "error_code": OK,
                    }
                ],
            }
        ],
    )


def test_failed_append_answers_an_error() -> None:
    h = ShardHarness({"t": 2})
    h.append_error = ErrorCode.NOT_LEADER_OR_FOLLOWER
    r = h.join("m1")
    assert r["error_code"] == ErrorCode.NOT_COORDINATOR


def test_reconcile_keeps_a_member_that_cannot_progress() -> None:
    member = ConsumerGroupMember(
        "m",
        member_epoch=3,
        previous_member_epoch=2,
        state=MemberState.UNREVOKED_PARTITIONS,
        assigned_partitions={T: frozenset({0})},
        partitions_pending_revocation={T: frozenset({1})},
    )
    target = {T: frozenset({0})}
    # Not reported: assumed still owned.
    assert reconcile(member, 4, target, lambda t, p: -1, None) is member
    assert reconcile(member, 4, target, lambda t, p: -1, [(T, [0, 1])]) is member
    done = reconcile(member, 4, target, lambda t, p: -1, [(T, [0])])
    assert (done.member_epoch, done.previous_member_epoch, done.state) == (
        4,
        3,
        MemberState.STABLE,
    )


class Clients:
    """Simulated consumers that do what the coordinator tells them (librdkafka's behaviour)."""

    def __init__(self, h: ShardHarness, seed: int) -> None:
        self.h = h
        self.seed = seed
        self.clients: dict[str, dict[str, Any]] = {}  # member id -> epoch, owned, topics

    def join(self, member_id: str, topics: list[str]) -> None:
        r = self.h.join(member_id, topics=topics)
        assert r["error_code"] == OK, r
        self.clients[member_id] = {
            "epoch": r["member_epoch"],
            "owned": self.h.assigned(r) or {},
            "topics": topics,
        }

    def beat(self, member_id: str) -> None:
        client = self.clients[member_id]
        r = self.h.cg_heartbeat(member_id, client["epoch"], owned=client["owned"])
        if r["error_code"] != OK:
            # Fenced: the client drops everything and rejoins.
            assert r["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID, r
            self.join(member_id, client["topics"])
            return
        client["epoch"] = r["member_epoch"]
        new = self.h.assigned(r)
        if new is not None:
            client["owned"] = new

    def check(self) -> None:
        owners: dict[tuple[str, int], str] = {}
        for member_id, client in self.clients.items():
            for topic, parts in client["owned"].items():
                for p in parts:
                    assert (topic, p) not in owners, (self.seed, topic, p)
                    owners[(topic, p)] = member_id
        g = self.h.shard.consumer.group("g")
        if g is not None:
            assert_exclusive(g)


@pytest.mark.parametrize("seed", range(12))
def test_random_churn_never_gives_a_partition_to_two_clients(seed: int) -> None:
    """A seeded simulation of clients that do what the coordinator tells them: joins, leaves,
    crashes, topic growth. At every moment no partition is owned by two live clients, and
    the group converges to a balanced assignment of every partition."""
    rng = random.Random(seed)
    h = ShardHarness({"t": 6, "u": 3})
    sim = Clients(h, seed)
    next_id = 0
    for _ in range(150):
        action = rng.random()
        if action < 0.12 or not sim.clients:
            next_id += 1
            sim.join(f"m{next_id}", rng.choice([["t"], ["t", "u"], ["u"]]))
        elif action < 0.17 and len(sim.clients) > 1:
            member_id = rng.choice(sorted(sim.clients))
            h.cg_heartbeat(member_id, -1)
            del sim.clients[member_id]
        elif action < 0.20 and len(sim.clients) > 1:
            # A crash: the client is gone, its session will run out.
            del sim.clients[rng.choice(sorted(sim.clients))]
        elif action < 0.22:
            h.set_topics({"t": 6 + rng.randint(0, 3), "u": 3})
        else:
            h.advance(rng.randint(0, 2000))
            for member_id in sorted(sim.clients):
                sim.beat(member_id)
        sim.check()
    # Quiet time: the crashed members expire; everyone heartbeats until nothing changes.
    for _ in range(10):
        h.advance(5000)
        for member_id in sorted(sim.clients):
            sim.beat(member_id)
        sim.check()
    g = group(h)
    assert g.state is ConsumerGroupState.STABLE, g
    assert set(g.members) == set(sim.clients)
    subscribed = {t for c in sim.clients.values() for t in c["topics"]}
    owned = sorted((t, p) for c in sim.clients.values() for t, ps in c["owned"].items() for p in ps)
    expected = sorted((t, p) for t in subscribed for p in range(len(h.image.topics[t].partitions)))
    assert owned == expected


def test_empty_classic_group_after_takeover_is_not_recreated_by_offsets_on_load() -> None:
    h = ShardHarness({"t": 2})
    h.commit({("t", 0): 3})
    h.join("m1")
    again = h.restarted()
    assert again.shard.classic.group("g") is None
    assert [r for r in again.records() if isinstance(r, OffsetCommitRecord)]
    assert again.committed() == {("t", 0): 3}
    assert group(again).state is ConsumerGroupState.STABLE
