"""KIP-853 dynamic quorums: voter sets from VotersRecords, AddRaftVoter / RemoveRaftVoter /
UpdateRaftVoter on the leader with Kafka's errors, observers that find the leader through
bootstrap servers, and uncommitted voter changes reverted by truncation."""

from __future__ import annotations

import random
import uuid
from typing import TypeVar

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.raft import MemoryLog, RaftMessage, RaftOutput, RaftReplica
from pykbroker.raft.bootstrap import BOOTSTRAP_SNAPSHOT_ID, kraft_control_records, memory_snapshot
from pykbroker.raft.control_records import read_memory_control_records
from pykbroker.raft.kraft_control import KRaftControlRecordStateMachine
from pykbroker.raft.log import ControlRecordType
from pykbroker.raft.messages import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    RaftRequest,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
)
from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterNode, VoterSet

from .harness import Harness

T = TypeVar("T")
ADMIN = 0


def directory(node_id: int) -> uuid.UUID:
    return uuid.UUID(int=(node_id << 64) | 0xD1)


def node(node_id: int) -> VoterNode:
    return VoterNode(
        ReplicaKey(node_id, directory(node_id)),
        (Endpoint("CONTROLLER", "localhost", 9000 + node_id),),
    )


def bootstrapped_log(voters: list[int]) -> MemoryLog:
    """A log as ``format --initial-controllers`` leaves it: only the bootstrap checkpoint."""
    log = MemoryLog()
    data = memory_snapshot(kraft_control_records(VoterSet.of(node(v) for v in voters)))
    log.create_snapshot(BOOTSTRAP_SNAPSHOT_ID, data)
    return log


class DynamicHarness(Harness):
    """Nodes with directory ids and ``controller.quorum.bootstrap.servers`` (no static voters);
    ``initial`` are formatted with the bootstrap checkpoint, the others with
    ``--no-initial-controllers``."""

    def __init__(self, initial: list[int], others: list[int]) -> None:
        logs = {i: bootstrapped_log(initial) for i in initial}
        super().__init__(voters=initial, observers=others, logs=logs, start=False)
        self.bootstrap = tuple(initial)
        self.admin_responses: list[object] = []
        for node_id in self.ids:
            self.start(node_id)

    def start(self, node_id: int) -> RaftReplica:
        replica = RaftReplica(
            node_id,
            frozenset(),
            self.logs[node_id],
            random=random.Random(self.rng.getrandbits(32)),
            config=self.config,
            cluster_id="test-cluster",
            election_state=self.durable[node_id],
            now_ms=self.now,
            directory_id=directory(node_id),
            bootstrap_servers=self.bootstrap,
        )
        self.replicas[node_id] = replica
        self.handle(node_id, replica.take_output())
        return replica

    def handle(self, node_id: int, out: RaftOutput, trigger: RaftMessage | None = None) -> None:
        super().handle(node_id, out, trigger)
        self.admin_responses.extend(m.body for m in out.messages if m.destination == ADMIN)

    def leader(self) -> int | None:
        for node_id in self.leaders():
            replica = self.replicas[node_id]
            voters = replica.voters
            followers = sum(
                1
                for i, r in self.replicas.items()
                if i in voters and r.epoch == replica.epoch and r.leader_id == node_id
            )
            if followers > len(voters) // 2 and replica.describe_quorum().high_watermark >= 0:
                return node_id
        return None

    def admin(self, to: int, request: RaftRequest) -> list[RaftMessage]:
        """Send ``request`` from the admin client; return the immediate answers."""
        message = RaftMessage(ADMIN, to, len(self.sent) + 1, request)
        out = self.replicas[to].step(message, self.now)
        self.handle(to, out, message)
        return [m for m in out.messages if m.destination == ADMIN]

    def admin_response(
        self, to: int, request: RaftRequest, kind: type[T], max_ms: int = 3_000
    ) -> T:
        answered = len(self.admin_responses)
        immediate = self.admin(to, request)
        if immediate:
            body = immediate[0].body
        else:
            self.run_until(lambda: len(self.admin_responses) > answered, max_ms)
            body = self.admin_responses[answered]  # type: ignore[assignment]
        assert isinstance(body, kind), body
        return body


def add(node_id: int, timeout_ms: int = 1_000) -> AddRaftVoterRequest:
    new = node(node_id)
    return AddRaftVoterRequest("test-cluster", timeout_ms, new.key, new.endpoints)


def remove(node_id: int, directory_id: uuid.UUID | None = None) -> RemoveRaftVoterRequest:
    return RemoveRaftVoterRequest(
        "test-cluster", ReplicaKey(node_id, directory_id or directory(node_id))
    )


def settle(h: DynamicHarness, offset: int) -> None:
    h.run_until(lambda: h.caught_up(offset))


