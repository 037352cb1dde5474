"""Focused tests of the KRaft state machine: elections, pre-vote, replication, divergence,
check quorum, resignation, snapshots and the output-ordering contract."""

from __future__ import annotations

import random
from typing import TypeVar

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.raft import (
    BeginQuorumEpochRequest,
    ControlRecordType,
    ElectionState,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchResponse,
    MemoryLog,
    NotLeaderError,
    OffsetAndEpoch,
    QuorumConfig,
    RaftMessage,
    RaftReplica,
    RaftStateError,
    SnapshotId,
    VoteRequest,
    VoteResponse,
)

from .harness import UNIT_CONFIG, Harness

T = TypeVar("T")


def replica(node_id: int = 2, log: MemoryLog | None = None, **kwargs: object) -> RaftReplica:
    r = RaftReplica(
        node_id,
        {1, 2, 3},
        log or MemoryLog(),
        random=random.Random(0),
        config=UNIT_CONFIG,
        cluster_id="test-cluster",
        **kwargs,  # type: ignore[arg-type]
    )
    r.take_output()
    return r


def body(message: RaftMessage, kind: type[T]) -> T:
    assert isinstance(message.body, kind)
    return message.body


def values(log: MemoryLog) -> list[tuple[int, int, bytes]]:
    return list(log.records(log.log_start_offset, log.log_end_offset))


# --- elections -------------------------------------------------------------------------------


def test_three_voters_elect_one_leader_that_opens_its_epoch_with_a_leader_change_record() -> None:
    h = Harness()
    leader = h.elect()
    r = h.replicas[leader]
    assert r.epoch == 1
    assert [b.control_type for b in h.logs[leader].batches()] == [ControlRecordType.LEADER_CHANGE]
    for node_id, other in h.replicas.items():
        if node_id != leader:
            assert other.state_name == "follower"
            assert other.leader_and_epoch.leader_id == leader


def test_appends_replicate_to_every_node_and_commit_with_a_majority() -> None:
    h = Harness(observers=(4,))
    leader = h.elect()
    r = h.replicas[leader]
    last = r.append([b"a", b"b"], h.now)
    last = r.append([b"c"], h.now)
    h.take(leader)
    h.run_until(lambda: h.caught_up(last + 1))
    expected = values(h.logs[leader])
    assert [v for _, _, v in expected[1:]] == [b"a", b"b", b"c"]
    assert all(values(h.logs[i]) == expected for i in h.ids)


def test_single_voter_elects_itself_and_commits_each_append_at_once() -> None:
    log = MemoryLog()
    r = RaftReplica(1, {1}, log, random=random.Random(0))
    out = r.take_output()
    assert r.is_leader
    assert out.persist_election_state == ElectionState(1, 1, 1)
    offset = r.append([b"x"], 0)
    out = r.take_output()
    assert out.flush_log
    assert out.high_watermark == offset + 1


def test_a_voter_grants_one_vote_per_epoch_and_persists_it_before_answering() -> None:
    r = replica(2)
    out = r.step(RaftMessage(1, 2, 7, VoteRequest("test-cluster", 1, 1, 0, 0)), 1)
    assert out.persist_election_state == ElectionState(1, -1, 1)
    assert out.messages == [
        RaftMessage(2, 1, 7, VoteResponse(ErrorCode.NO_ERROR, -1, 1, vote_granted=True))
    ]
    # Restarted from what it persisted, it still refuses a second candidate in epoch 1.
    again = replica(2, election_state=out.persist_election_state)
    out = again.step(RaftMessage(3, 2, 1, VoteRequest("test-cluster", 1, 3, 0, 0)), 2)
    assert out.messages[0].body == VoteResponse(ErrorCode.NO_ERROR, -1, 1, vote_granted=False)


def test_a_pre_vote_is_granted_without_changing_any_persisted_state() -> None:
    r = replica(2)
    request = VoteRequest("test-cluster", 0, 1, 0, 0, pre_vote=True)
    out = r.step(RaftMessage(1, 2, 3, request), 1)
    assert out.persist_election_state is None
    assert out.messages[0].body == VoteResponse(ErrorCode.NO_ERROR, -1, 0, vote_granted=True)
    assert (r.epoch, r.state_name) == (0, "unattached")


