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

from dataclasses import dataclass, field

from .quorum_state import ElectionState


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one replica (DescribeQuorum's ``ReplicaState``)."""

    replica_id: int
    log_end_offset: int = -1
    last_fetch_timestamp: int = -1
    last_caught_up_timestamp: int = -1


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
    name: str = "leader"

    def __post_init__(self) -> None:
        self.voter_states = {v: ReplicaState(v) for v in self.voters}
        self.unacknowledged = {v for v in self.voters if v != self.node_id}
        if len(self.voters) > 1:
            self.check_quorum_deadline_ms = self.now_ms + self.check_quorum_timeout_ms

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, self.node_id, self.node_id)

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def update_local_state(self, log_end_offset: int, now_ms: int) -> bool:
        """The leader's own log grew (its records are flushed before anything is sent)."""
        state = self.voter_states[self.node_id]
        state.log_end_offset = log_end_offset
        state.last_fetch_timestamp = now_ms
        state.last_caught_up_timestamp = now_ms
        return self._maybe_update_high_watermark()

    def update_replica_state(
        self, replica_id: int, fetch_offset: int, leader_end_offset: int, now_ms: int
    ) -> bool:
        """A validated Fetch from ``replica_id`` at ``fetch_offset``; True if the HW moved."""
        states = self.voter_states if replica_id in self.voters else self.observer_states
        state = states.get(replica_id)
        if state is None:
            state = states[replica_id] = ReplicaState(replica_id)
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
        if len(self.fetched_voters) + 1 >= self.majority:
            self.fetched_voters.clear()
            self.check_quorum_deadline_ms = now_ms + self.check_quorum_timeout_ms

    def check_quorum_expired(self, now_ms: int) -> bool:
        deadline = self.check_quorum_deadline_ms
        return deadline is not None and now_ms >= deadline

    def non_leader_voters_by_descending_fetch_offset(self) -> tuple[int, ...]:
        others = [s for v, s in self.voter_states.items() if v != self.node_id]
        others.sort(key=lambda s: (-s.log_end_offset, s.replica_id))
        return tuple(s.replica_id for s in others)
