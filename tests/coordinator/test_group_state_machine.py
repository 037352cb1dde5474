"""The pure classic group state machine, driven with explicit ``now_ms``."""

from __future__ import annotations

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.group import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
)
from pykbroker.coordinator.group.records import GroupMetadataRecord

from .support import RANGE, Harness

OK = ErrorCode.NO_ERROR


def test_single_member_join_sync_heartbeat_leave() -> None:
    h = Harness()
    first = h.join()
    response = first.result()
    assert response["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    member_id = response["member_id"]
    assert member_id == "c-u1"
    assert h.group().is_in_state(EMPTY)

    joined = h.join(member_id)
    assert not joined.done
    assert h.group().is_in_state(PREPARING_REBALANCE)
    h.advance(2999)
    assert not joined.done  # group.initial.rebalance.delay.ms
    h.advance(1)
    response = joined.result()
    assert response["error_code"] == OK
    assert response["generation_id"] == 1
    assert response["leader"] == member_id
    assert response["member_id"] == member_id
    assert response["protocol_type"] == "consumer"
    assert response["protocol_name"] == "range"
    assert response["members"] == [
        {"member_id": member_id, "group_instance_id": None, "metadata": b"range-meta"}
    ]
    assert h.group().is_in_state(COMPLETING_REBALANCE)
    assert h.heartbeat(member_id, 1) == OK

    synced = h.sync(member_id, 1, {member_id: b"assignment"})
    assert synced.result() == {
        "error_code": OK,
        "protocol_type": "consumer",
        "protocol_name": "range",
        "assignment": b"assignment",
    }
    assert h.group().is_in_state(STABLE)
    [record] = h.decoded()
    assert isinstance(record, GroupMetadataRecord)
    assert record.value is not None
    assert record.value["generation"] == 1
    assert record.value["members"][0]["assignment"] == b"assignment"

    assert h.heartbeat(member_id, 1) == OK
    assert h.heartbeat(member_id, 0) == ErrorCode.ILLEGAL_GENERATION
    assert h.heartbeat("nobody", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    # SyncGroup again in Stable answers the current assignment.
    assert h.sync(member_id, 1).result()["assignment"] == b"assignment"

    assert h.leave((member_id, None)) == (OK, [OK])
    group = h.group()
    assert group.is_in_state(EMPTY)
    assert group.generation_id == 2
    assert group.members == {}
    last = h.decoded()[-1]
    assert isinstance(last, GroupMetadataRecord)
    assert last.value is not None
    assert last.value["members"] == []
    assert last.value["generation"] == 2
    assert h.heartbeat(member_id, 2) == ErrorCode.UNKNOWN_MEMBER_ID


def test_two_members_rebalance_when_a_second_member_joins() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a")
    a = ids["a"]
    b_join = h.join_new_member(client_id="b")
    assert not b_join.done
    assert h.group().is_in_state(PREPARING_REBALANCE)
    assert h.heartbeat(a, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.sync(a, 1).result()["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS

    a_join = h.join(a, client_id="a")
    a_response, b_response = a_join.result(), b_join.result()
    assert a_response["generation_id"] == b_response["generation_id"] == 2
    assert a_response["leader"] == b_response["leader"] == a
    assert [m["member_id"] for m in a_response["members"]] == [a, b_response["member_id"]]
    assert b_response["members"] == []  # only the leader gets the member list

    b = b_response["member_id"]
    b_sync = h.sync(b, 2)
    assert not b_sync.done  # followers wait for the leader's assignment
    a_sync = h.sync(a, 2, {a: b"A", b: b"B"})
    assert a_sync.result()["assignment"] == b"A"
    assert b_sync.result()["assignment"] == b"B"
    assert h.group().is_in_state(STABLE)


def test_missing_assignment_is_empty_and_unknown_members_are_ignored() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = [h.join_new_member(client_id=n) for n in ("a", "b")]
    h.advance(0)
    a, b = (f.result()["member_id"] for f in futures)
    b_sync = h.sync(b, 1)
    h.sync(a, 1, {a: b"A", "ghost": b"G"})
    assert b_sync.result()["assignment"] == b""


def test_member_id_required_then_pending_member_expires() -> None:
    h = Harness()
    response = h.join(session_timeout_ms=6000).result()
    pending = response["member_id"]
    assert response["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    assert response["generation_id"] == -1
    assert h.group().is_pending_member(pending)
    h.advance(6000)
    assert not h.group().is_pending_member(pending)
    late = h.join(pending).result()
    assert late["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID


def test_join_before_v4_gets_a_member_id_at_once() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    future = h.join(version=3)
    h.advance(0)
    response = future.result()
    assert response["error_code"] == OK
    assert response["member_id"] == "c-u1"


def test_known_member_id_for_unknown_group_is_rejected() -> None:
    h = Harness()
    assert h.join("c-x").result()["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.gmm.group("g") is None


def test_invalid_requests() -> None:
    h = Harness()
    assert h.join(group_id="").result()["error_code"] == ErrorCode.INVALID_GROUP_ID
    too_short = h.join(session_timeout_ms=5999).result()
    assert too_short["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT
    too_long = h.join(session_timeout_ms=1_800_001).result()
    assert too_long["error_code"] == ErrorCode.INVALID_SESSION_TIMEOUT
    assert h.join(protocol_type="").result()["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert h.sync("m", 1, group_id="").result()["error_code"] == ErrorCode.INVALID_GROUP_ID
    assert h.heartbeat("m", 1, group_id="") == ErrorCode.INVALID_GROUP_ID
    assert h.leave(("m", None), group_id="") == (ErrorCode.INVALID_GROUP_ID, [])
    assert h.sync("m", 1, group_id="nope").result()["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat("m", 1, group_id="nope") == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.leave(("m", None), group_id="nope") == (OK, [ErrorCode.UNKNOWN_MEMBER_ID])


def test_inconsistent_protocols_are_rejected() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    h.stable_group("a")
    other_type = h.join(protocol_type="connect").result()
    assert other_type["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    no_common = h.join(protocols=[("roundrobin", b"")]).result()
    assert no_common["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_is_chosen_by_votes_among_common_protocols() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = [
        h.join_new_member(client_id="a", protocols=[("range", b"1"), ("roundrobin", b"2")]),
        h.join_new_member(
            client_id="b", protocols=[("roundrobin", b"3"), ("range", b"4"), ("sticky", b"")]
        ),
        h.join_new_member(client_id="c", protocols=[("roundrobin", b"5"), ("range", b"6")]),
    ]
    h.advance(0)
    leader = futures[0].result()
    assert leader["protocol_name"] == "roundrobin"
    assert [m["metadata"] for m in leader["members"]] == [b"2", b"3", b"5"]


def test_session_expiry_removes_the_member_and_rebalances() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b", session_timeout_ms=10_000)
    a, b = ids["a"], ids["b"]
    for _ in range(3):
        h.advance(3000)
        assert h.heartbeat(a, 1) == OK
    assert h.group().is_in_state(STABLE)
    h.advance(1000)  # b's last heartbeat (its SyncGroup) was 10 s ago
    group = h.group()
    assert not group.has_member(b)
    assert group.is_in_state(PREPARING_REBALANCE)
    assert h.heartbeat(a, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    response = h.join(a, client_id="a").result()
    assert response["generation_id"] == 2
    assert [m["member_id"] for m in response["members"]] == [a]


def test_rebalance_timeout_removes_members_that_did_not_rejoin() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b", rebalance_timeout_ms=20_000)
    a, b = ids["a"], ids["b"]
    a_join = h.join(a, client_id="a", rebalance_timeout_ms=20_000)  # the leader rejoins
    assert h.group().is_in_state(PREPARING_REBALANCE)
    for _ in range(6):  # b keeps heartbeating but never rejoins
        h.advance(3000)
        assert h.heartbeat(b, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    assert not a_join.done
    h.advance(2000)
    response = a_join.result()
    assert response["generation_id"] == 2
    assert [m["member_id"] for m in response["members"]] == [a]
    assert h.heartbeat(b, 2) == ErrorCode.UNKNOWN_MEMBER_ID


def test_member_that_never_syncs_is_removed_after_the_rebalance_timeout() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = {n: h.join_new_member(client_id=n, rebalance_timeout_ms=15_000) for n in "ab"}
    h.advance(0)
    a, b = (futures[n].result()["member_id"] for n in "ab")
    h.sync(a, 1, {a: b"A", b: b"B"})
    assert h.group().is_in_state(STABLE)
    for _ in range(4):
        h.advance(3000)
        assert h.heartbeat(a, 1) == OK
        assert h.heartbeat(b, 1) == OK  # heartbeats do not replace the SyncGroup
    h.advance(3000)
    group = h.group()
    assert not group.has_member(b)
    assert group.is_in_state(PREPARING_REBALANCE)


def test_concurrent_joins_during_a_rebalance_end_in_one_generation() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b", "c")
    newcomers = [h.join_new_member(client_id=n) for n in ("d", "e")]
    assert h.group().is_in_state(PREPARING_REBALANCE)
    rejoins = [h.join(ids[n], client_id=n) for n in ("b", "a")]
    assert not any(f.done for f in [*newcomers, *rejoins])
    last = h.join(ids["c"], client_id="c")
    responses = [f.result() for f in [*newcomers, *rejoins, last]]
    assert {r["generation_id"] for r in responses} == {2}
    assert {r["leader"] for r in responses} == {ids["a"]}
    leader_response = rejoins[1].result()
    assert len(leader_response["members"]) == 5
    assert h.group().is_in_state(COMPLETING_REBALANCE)


def test_all_members_rejoining_a_stable_group_rebalance_once() -> None:
    """Cooperative clients rejoin with new metadata (owned partitions) while Stable."""
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b")
    protocols = [("cooperative-sticky", b"owned:1"), ("range", b"")]
    b_join = h.join(ids["b"], client_id="b", protocols=protocols)
    assert not b_join.done
    a_join = h.join(ids["a"], client_id="a", protocols=protocols)
    assert b_join.result()["generation_id"] == a_join.result()["generation_id"] == 2
    assert a_join.result()["protocol_name"] == "cooperative-sticky"


def test_follower_rejoining_stable_group_with_same_metadata_gets_current_generation() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b")
    response = h.join(ids["b"], client_id="b").result()
    assert response["generation_id"] == 1
    assert response["members"] == []
    assert h.group().is_in_state(STABLE)


def test_initial_rebalance_delay_is_extended_while_members_arrive() -> None:
    h = Harness(group_initial_rebalance_delay_ms=3000)
    kwargs = {"rebalance_timeout_ms": 10_000}
    a = h.join_new_member(client_id="a", **kwargs)
    h.advance(2000)
    b = h.join_new_member(client_id="b", **kwargs)
    h.advance(1000)  # t=3000: b arrived, so wait another delay
    assert not a.done
    h.advance(2000)
    c = h.join_new_member(client_id="c", **kwargs)
    h.advance(1000)  # t=6000: extended again
    assert not a.done
    h.advance(2999)
    assert not a.done
    h.advance(1)  # t=9000: nobody new arrived in the last delay
    assert {f.result()["generation_id"] for f in (a, b, c)} == {1}
    assert len(a.result()["members"]) == 3


def test_initial_rebalance_delay_never_exceeds_the_rebalance_timeout() -> None:
    h = Harness(group_initial_rebalance_delay_ms=3000)
    first = h.join_new_member(client_id="m0", rebalance_timeout_ms=5000)
    for i in range(1, 10):
        h.advance(1000)
        if first.done:
            break
        h.join_new_member(client_id=f"m{i}", rebalance_timeout_ms=5000)
    assert first.done
    assert h.now <= 6000


def test_group_max_size() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0, group_max_size=2)
    h.stable_group("a", "b")
    response = h.join(client_id="c", version=3).result()
    assert response["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    assert response["member_id"] == ""
    assert h.group().size() == 2


def test_static_member_rejoins_without_rebalance_and_old_id_is_fenced() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", instance_id="inst-1")
    old = ids["a"]
    assert old.startswith("inst-1-")
    rejoin = h.join(instance_id="inst-1", client_id="a")
    response = rejoin.result()
    new = response["member_id"]
    assert new != old
    assert new.startswith("inst-1-")
    assert response["generation_id"] == 1
    assert response["skip_assignment"] is True  # the static leader skips the assignor (v9)
    assert response["leader"] == new
    assert [m["member_id"] for m in response["members"]] == [new]
    group = h.group()
    assert group.is_in_state(STABLE)
    assert group.static_members == {"inst-1": new}
    last = h.decoded()[-1]
    assert isinstance(last, GroupMetadataRecord)
    assert last.value is not None
    assert last.value["members"][0]["member_id"] == new
    assert last.value["members"][0]["group_instance_id"] == "inst-1"

    assert h.heartbeat(old, 1, instance_id="inst-1") == ErrorCode.FENCED_INSTANCE_ID
    assert h.sync(old, 1, instance_id="inst-1").result()["error_code"] == (
        ErrorCode.FENCED_INSTANCE_ID
    )
    assert h.join(old, instance_id="inst-1").result()["error_code"] == (
        ErrorCode.FENCED_INSTANCE_ID
    )
    assert h.heartbeat(new, 1, instance_id="inst-1") == OK
    # The assignment survived the replacement.
    assert h.sync(new, 1, instance_id="inst-1").result()["assignment"] == old.encode()


def test_static_leader_rejoin_before_v9_names_the_old_leader() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", instance_id="inst-1")
    response = h.join(instance_id="inst-1", client_id="a", version=8).result()
    assert response["leader"] == ids["a"]
    assert response["members"] == []
    assert response["skip_assignment"] is False


def test_static_member_rejoin_with_new_protocol_rebalances() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    h.stable_group("a", instance_id="inst-1")
    rejoin = h.join(instance_id="inst-1", protocols=[("sticky", b""), ("range", b"")])
    response = rejoin.result()
    assert response["generation_id"] == 2
    assert response["protocol_name"] == "sticky"


def test_static_member_rejoin_persist_failure_reverts() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", instance_id="inst-1")
    h.append_error = ErrorCode.NOT_LEADER_OR_FOLLOWER
    response = h.join(instance_id="inst-1").result()
    assert response["error_code"] == ErrorCode.NOT_COORDINATOR
    assert h.group().static_members == {"inst-1": ids["a"]}
    assert h.heartbeat(ids["a"], 1, instance_id="inst-1") == OK


def test_static_member_is_kept_through_a_rebalance_it_misses() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "s", instance_id=None)
    static = h.join(instance_id="inst", client_id="s2")
    assert not static.done
    # a and s (dynamic) rejoin; the new static member is already waiting
    h.join(ids["s"], client_id="s")
    h.join(ids["a"], client_id="a")
    assert static.result()["generation_id"] == 2
    assert "inst" in h.group().static_members


def test_leave_batch_with_static_member_by_instance_id() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", instance_id="inst-a")
    error, errors = h.leave(("", "inst-a"), ("", "unknown"), ("ghost", None))
    assert error == OK
    assert errors == [OK, ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.UNKNOWN_MEMBER_ID]
    assert h.group().is_in_state(EMPTY)
    assert not h.group().has_member(ids["a"])


def test_leave_with_wrong_instance_id_is_fenced() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", instance_id="inst-a")
    _, errors = h.leave(("someone-else", "inst-a"))
    assert errors == [ErrorCode.FENCED_INSTANCE_ID]
    assert h.group().has_member(ids["a"])


def test_leader_leaving_during_rebalance_hands_leadership_over() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", "b")
    b_join = h.join(ids["b"], client_id="b", protocols=[("range", b"new")])
    assert not b_join.done
    h.leave((ids["a"], None))
    response = b_join.result()
    assert response["leader"] == ids["b"]
    assert response["generation_id"] == 2


def test_sync_errors() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a")
    a = ids["a"]
    assert h.sync(a, 5).result()["error_code"] == ErrorCode.ILLEGAL_GENERATION
    assert h.sync("x", 1).result()["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    wrong_type = h.sync(a, 1, protocol_type="connect").result()
    assert wrong_type["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    wrong_name = h.sync(a, 1, protocol_type="consumer", protocol_name="rr").result()
    assert wrong_name["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    right = h.sync(a, 1, protocol_type="consumer", protocol_name="range").result()
    assert right["error_code"] == OK


def test_failed_group_store_answers_syncs_with_the_error_and_rebalances() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = [h.join_new_member(client_id=n) for n in "ab"]
    h.advance(0)
    a, b = (f.result()["member_id"] for f in futures)
    b_sync = h.sync(b, 1)
    h.append_error = ErrorCode.NOT_LEADER_OR_FOLLOWER
    a_sync = h.sync(a, 1, {a: b"A", b: b"B"})
    assert a_sync.result()["error_code"] == ErrorCode.NOT_COORDINATOR
    assert b_sync.result()["error_code"] == ErrorCode.NOT_COORDINATOR
    assert h.group().is_in_state(PREPARING_REBALANCE)


def test_rejoin_while_the_assignment_is_being_stored_wins() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = [h.join_new_member(client_id=n) for n in "ab"]
    h.advance(0)
    a, b = (f.result()["member_id"] for f in futures)
    h.hold_writes = True
    a_sync = h.sync(a, 1, {a: b"A", b: b"B"})
    b_join = h.join(b, client_id="b", protocols=[("range", b"changed")])
    assert a_sync.result()["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
    h.release()
    assert h.group().is_in_state(PREPARING_REBALANCE)
    a_join = h.join(a, client_id="a")
    assert a_join.result()["generation_id"] == b_join.result()["generation_id"] == 2


def test_second_join_from_same_member_answers_the_first() -> None:
    h = Harness()
    member = h.join().result()["member_id"]
    first = h.join(member)
    second = h.join(member)
    assert first.result()["error_code"] == ErrorCode.REBALANCE_IN_PROGRESS
    assert not second.done
    h.advance(3000)
    assert second.result()["error_code"] == OK
    assert h.group().num_members_awaiting_join == 0


def test_rejoin_in_completing_rebalance_with_same_metadata_repeats_the_answer() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    futures = [h.join_new_member(client_id=n) for n in "ab"]
    h.advance(0)
    a = futures[0].result()["member_id"]
    again = h.join(a, client_id="a", protocols=RANGE).result()
    assert again["generation_id"] == 1
    assert len(again["members"]) == 2
    assert h.group().is_in_state(COMPLETING_REBALANCE)


def test_new_member_that_never_completes_its_join_is_removed() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", rebalance_timeout_ms=600_000)
    newcomer = h.join_new_member(client_id="b", rebalance_timeout_ms=600_000)
    for _ in range(100):  # a keeps heartbeating, never rejoins: the rebalance hangs
        h.advance(3000)
        h.heartbeat(ids["a"], 1)
    assert h.now == 300_000
    response = newcomer.result()  # NEW_MEMBER_JOIN_TIMEOUT_MS
    assert response["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
