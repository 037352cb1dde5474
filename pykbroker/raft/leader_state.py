"""LeaderState: the leader's view of its replicas, its high watermark and check quorum.

Mirrors Kafka's ``LeaderState``. The high watermark is the largest offset a majority of voters
(the leader included) has reached, and it is only exposed once it is above
``epoch_start_offset`` -- i.e. once the LeaderChangeMessage that opens this epoch is committed.
That is the Raft commit rule (a leader commits only entries of its own epoch, and earlier ones
with them): it makes every later leader hold everything below the high watermark.

Invariants: ``high_watermark`` never decreases and is None or > ``epoch_start_offset``; a
replica's end offset only counts once its fetch was validated against the leader's log; check
quorum expires when no majority of voters has fetched within 1.5 x the fetch timeout.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .quorum_state import ElectionState


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one replica (DescribeQuorum's ``ReplicaState``)."""

    replica_id: int
    log_end_offset: int = -1
    last_fetch_timestamp: int = -1
    last_caught_up_timestamp: int = -1
    #: KIP-853: the ``directory.id`` the replica fetched with (None: not sent).
    directory_id: uuid.UUID | None = None


@dataclass(slots=True)
class PendingVoterChange:
    """An AddRaftVoter/RemoveRaftVoter being handled (Kafka's ``AddVoterHandlerState`` /
    ``RemoveVoterHandlerState``): answered when the VotersRecord at ``offset`` commits, or with
    REQUEST_TIMED_OUT at ``deadline_ms``. ``message`` is the request's ``RaftMessage``."""

    message: Any
    offset: int
    deadline_ms: int


@dataclass(slots=True)
class LeaderState:
    """This node leads ``epoch``; see the module docstring."""

    node_id: int
    epoch: int
    epoch_start_offset: int
    voters: frozenset[int]
    granting_voters: frozenset[int]
    check_quorum_timeout_ms: int
    now_ms: int
    high_watermark: int | None = None
    voter_states: dict[int, ReplicaState] = field(default_factory=dict)
    observer_states: dict[int, ReplicaState] = field(default_factory=dict)
    #: Voters that fetched since the check-quorum timer was last reset.
    fetched_voters: set[int] = field(default_factory=set)
    check_quorum_deadline_ms: int | None = None
    #: Voters that have not yet acknowledged this epoch (BeginQuorumEpoch response or a fetch).
    unacknowledged: set[int] = field(default_factory=set)
    resign_requested: bool = False
    #: KIP-853: the one voter change in progress (one at a time).
    pending_change: PendingVoterChange | None = None
    #: The leader's own progress while it is not a voter (it removed itself, KIP-853).
    local_state: ReplicaState | None = None
    name: str = "leader"

    def __post_init__(self) -> None:
        self.voter_states = {v: ReplicaState(v) for v in self.voters}
        self.unacknowledged = {v for v in self.voters if v != self.node_id}
        self.local_state = self.voter_states.get(self.node_id) or ReplicaState(self.node_id)
        if len(self.voters) > 1:
            self.check_quorum_deadline_ms = self.now_ms + self.check_quorum_timeout_ms

    def set_voters(self, voters: frozenset[int], now_ms: int) -> bool:
        """KIP-853: the voter set changed (a VotersRecord was appended or truncated away).
        Replica progress moves between voters and observers; the high watermark is
        recomputed with the new majority but never goes back. True if it moved."""
        for removed in [v for v in self.voter_states if v not in voters]:
            state = self.voter_states.pop(removed)
            if removed != self.node_id:
                self.observer_states[removed] = state
            self.unacknowledged.discard(removed)
            self.fetched_voters.discard(removed)
        for added in sorted(voters - set(self.voter_states)):
            if added == self.node_id:
                assert self.local_state is not None
                state = self.local_state
            else:
                old = self.observer_states.pop(added) if added in self.observer_states else None
                state = old or ReplicaState(added)
                self.unacknowledged.add(added)
            self.voter_states[added] = state
        self.voters = voters
        if len(voters) > 1 or self.node_id not in voters:
            if self.check_quorum_deadline_ms is None:
                self.check_quorum_deadline_ms = now_ms + self.check_quorum_timeout_ms
        else:
            self.check_quorum_deadline_ms = None
        return self._maybe_update_high_watermark()

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, self.node_id, self.node_id)

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def update_local_state(self, log_end_offset: int, now_ms: int) -> bool:
        """The leader's own log grew (its records are flushed before anything is sent)."""
        state = self.local_state
        assert state is not None
        state.log_end_offset = log_end_offset
        state.last_fetch_timestamp = now_ms
        state.last_caught_up_timestamp = now_ms
        return self._maybe_update_high_watermark()

    def update_replica_state(
        self,
        replica_id: int,
        fetch_offset: int,
        leader_end_offset: int,
        now_ms: int,
        directory_id: uuid.UUID | None = None,
    ) -> bool:
        """A validated Fetch from ``replica_id`` at ``fetch_offset``; True if the HW moved."""
        states = self.voter_states if replica_id in self.voters else self.observer_states
        state = states.get(replica_id)
        if state is None or state.directory_id != directory_id:
            # A new replica, or the same id with another disk: progress starts over.
            state = states[replica_id] = ReplicaState(replica_id, directory_id=directory_id)
        state.log_end_offset = fetch_offset
        state.last_fetch_timestamp = now_ms
        if fetch_offset >= leader_end_offset:
            state.last_caught_up_timestamp = now_ms
        if replica_id not in self.voters:
            return False
        return self._maybe_update_high_watermark()

    def _maybe_update_high_watermark(self) -> bool:
        offsets = sorted((s.log_end_offset for s in self.voter_states.values()), reverse=True)
        candidate = offsets[self.majority - 1]
        if candidate <= self.epoch_start_offset:
            return False
        if self.high_watermark is None or candidate > self.high_watermark:
            self.high_watermark = candidate
            return True
        return False

    def update_check_quorum(self, replica_id: int, now_ms: int) -> None:
        """A voter fetched in this epoch: it still follows us (Kafka's
        ``updateCheckQuorumForFollowingVoter``)."""
        self.unacknowledged.discard(replica_id)
        if replica_id not in self.voters or replica_id == self.node_id:
            return
        self.fetched_voters.add(replica_id)
        if len(self.fetched_voters) + (self.node_id in self.voters) >= self.majority:
            self.fetched_voters.clear()
            self.check_quorum_deadline_ms = now_ms + self.check_quorum_timeout_ms

    def check_quorum_expired(self, now_ms: int) -> bool:
        deadline = self.check_quorum_deadline_ms
        return deadline is not None and now_ms >= deadline

    def is_replica_caught_up(
        self, replica_id: int, directory_id: uuid.UUID | None, now_ms: int
    ) -> bool:
        """Kafka's ``isReplicaCaughtUp`` for AddRaftVoter: the observer (same directory id) has
        been caught up with the log end at some fetch and fetched within the last hour."""
        state = self.observer_states.get(replica_id)
        return (
            state is not None
            and state.directory_id == directory_id
            and state.last_caught_up_timestamp > 0
            and state.last_fetch_timestamp > now_ms - 3_600_000
        )

    def non_leader_voters_by_descending_fetch_offset(self) -> tuple[int, ...]:
        others = [s for v, s in self.voter_states.items() if v != self.node_id]
        others.sort(key=lambda s: (-s.log_end_offset, s.replica_id))
        return tuple(s.replica_id for s in others)