# --- the voter set from the bootstrap checkpoint and the log -----------------------------------


def test_bootstrapped_voters_elect_and_the_leader_writes_the_voters_into_the_log() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    replica = h.replicas[leader]
    assert replica.kraft_version == 1
    assert replica.voter_set.voter_ids == {1, 2, 3}
    log = h.logs[leader]
    types = [b.control_type for b in log.batches()]
    assert types[:3] == [
        ControlRecordType.LEADER_CHANGE,
        ControlRecordType.KRAFT_VERSION,
        ControlRecordType.KRAFT_VOTERS,
    ]
    settle(h, log.log_end_offset)
    # Node 4 was formatted with --no-initial-controllers: it found the leader through the
    # bootstrap servers and learned the voters from the log.
    observer = h.replicas[4]
    assert observer.leader_id == leader
    assert observer.voter_set == replica.voter_set
    assert observer.voter_set.voters[1].endpoints == (Endpoint("CONTROLLER", "localhost", 9001),)
    assert not observer.quorum.is_voter


def test_an_observer_without_voters_fetches_from_bootstrap_servers_until_it_learns_the_leader() -> (
    None
):
    h = DynamicHarness([1, 2, 3], [4])
    observer = h.replicas[4]
    assert observer.voters == frozenset()
    h.advance(5)
    fetches = [m for m in h.sent if m.source == 4]
    assert fetches
    assert {m.destination for m in fetches} <= {1, 2, 3}
    leader = h.elect()
    h.run_until(lambda: h.replicas[4].leader_id == leader)
    assert h.replicas[4].state_name == "follower"


# --- AddRaftVoter ------------------------------------------------------------------------------


def test_add_voter_commits_a_voters_record_and_the_observer_becomes_a_voter() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    response = h.admin_response(leader, add(4), AddRaftVoterResponse)
    assert response.error_code == ErrorCode.NO_ERROR
    replica = h.replicas[leader]
    assert replica.voter_set.voter_ids == {1, 2, 3, 4}
    settle(h, h.logs[leader].log_end_offset)
    for node_id in (1, 2, 3, 4):
        assert h.replicas[node_id].voter_set.voter_ids == {1, 2, 3, 4}
    assert h.replicas[4].quorum.is_voter
    assert {s.replica_id for s in replica.describe_quorum().voters} == {1, 2, 3, 4}
    # The new voter counts: with 1 and 2 cut off, 3 of 4 cannot commit... but 3 of 4 voters
    # with node 4 can still elect a leader once the old leader is gone.
    h.isolate(leader)
    survivors = {1, 2, 3, 4} - {leader}
    h.run_until(lambda: any(h.replicas[i].is_leader for i in survivors), 5_000)


@pytest.mark.parametrize(
    ("request_for", "error"),
    [
        (lambda: add(2), ErrorCode.DUPLICATE_VOTER),
        (lambda: add(9), ErrorCode.REQUEST_TIMED_OUT),  # never fetched: not caught up
        (
            lambda: AddRaftVoterRequest(
                "test-cluster", 1000, ReplicaKey(4, None), node(4).endpoints
            ),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            lambda: AddRaftVoterRequest("test-cluster", 1000, node(4).key, ()),
            ErrorCode.INVALID_REQUEST,
        ),
        (
            lambda: AddRaftVoterRequest(
                "test-cluster", 1000, ReplicaKey(4, uuid.uuid4()), node(4).endpoints
            ),
            ErrorCode.REQUEST_TIMED_OUT,  # node 4 fetches with another directory id
        ),
        (lambda: remove(7), ErrorCode.VOTER_NOT_FOUND),
        (lambda: remove(2, uuid.uuid4()), ErrorCode.VOTER_NOT_FOUND),
        (
            lambda: RemoveRaftVoterRequest("other-cluster", node(2).key),
            ErrorCode.INCONSISTENT_CLUSTER_ID,
        ),
    ],
)
def test_the_leader_refuses_voter_changes_with_kafkas_errors(
    request_for: object, error: ErrorCode
) -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    request = request_for()  # type: ignore[operator]
    (answer,) = h.admin(leader, request)
    assert answer.body.error_code == error  # type: ignore[union-attr]
    assert h.replicas[leader].voter_set.voter_ids == {1, 2, 3}


def test_a_follower_answers_not_leader_and_a_static_quorum_unsupported_version() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    follower = next(i for i in (1, 2, 3) if i != leader)
    (answer,) = h.admin(follower, add(4))
    assert answer.body == AddRaftVoterResponse(ErrorCode.NOT_LEADER_OR_FOLLOWER)

    static = Harness([1, 2, 3], [4])
    static_leader = static.elect()
    message = RaftMessage(ADMIN, static_leader, 1, add(4))
    out = static.replicas[static_leader].step(message, static.now)
    (answer,) = [m for m in out.messages if m.destination == ADMIN]
    assert isinstance(answer.body, AddRaftVoterResponse)
    assert answer.body.error_code == ErrorCode.UNSUPPORTED_VERSION


