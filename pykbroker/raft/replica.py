"""RaftReplica: the sans-I/O KRaft state machine a driver feeds with messages and clock ticks.

Mirrors Kafka's ``KafkaRaftClient`` (``poll``, ``handle*``, ``prepareAppend``, ``resign``,
``createSnapshot``) over ``QuorumState``; KIP-595 (Raft for KRaft), KIP-630 (snapshots),
KIP-996 (pre-vote) and check quorum. No I/O, no clock, no global random: time comes in as
``now_ms``, randomness from the injected ``random.Random``, and every effect goes out in a
``RaftOutput`` (see ``output.py`` for the order the driver must follow).

Driver loop::

    replica = RaftReplica(node_id, voters, log, random=random.Random(seed),
                          election_state=read_quorum_state(), now_ms=clock())
    out = replica.take_output()                 # start-up effects
    while True:
        handle(out)                              # persist, flush, send, apply committed
        event = await next_message_or(out.next_tick_ms)
        out = replica.step(event, now) if event else replica.tick(now)

Invariant: the object never blocks and never forgets what it handed out; a driver that follows
the output order can crash at any point without breaking Raft's safety properties.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .bootstrap import kraft_control_records
from .config import QuorumConfig
from .control_records import (
    ControlRecordReader,
    read_memory_control_records,
    read_v2_control_records,
)
from .core import NotLeaderError
from .election import ElectionHandlers
from .kraft_control import KRaftControlRecordStateMachine
from .leader_state import LeaderState, ReplicaState
from .log import ControlRecordType, ReplicatedLog, end_offset
from .memory_log import MemoryLog
from .messages import (
    AddRaftVoterRequest,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    RaftMessage,
    RemoveRaftVoterRequest,
    SnapshotId,
    UpdateRaftVoterRequest,
    VoteRequest,
    VoteResponse,
)
from .output import RaftOutput
from .quorum_state import (
    CandidateState,
    ElectionState,
    FollowerState,
    ProspectiveState,
    RandomSource,
    ResignedState,
    UnattachedState,
)
from .reconfiguration import VoterChangeHandlers
from .replication import ReplicationHandlers
from .voter_set import VoterSet

_MAX_POLL_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class QuorumInfo:
    """What DescribeQuorum reports (Kafka's ``DescribeQuorumResponseData.PartitionData``)."""

    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: tuple[ReplicaState, ...]
    observers: tuple[ReplicaState, ...]


class RaftReplica(ElectionHandlers, ReplicationHandlers, VoterChangeHandlers):
    """One node of the metadata quorum (voter if ``node_id`` is in ``voters``, else observer)."""

    def __init__(
        self,
        node_id: int,
        voters: frozenset[int] | set[int],
        log: ReplicatedLog,
        *,
        random: RandomSource,
        config: QuorumConfig | None = None,
        cluster_id: str | None = None,
        election_state: ElectionState | None = None,
        now_ms: int = 0,
        directory_id: uuid.UUID | None = None,
        bootstrap_servers: Sequence[int] = (),
        control_record_reader: ControlRecordReader | None = None,
    ) -> None:
        """``voters`` are the static ``controller.quorum.voters`` ids (empty with
        ``controller.quorum.bootstrap.servers``); the voter set is the latest VotersRecord of
        the latest snapshot and the log when there is one (KIP-853, kraft.version 1).
        ``election_state`` is what the ``quorum-state`` file held (None: no file);
        ``directory_id`` this node's metadata ``directory.id``; ``bootstrap_servers`` the
        node ids the driver maps to bootstrap addresses (observers fetch from them until they
        know the leader); ``control_record_reader`` parses the log's bytes (default: by the
        log's type, ``MemoryLog`` or v2 record batches)."""
        if control_record_reader is None:
            control_record_reader = (
                read_memory_control_records
                if isinstance(log, MemoryLog)
                else read_v2_control_records
            )
        control = KRaftControlRecordStateMachine(VoterSet.from_ids(voters), control_record_reader)
        latest = log.latest_snapshot_id
        if latest is not None:
            data = log.read_snapshot(latest)
            if data is not None:
                control.load_snapshot(latest, data)
        control.update(log)
        super().__init__(
            node_id,
            control.last_voter_set.voter_ids,
            log,
            config=config or QuorumConfig(),
            random=random,
            cluster_id=cluster_id,
            control=control,
            directory_id=directory_id,
            bootstrap_servers=tuple(bootstrap_servers),
        )
        self._update_electable()
        self.quorum.initialize(election_state, end_offset(log), now_ms)
        self._persisted = election_state
        self._bootstrap_cursor = 0
        if self.quorum.is_only_voter and not self.is_leader:
            # A single voter elects itself at once (Kafka's initialize).
            if isinstance(self.quorum.state, ResignedState):
                self._to_candidate(now_ms)
            else:
                self._start_election(now_ms)
            self._maybe_transition_forward(now_ms)
        self._poll(now_ms)

    # --- inputs ------------------------------------------------------------------------------

    def step(self, message: RaftMessage, now_ms: int) -> RaftOutput:
        """Handle one inbound request or response, then run timers; return what to do."""
        if message.destination != self.node_id:
            raise ValueError(f"message for {message.destination} delivered to {self.node_id}")
        body = message.body
        if isinstance(body, FetchRequest):
            self._handle_fetch_request(message, body, now_ms)
        elif isinstance(body, VoteRequest):
            self._handle_vote_request(message, body, now_ms)
        elif isinstance(body, BeginQuorumEpochRequest):
            self._handle_begin_quorum_epoch_request(message, body, now_ms)
        elif isinstance(body, EndQuorumEpochRequest):
            self._handle_end_quorum_epoch_request(message, body, now_ms)
        elif isinstance(body, FetchSnapshotRequest):
            self._handle_fetch_snapshot_request(message, body, now_ms)
        elif isinstance(
            body, AddRaftVoterRequest | RemoveRaftVoterRequest | UpdateRaftVoterRequest
        ):
            self._handle_voter_change_request(message, body, now_ms)
        else:
            self._handle_response(message, now_ms)
        self._poll(now_ms)
        return self.take_output()

    def _handle_response(self, message: RaftMessage, now_ms: int) -> None:
        source = message.source
        if not self.requests.is_response_expected(source, message.correlation_id):
            return  # late, duplicated or from before a transition
        transitions = self._transitions
        self.requests.on_response(source, True, now_ms)
        body = message.body
        if isinstance(body, FetchResponse):
            success = self._handle_fetch_response(body, now_ms)
        elif isinstance(body, VoteResponse):
            success = self._handle_vote_response(source, body, now_ms)
        elif isinstance(body, BeginQuorumEpochResponse):
            success = self._handle_begin_quorum_epoch_response(source, body, now_ms)
        elif isinstance(body, EndQuorumEpochResponse):
            success = self._handle_end_quorum_epoch_response(source, body, now_ms)
        elif isinstance(body, FetchSnapshotResponse):
            success = self._handle_fetch_snapshot_response(body, now_ms)
        else:
            raise TypeError(f"not a raft message: {body!r}")
        if not success and self._transitions == transitions:
            self.requests.on_response(source, False, now_ms)

    def tick(self, now_ms: int) -> RaftOutput:
        """Let time pass: expire timers, retry requests; return what to do."""
        self._poll(now_ms)
        return self.take_output()

    def append(self, records: Sequence[bytes], now_ms: int, epoch: int | None = None) -> int:
        """Leader only: append ``records`` as one batch; return the offset of the last one.

        It is committed once the high watermark passes it (see ``RaftOutput``). ``epoch``,
        if given, must be the current one (Kafka's ``prepareAppend``). The effects are in the
        next output (``take_output`` or the next ``step``/``tick``).
        """
        leader = self._leader_state()
        if (
            leader is None
            or leader.resign_requested
            or (epoch is not None and epoch != leader.epoch)
        ):
            raise NotLeaderError(self.leader_and_epoch)
        info = self.log.append_as_leader(records, leader.epoch)
        self._log_changed()
        if leader.update_local_state(self.log.log_end_offset, now_ms):
            self._on_leader_high_watermark(now_ms)
        else:
            self._complete_parked_fetches(now_ms)
        return info.last_offset

    def resign(self, now_ms: int) -> None:
        """Leader only: step down gracefully, telling the voters with EndQuorumEpoch."""
        leader = self._leader_state()
        if leader is None:
            raise NotLeaderError(self.leader_and_epoch)
        leader.resign_requested = True
        self._poll(now_ms)

    def create_snapshot(
        self, end_offset: int, data: bytes, *, delete_log_before: bool = True
    ) -> SnapshotId:
        """Store the state machine's snapshot of every record below ``end_offset`` (a batch
        boundary, at most the high watermark) and, by default, drop the log below it."""
        log = self.log
        if not log.log_start_offset < end_offset <= min(self.high_watermark, log.log_end_offset):
            raise ValueError(
                f"snapshot end offset {end_offset} must be in ({log.log_start_offset}, "
                f"{min(self.high_watermark, log.log_end_offset)}]"
            )
        snapshot_id = SnapshotId(end_offset, self._epoch_of_record(end_offset - 1))
        log.create_snapshot(snapshot_id, data)
        if delete_log_before:
            log.delete_before_snapshot(snapshot_id)
            self._log_changed()
        return snapshot_id

    # --- KIP-853: the voter set -----------------------------------------------------------

    @property
    def voter_set(self) -> VoterSet:
        """The latest voter set in the log (uncommitted included; static for kraft.version 0)."""
        return self.control.last_voter_set

    @property
    def kraft_version(self) -> int:
        return self.control.kraft_version

    def voter_set_at(self, offset: int) -> VoterSet:
        """The voter set in force at the record at ``offset`` (Kafka's ``voterSetAtOffset``)."""
        return self.control.voter_set_at(offset)

    def snapshot_control_records(self, end_offset: int) -> list[tuple[ControlRecordType, bytes]]:
        """The KRaftVersionRecord and VotersRecord a snapshot ending at ``end_offset`` must hold
        (after its SnapshotHeaderRecord, as Kafka's ``RecordsSnapshotWriter``); none for
        kraft.version 0."""
        offset = end_offset - 1
        return kraft_control_records(
            self.control.voter_set_at(offset), self.control.kraft_version_at(offset)
        )

    def _epoch_of_record(self, offset: int) -> int:
        """The epoch of the record at ``offset``: the smallest epoch whose end is above it."""
        low, high = 0, max(self.log.last_fetched_epoch, 0)
        while low < high:
            middle = (low + high) // 2
            if self.log.end_offset_for_epoch(middle).offset > offset:
                high = middle
            else:
                low = middle + 1
        return self.log.end_offset_for_epoch(low).epoch

    def describe_quorum(self) -> QuorumInfo:
        """Leader only: the replicas' progress, as DescribeQuorum returns it."""
        leader = self._leader_state()
        if leader is None:
            raise NotLeaderError(self.leader_and_epoch)
        return QuorumInfo(
            leader_id=self.node_id,
            leader_epoch=leader.epoch,
            high_watermark=-1 if leader.high_watermark is None else leader.high_watermark,
            voters=tuple(
                self._with_directory_id(leader.voter_states[v]) for v in sorted(leader.voter_states)
            ),
            observers=tuple(leader.observer_states[o] for o in sorted(leader.observer_states)),
        )

    def _with_directory_id(self, state: ReplicaState) -> ReplicaState:
        """A voter's state with the directory id of its VotersRecord entry (DescribeQuorum v2)."""
        if state.directory_id is not None:
            return state
        node = self.voter_set.voters.get(state.replica_id)
        directory_id = node.key.directory_id if node is not None else None
        if state.replica_id == self.node_id and directory_id is None:
            directory_id = self.directory_id
        return dataclasses.replace(state, directory_id=directory_id)

    # --- poll: what each state does when time passes ----------------------------------------

    def _poll(self, now_ms: int) -> None:
        self._now_ms = max(self._now_ms, now_ms)
        for _ in range(_MAX_POLL_ROUNDS):
            transitions = self._transitions
            state = self.quorum.state
            if isinstance(state, LeaderState):
                self._poll_leader(state, now_ms)
            elif isinstance(state, CandidateState):
                self._poll_candidate(state, now_ms)
            elif isinstance(state, ProspectiveState):
                self._poll_prospective(state, now_ms)
            elif isinstance(state, FollowerState):
                self._poll_follower(state, now_ms)
            elif isinstance(state, ResignedState):
                self._poll_resigned(state, now_ms)
            else:
                self._poll_unattached(state, now_ms)
            if self._transitions == transitions:
                return

    def _poll_leader(self, state: LeaderState, now_ms: int) -> None:
        self._expire_voter_change(state, now_ms)
        removed_at = self.control.last_voter_set_offset
        if (
            self.node_id not in self.voters
            and removed_at is not None
            and state.high_watermark is not None
            and state.high_watermark > removed_at
        ):
            # KIP-853: the leader removed itself and that is committed: step down.
            state.resign_requested = True
        if state.resign_requested or state.check_quorum_expired(now_ms):
            self._to_resigned(state.non_leader_voters_by_descending_fetch_offset(), now_ms)
            return
        self._complete_parked_fetches(now_ms, expired_only=True)
        for voter in sorted(state.unacknowledged):
            if self.requests.is_ready(voter, now_ms):
                request = BeginQuorumEpochRequest(self.cluster_id, self.node_id, state.epoch, voter)
                self._send_request(voter, request, now_ms)

    def _poll_candidate(self, state: CandidateState, now_ms: int) -> None:
        if state.backoff_deadline_ms is not None:
            if now_ms >= state.backoff_deadline_ms:
                self._start_election(now_ms)
            return
        if now_ms >= state.election_deadline_ms:
            state.backoff_deadline_ms = now_ms + self.quorum.election_backoff_ms(state.retries)
            return
        self._request_votes(state.epoch, state.granted | state.rejected, False, now_ms)

    def _poll_prospective(self, state: ProspectiveState, now_ms: int) -> None:
        if now_ms >= state.election_deadline_ms:
            self._prospective_lost(now_ms)
            return
        self._request_votes(state.epoch, state.granted | state.rejected, True, now_ms)

    def _request_votes(self, epoch: int, answered: set[int], pre_vote: bool, now_ms: int) -> None:
        for voter in self.quorum.remote_voters:
            if voter not in answered and self.requests.is_ready(voter, now_ms):
                request = VoteRequest(
                    cluster_id=self.cluster_id,
                    candidate_epoch=epoch,
                    candidate_id=self.node_id,
                    last_offset_epoch=self.log.last_fetched_epoch,
                    last_offset=self.log.log_end_offset,
                    pre_vote=pre_vote,
                    voter_id=voter,
                )
                self._send_request(voter, request, now_ms)

    def _poll_follower(self, state: FollowerState, now_ms: int) -> None:
        if now_ms >= state.fetch_deadline_ms:
            if self.quorum.is_voter:
                self._start_election(now_ms)
                return
            # An observer cut off from the leader asks the voters who leads now.
            state.fetch_from_any_voter = True
            state.fetch_deadline_ms = now_ms + self.config.controller_quorum_fetch_timeout_ms
        if state.fetch_from_any_voter:
            target = self._bootstrap_target(now_ms)
        elif self.requests.is_ready(state.leader_id, now_ms):
            target = state.leader_id
        else:
            target = None
        if target is None:
            return
        if state.fetching_snapshot is not None:
            self._send_request(target, self._fetch_snapshot_request(state), now_ms)
        else:
            self._send_request(target, self._fetch_request(), now_ms)

    def _poll_unattached(self, state: UnattachedState, now_ms: int) -> None:
        if self.quorum.is_voter:
            deadline = state.election_deadline_ms
            if deadline is not None and now_ms >= deadline:
                self._start_election(now_ms)
            return
        target = self._bootstrap_target(now_ms)
        if target is not None:
            self._send_request(target, self._fetch_request(), now_ms)

    def _bootstrap_target(self, now_ms: int) -> int | None:
        """A voter to send an observer's discovery Fetch to, if none is in flight."""
        voters = [v for v in self.bootstrap_servers or sorted(self.voters) if v != self.node_id]
        if not voters or any(self.requests.has_inflight(v, now_ms) for v in voters):
            return None
        for _ in range(len(voters)):
            self._bootstrap_cursor = (self._bootstrap_cursor + 1) % len(voters)
            voter = voters[self._bootstrap_cursor]
            if self.requests.is_ready(voter, now_ms):
                return voter
        return None

    def _poll_resigned(self, state: ResignedState, now_ms: int) -> None:
        if now_ms >= state.election_deadline_ms:
            if self.quorum.is_observer:
                # Removed from the voters (KIP-853): wait for the next leader as an observer.
                self._to_unattached(state.epoch + 1, now_ms)
                return
            self._to_candidate(now_ms)
            self._maybe_transition_forward(now_ms)
            return
        for voter in sorted(state.unacknowledged):
            if self.requests.is_ready(voter, now_ms):
                request = EndQuorumEpochRequest(
                    self.cluster_id, self.node_id, state.epoch, state.preferred_successors
                )
                self._send_request(voter, request, now_ms)