def test_a_vote_is_refused_to_a_candidate_whose_log_is_behind() -> None:
    log = MemoryLog()
    log.append_as_leader([b"x"], 1)
    r = replica(2, log, election_state=ElectionState(1))
    out = r.step(RaftMessage(1, 2, 1, VoteRequest("test-cluster", 2, 1, 0, 0)), 1)
    assert out.messages[0].body == VoteResponse(ErrorCode.NO_ERROR, -1, 2, vote_granted=False)


def test_a_vote_from_an_older_epoch_is_fenced() -> None:
    r = replica(2, election_state=ElectionState(5))
    out = r.step(RaftMessage(1, 2, 1, VoteRequest("test-cluster", 4, 1, 0, 0)), 1)
    assert body(out.messages[0], VoteResponse).error_code == ErrorCode.FENCED_LEADER_EPOCH


def test_a_prospective_node_runs_a_standard_election_when_a_voter_lacks_pre_vote() -> None:
    """KIP-996 compatibility: the driver answers a pre-vote it cannot encode (Vote < v2)
    with UNSUPPORTED_VERSION, and the prospective node becomes a candidate at once."""
    r = replica(2)
    out = r.tick(10_000)
    assert r.state_name == "prospective"
    pre_vote = next(m for m in out.messages if m.destination == 1)
    assert isinstance(pre_vote.body, VoteRequest)
    assert pre_vote.body.pre_vote
    unsupported = VoteResponse(ErrorCode.UNSUPPORTED_VERSION, -1, -1)
    r.step(RaftMessage(1, 2, pre_vote.correlation_id, unsupported), 10_002)
    assert (r.state_name, r.epoch) == ("candidate", 1)


def test_pre_vote_keeps_a_partitioned_voter_from_disrupting_the_leader() -> None:
    h = Harness()
    leader = h.elect()
    epoch = h.replicas[leader].epoch
    victim = next(i for i in h.ids if i != leader)
    h.isolate(victim)
    h.advance(2_000)
    assert h.replicas[victim].epoch == epoch  # pre-votes never bump the epoch
    h.heal()
    h.run_until(lambda: h.replicas[victim].state_name == "follower", 1_000)
    assert h.leader() == leader
    assert h.replicas[leader].epoch == epoch


def test_without_pre_vote_a_partitioned_voter_disrupts_the_leader_when_it_returns() -> None:
    config = QuorumConfig(
        controller_quorum_election_timeout_ms=100,
        controller_quorum_fetch_timeout_ms=200,
        controller_quorum_election_backoff_max_ms=100,
        controller_quorum_request_timeout_ms=150,
        fetch_max_wait_ms=50,
        pre_vote_enabled=False,
    )
    h = Harness(config=config)
    leader = h.elect()
    epoch = h.replicas[leader].epoch
    victim = next(i for i in h.ids if i != leader)
    h.isolate(victim)
    h.advance(2_000)
    assert h.replicas[victim].epoch > epoch + 3
    h.heal()
    h.run_until(lambda: h.replicas[leader].epoch > epoch, 1_000)  # deposed by the higher epoch


def test_a_restarted_leader_resigns_and_cannot_lead_its_old_epoch_again() -> None:
    r = RaftReplica(
        1, {1, 2, 3}, MemoryLog(), random=random.Random(0), election_state=ElectionState(4, 1, 1)
    )
    assert (r.state_name, r.epoch) == ("resigned", 4)
    out = r.take_output()
    assert {m.destination for m in out.messages} == {2, 3}
    assert all(isinstance(m.body, EndQuorumEpochRequest) for m in out.messages)
    with pytest.raises(NotLeaderError):
        r.append([b"x"], 2)


# --- replication and the commit rule -------------------------------------------------------