def test_one_voter_change_at_a_time() -> None:
    h = DynamicHarness([1, 2, 3], [4, 5])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    h.isolate(next(i for i in (1, 2, 3) if i != leader))  # slow the commit down
    assert h.admin(leader, add(4)) == []  # pending: appended, waits for the commit
    assert h.replicas[leader].voter_set.voter_ids == {1, 2, 3, 4}  # in force on append
    (second,) = h.admin(leader, add(5))
    assert second.body.error_code == ErrorCode.REQUEST_TIMED_OUT  # type: ignore[union-attr]


def test_a_pending_add_times_out_when_the_record_cannot_commit() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    for other in (1, 2, 3, 4):
        if other != leader:
            h.isolate(other)
    response = h.admin_response(leader, add(4, timeout_ms=100), AddRaftVoterResponse, 1_000)
    assert response.error_code in (ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NOT_LEADER_OR_FOLLOWER)


# --- RemoveRaftVoter ---------------------------------------------------------------------------


def test_remove_a_follower() -> None:
    h = DynamicHarness([1, 2, 3], [])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    gone = next(i for i in (1, 2, 3) if i != leader)
    response = h.admin_response(leader, remove(gone), RemoveRaftVoterResponse)
    assert response.error_code == ErrorCode.NO_ERROR
    settle(h, h.logs[leader].log_end_offset)
    assert all(r.voter_set.voter_ids == {1, 2, 3} - {gone} for r in h.replicas.values())
    assert not h.replicas[gone].quorum.is_voter
    assert h.replicas[gone].leader_id == leader  # still replicating, as an observer


def test_a_leader_that_removes_itself_resigns_after_the_commit_and_the_rest_elect() -> None:
    h = DynamicHarness([1, 2, 3], [])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    response = h.admin_response(leader, remove(leader), RemoveRaftVoterResponse)
    assert response.error_code == ErrorCode.NO_ERROR
    h.run_until(lambda: not h.replicas[leader].is_leader)
    new_leader = h.elect()
    assert new_leader != leader
    assert h.replicas[new_leader].voter_set.voter_ids == {1, 2, 3} - {leader}
    offset = h.replicas[new_leader].append([b"after"], h.now)
    h.run_until(lambda: h.caught_up(offset + 1))  # the removed node follows as an observer


# --- UpdateRaftVoter ---------------------------------------------------------------------------


def test_update_voter_replaces_the_endpoints_at_once() -> None:
    h = DynamicHarness([1, 2, 3], [])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    epoch = h.replicas[leader].epoch
    moved = (Endpoint("CONTROLLER", "new-host", 19092),)
    request = UpdateRaftVoterRequest("test-cluster", epoch, node(2).key, moved, 0, 1)
    (answer,) = h.admin(leader, request)
    assert answer.body == UpdateRaftVoterResponse(ErrorCode.NO_ERROR, leader, epoch)
    assert h.replicas[leader].voter_set.endpoints(2) == moved
    settle(h, h.logs[leader].log_end_offset)
    assert h.replicas[3].voter_set.endpoints(2) == moved
    unknown = UpdateRaftVoterRequest("test-cluster", epoch, ReplicaKey(2, uuid.uuid4()), moved)
    (answer,) = h.admin(leader, unknown)
    assert answer.body.error_code == ErrorCode.VOTER_NOT_FOUND  # type: ignore[union-attr]
    stale = UpdateRaftVoterRequest("test-cluster", epoch - 1, node(2).key, moved)
    (answer,) = h.admin(leader, stale)
    assert answer.body.error_code == ErrorCode.FENCED_LEADER_EPOCH  # type: ignore[union-attr]


# --- the history: effective on append, reverted on truncation -----------------------------------


def test_a_voters_record_takes_effect_on_append_and_is_reverted_by_truncation() -> None:
    log = bootstrapped_log([1, 2, 3])
    control = KRaftControlRecordStateMachine(VoterSet.from_ids([9]), read_memory_control_records)
    latest = log.latest_snapshot_id
    assert latest is not None
    control.load_snapshot(latest, log.read_snapshot(latest) or b"")
    assert control.last_voter_set_offset == -1
    assert control.last_voter_set.voter_ids == {1, 2, 3}
    log.append_as_leader([b"a", b"b"], 1)
    bigger = VoterSet.of(node(v) for v in (1, 2, 3, 4))
    log.append_as_leader([bigger.encode()], 1, ControlRecordType.KRAFT_VOTERS)  # offset 2
    log.append_as_leader([b"c"], 1)
    assert control.update(log)
    assert control.last_voter_set == bigger
    assert control.voter_set_at(1).voter_ids == {1, 2, 3}
    assert control.voter_set_at(2) == bigger
    log.truncate_to(2)
    control.truncate_to(2)
    assert not control.update(log)
    assert control.last_voter_set.voter_ids == {1, 2, 3}
    assert control.next_offset == 2


def test_static_voters_without_any_voters_record_are_kraft_version_0() -> None:
    control = KRaftControlRecordStateMachine(
        VoterSet.from_ids([1, 2, 3]), read_memory_control_records
    )
    log = MemoryLog()
    log.append_as_leader([b"x"], 1)
    control.update(log)
    assert control.kraft_version == 0
    assert control.last_voter_set_offset is None
    assert control.last_voter_set.voter_ids == {1, 2, 3}


def test_a_follower_reverts_an_uncommitted_voter_change_the_new_leader_never_had() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    for other in (1, 2, 3, 4):
        if other != leader:
            h.isolate(other)
    h.admin(leader, add(4))  # appended only on the isolated leader
    assert h.replicas[leader].voter_set.voter_ids == {1, 2, 3, 4}
    h.heal()
    h.isolate(leader)
    h.run_until(lambda: any(h.replicas[i].is_leader for i in (1, 2, 3) if i != leader))
    new_leader = next(i for i in (1, 2, 3) if i != leader and h.replicas[i].is_leader)
    offset = h.replicas[new_leader].append([b"x"], h.now)
    h.heal()
    h.run_until(lambda: h.caught_up(offset + 1, [leader]))
    assert h.replicas[leader].voter_set.voter_ids == {1, 2, 3}  # truncated away


def test_snapshot_control_records_carry_the_voters_at_the_snapshot_end() -> None:
    h = DynamicHarness([1, 2, 3], [4])
    leader = h.elect()
    settle(h, h.logs[leader].log_end_offset)
    h.admin_response(leader, add(4), AddRaftVoterResponse)
    replica = h.replicas[leader]
    end = replica.high_watermark
    records = replica.snapshot_control_records(end)
    assert [t for t, _ in records] == [
        ControlRecordType.KRAFT_VERSION,
        ControlRecordType.KRAFT_VOTERS,
    ]
    assert VoterSet.decode(records[1][1]).voter_ids == {1, 2, 3, 4}
    assert replica.snapshot_control_records(1) == kraft_control_records(
        VoterSet.of(node(v) for v in (1, 2, 3))
    )


# --- wire ----------------------------------------------------------------------------------------


VOTER_MESSAGES = [
    AddRaftVoterRequest("cluster", 30_000, node(4).key, node(4).endpoints),
    AddRaftVoterResponse(ErrorCode.DUPLICATE_VOTER, "4 is already a voter"),
    RemoveRaftVoterRequest("cluster", node(2).key),
    RemoveRaftVoterResponse(ErrorCode.NO_ERROR),
    UpdateRaftVoterRequest("cluster", 5, node(3).key, node(3).endpoints, 0, 1),
    UpdateRaftVoterResponse(ErrorCode.NO_ERROR, 1, 5),
]


@pytest.mark.parametrize("body", VOTER_MESSAGES, ids=lambda b: type(b).__name__)
def test_voter_change_messages_round_trip_through_the_codec(body: object) -> None:
    from pykbroker.api.protocol import codec
    from pykbroker.raft import wire
    from pykbroker.raft.messages import REQUEST_TYPES

    assert wire.version_range(wire.api_key(body)) == (0, 0)  # type: ignore[arg-type]
    declaration = wire.declaration(body)  # type: ignore[arg-type]
    encoded = codec.encode(declaration, 0, wire.to_wire(body, 0))  # type: ignore[arg-type]
    data = codec.decode(declaration, 0, encoded)
    key = wire.api_key(body)  # type: ignore[arg-type]
    if isinstance(body, REQUEST_TYPES):
        assert wire.request_from_wire(key, 0, data) == body
    else:
        assert wire.response_from_wire(key, 0, data) == body
    assert key in (80, 81, 82)


def test_fetch_v17_carries_the_replica_directory_id() -> None:
    from pykbroker.api.protocol import codec
    from pykbroker.raft import FetchRequest, wire

    request = FetchRequest("cluster", 4, 10, 1, 2, replica_directory_id=directory(4))
    for version, expected in ((17, directory(4)), (16, None)):
        declaration = wire.declaration(request)
        data = codec.decode(
            declaration, version, codec.encode(declaration, version, wire.to_wire(request, version))
        )
        back = wire.request_from_wire(1, version, data)
        assert isinstance(back, FetchRequest)
        assert back.replica_directory_id == expected