def test_a_new_leader_commits_old_records_only_with_a_record_of_its_own_epoch() -> None:
    """Raft's commit rule (Figure 8 of the Raft paper): a majority holding the previous
    epochs' records is not enough; the high watermark waits for the new LeaderChange."""
    log = MemoryLog()
    log.append_as_leader([b"lc"], 1, ControlRecordType.LEADER_CHANGE)
    log.append_as_leader([b"x"], 1)
    log.append_as_leader([b"y"], 2)  # uncommitted tail of epoch 2
    r = replica(1, log, election_state=ElectionState(2))
    out = r.tick(10_000)  # election timeout: prospective in epoch 2
    correlation = next(m.correlation_id for m in out.messages if m.destination == 2)
    granted = VoteResponse(ErrorCode.NO_ERROR, -1, 2, True)
    out = r.step(RaftMessage(2, 1, correlation, granted), 10_001)
    assert r.state_name == "candidate"
    correlation = next(m.correlation_id for m in out.messages if m.destination == 2)
    r.step(RaftMessage(2, 1, correlation, VoteResponse(ErrorCode.NO_ERROR, -1, 3, True)), 10_002)
    assert (r.state_name, r.epoch) == ("leader", 3)
    r.take_output()
    fetch_at_epoch_start = FetchRequest("test-cluster", 2, 3, 2, 3)
    out = r.step(RaftMessage(2, 1, 9, fetch_at_epoch_start), 10_003)
    assert body(out.messages[0], FetchResponse).high_watermark == -1
    assert r.high_watermark == 0
    out = r.step(RaftMessage(2, 1, 10, FetchRequest("test-cluster", 2, 4, 3, 3)), 10_004)
    assert r.high_watermark == 4
    assert out.high_watermark == 4


def test_observers_replicate_but_do_not_count_toward_the_high_watermark() -> None:
    h = Harness(observers=(4,))
    leader = h.elect()
    before = h.replicas[leader].high_watermark
    for voter in h.voters - {leader}:
        h.isolate(voter)
    offset = h.replicas[leader].append([b"x"], h.now)
    h.take(leader)
    h.advance(100)
    assert h.logs[4].log_end_offset == offset + 1
    assert h.replicas[leader].high_watermark == before


def test_a_deposed_leader_truncates_its_uncommitted_records_on_the_diverging_epoch() -> None:
    h = Harness()
    old = h.elect()
    h.isolate(old)
    h.replicas[old].append([b"lost-1"], h.now)
    h.replicas[old].append([b"lost-2"], h.now)
    h.take(old)
    h.run_until(lambda: h.leader() not in (None, old))
    new = h.leader()
    assert new is not None
    offset = h.replicas[new].append([b"kept"], h.now)
    h.take(new)
    h.heal()
    h.run_until(lambda: h.caught_up(offset + 1))
    assert any(o.truncated_to is not None for o in h.outputs[old])
    assert values(h.logs[old]) == values(h.logs[new])
    assert b"lost-1" not in [v for _, _, v in values(h.logs[old])]


def test_a_follower_refuses_to_truncate_below_its_high_watermark() -> None:
    h = Harness()
    leader = h.elect()
    offset = h.replicas[leader].append([b"x"], h.now)
    h.take(leader)
    h.run_until(lambda: h.caught_up(offset + 1))
    follower = next(i for i in h.ids if i != leader)
    r = h.replicas[follower]
    fetch = next(m for m in reversed(h.sent) if m.source == follower)
    bad = FetchResponse(
        ErrorCode.NO_ERROR, leader, r.epoch, diverging_epoch=OffsetAndEpoch(0, r.epoch)
    )
    with pytest.raises(RaftStateError):
        r.step(RaftMessage(leader, follower, fetch.correlation_id, bad), h.now)


def test_duplicated_and_stale_responses_are_ignored() -> None:
    h = Harness()
    leader = h.elect()
    h.replicas[leader].append([b"x"], h.now)
    h.take(leader)
    h.deliver()
    response = next(
        m for m in reversed(h.sent) if isinstance(m.body, FetchResponse) and m.body.records
    )
    out = h.replicas[response.destination].step(response, h.now)
    assert out.messages == []
    assert not out.flush_log


# --- check quorum and resignation -----------------------------------------------------------


def test_a_leader_cut_off_from_the_majority_resigns_after_the_check_quorum_timeout() -> None:
    h = Harness()
    leader = h.elect()
    h.advance(20)
    h.isolate(leader)
    start = h.now
    h.run_until(lambda: not h.replicas[leader].is_leader, 1_000)
    waited = h.now - start
    assert waited <= UNIT_CONFIG.check_quorum_timeout_ms + 5
    assert h.replicas[leader].state_name == "resigned"
    ends = [m for m in h.sent if m.source == leader and isinstance(m.body, EndQuorumEpochRequest)]
    assert {m.destination for m in ends} == set(h.voters) - {leader}


def test_a_graceful_resignation_hands_over_faster_than_the_fetch_timeout() -> None:
    h = Harness(voters=(1, 2, 3, 4, 5))
    leader = h.elect()
    h.advance(60)
    h.replicas[leader].resign(h.now)
    h.take(leader)
    ends = [m for m in h.sent if isinstance(m.body, EndQuorumEpochRequest)]
    assert ends
    assert body(ends[0], EndQuorumEpochRequest).preferred_successors  # by fetch offset
    took = h.run_until(lambda: h.leader() not in (None, leader))
    assert took < UNIT_CONFIG.controller_quorum_fetch_timeout_ms


def test_begin_quorum_epoch_makes_a_voter_follow_the_new_leader() -> None:
    r = replica(2)
    out = r.step(RaftMessage(1, 2, 1, BeginQuorumEpochRequest("test-cluster", 1, 3)), 1)
    assert (r.state_name, r.leader_id, r.epoch) == ("follower", 1, 3)
    assert out.persist_election_state == ElectionState(3, 1, -1)
    assert any(isinstance(m.body, FetchRequest) for m in out.messages)


# --- snapshots -------------------------------------------------------------------------------


def test_a_new_observer_catches_up_from_a_snapshot_fetched_in_chunks() -> None:
    config = QuorumConfig(
        controller_quorum_election_timeout_ms=100,
        controller_quorum_fetch_timeout_ms=200,
        controller_quorum_request_timeout_ms=150,
        fetch_max_wait_ms=50,
        fetch_snapshot_max_bytes=7,
    )
    h = Harness(voters=(1, 2, 3), observers=(4,), config=config, start=False)
    for node_id in (1, 2, 3):
        h.start(node_id)
    leader = h.elect()
    r = h.replicas[leader]
    for i in range(10):
        last = r.append([f"v{i}".encode()], h.now)
    h.take(leader)
    h.run_until(lambda: h.caught_up(last + 1, (1, 2, 3)))
    snapshot_id = r.create_snapshot(last + 1, b"state-of-the-machine-at-11")
    h.take(leader)
    assert snapshot_id == SnapshotId(last + 1, r.epoch)
    assert h.logs[leader].log_start_offset == last + 1
    h.start(4)
    h.run_until(lambda: h.caught_up(last + 1, (4,)))
    installed = [o.snapshot_installed for o in h.outputs[4] if o.snapshot_installed]
    assert installed == [snapshot_id]
    assert h.logs[4].read_snapshot(snapshot_id) == b"state-of-the-machine-at-11"
    assert h.logs[4].log_start_offset == snapshot_id.offset
    after = r.append([b"after"], h.now)
    h.take(leader)
    h.run_until(lambda: h.caught_up(after + 1))
    assert values(h.logs[4]) == values(h.logs[leader])


def test_a_lagging_voter_below_the_log_start_gets_the_snapshot() -> None:
    h = Harness()
    leader = h.elect()
    lagging = next(i for i in h.ids if i != leader)
    h.crash(lagging)
    r = h.replicas[leader]
    for i in range(5):
        last = r.append([f"v{i}".encode()], h.now)
    h.take(leader)
    h.run_until(lambda: r.high_watermark > last)
    r.create_snapshot(last + 1, b"snap")
    h.take(leader)
    h.start(lagging)
    h.run_until(lambda: h.caught_up(last + 1))
    assert any(o.snapshot_installed for o in h.outputs[lagging])


def test_a_snapshot_must_be_committed() -> None:
    h = Harness()
    leader = h.elect()
    r = h.replicas[leader]
    h.isolate(next(i for i in h.ids if i != leader))
    h.isolate(next(i for i in reversed(h.ids) if i != leader))
    offset = r.append([b"x"], h.now)
    with pytest.raises(ValueError, match="snapshot end offset"):
        r.create_snapshot(offset + 1, b"too early")


# --- the driver contract ---------------------------------------------------------------------


def test_unflushed_records_are_lost_on_a_crash_and_recovered_by_replication() -> None:
    h = Harness()
    leader = h.elect()
    follower = next(i for i in h.ids if i != leader)
    offset = h.replicas[leader].append([b"x"], h.now)
    h.take(leader)
    h.run_until(lambda: h.caught_up(offset + 1))
    h.logs[follower].append_as_leader([b"never-flushed"], 99)
    h.crash(follower)
    assert h.logs[follower].log_end_offset == offset + 1
    h.start(follower)
    assert h.replicas[follower].high_watermark == 0  # not persisted, as in Kafka
    h.run_until(lambda: h.caught_up(offset + 1))
    assert values(h.logs[follower]) == values(h.logs[leader])
