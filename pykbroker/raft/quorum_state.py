"""QuorumState: which KRaft state this node is in, its epoch, and the legal transitions.

Mirrors Kafka's ``QuorumState`` with ``UnattachedState`` (which is also the "voted" state once it
holds a ``voted_id``, as in Kafka 4), ``ProspectiveState`` (KIP-996 pre-vote),
``CandidateState``, ``LeaderState`` (in ``leader_state.py``), ``FollowerState`` and
``ResignedState``; ``ElectionState`` is what the ``quorum-state`` file holds.

Transitions (voters; observers only move between Unattached and Follower)::

    Unattached/Voted -> Prospective (election timeout), Unattached/Voted (higher epoch or vote),
                        Follower (leader discovered)
    Prospective      -> Candidate (pre-vote majority), Unattached/Follower (pre-vote lost or
                        timed out), Unattached/Follower (higher epoch)
    Candidate        -> Leader (vote majority), Prospective (timeout/loss after backoff),
                        Unattached/Follower (higher epoch or leader discovered)
    Leader           -> Resigned (graceful or check quorum), Unattached/Follower (higher epoch)
    Follower         -> Prospective (fetch timeout), Unattached/Follower (higher epoch)
    Resigned         -> Candidate (election timeout), Unattached/Follower (higher epoch)

Invariants: the epoch never decreases; within an epoch a node votes for at most one candidate
and knows at most one leader, and every same-epoch transition keeps ``voted_id`` and
``leader_id`` (so persisting only the latest ``ElectionState`` never forgets a vote that a sent
message depends on). The caller persists ``state.election`` before it sends anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import QuorumConfig
from .messages import NO_LEADER, OffsetAndEpoch

NO_VOTE = -1


class RandomSource(Protocol):
    """What the state machine needs of ``random.Random`` (injected, never the global one)."""

    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class ElectionState:
    """Kafka's ``ElectionState``: the content of the ``quorum-state`` file (QuorumStateData)."""

    epoch: int
    leader_id: int = NO_LEADER
    voted_id: int = NO_VOTE

    @property
    def has_leader(self) -> bool:
        return self.leader_id != NO_LEADER

    @property
    def has_voted(self) -> bool:
        return self.voted_id != NO_VOTE

    def to_quorum_state_data(self, voters: Iterable[int] = ()) -> dict[str, Any]:
        """The codec dict of ``schemas.QUORUM_STATE_DATA`` (version 0 fields included)."""
        return {
            "cluster_id": "",
            "leader_id": self.leader_id,
            "leader_epoch": self.epoch,
            "voted_id": self.voted_id,
            "applied_offset": 0,
            "current_voters": [{"voter_id": v} for v in sorted(voters)],
        }

    def to_json(self, voters: Iterable[int] = ()) -> str:
        """Kafka's ``FileQuorumStateStore`` file content (QuorumStateData v0 as JSON)."""
        return json.dumps(
            {
                "clusterId": "",
                "leaderId": self.leader_id,
                "leaderEpoch": self.epoch,
                "votedId": self.voted_id,
                "appliedOffset": 0,
                "currentVoters": [{"voterId": v} for v in sorted(voters)],
                "data_version": 0,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ElectionState:
        """Read a ``quorum-state`` file written by Kafka (v0 or v1) or by ``to_json``."""
        data = json.loads(text)
        return cls(
            epoch=int(data.get("leaderEpoch", 0)),
            leader_id=int(data.get("leaderId", NO_LEADER)),
            voted_id=int(data.get("votedId", NO_VOTE)),
        )


@dataclass(slots=True)
class UnattachedState:
    """Epoch known, leader not; ``voted_id`` set once a vote was granted ("voted" state).
    Observers have no election deadline."""

    epoch: int
    voted_id: int
    election_deadline_ms: int | None
    name: str = "unattached"

    def __post_init__(self) -> None:
        self.name = "voted" if self.voted_id != NO_VOTE else "unattached"

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, NO_LEADER, self.voted_id)


@dataclass(slots=True)
class ProspectiveState:
    """KIP-996: asking for pre-votes in the current epoch before becoming a candidate."""

    epoch: int
    leader_id: int
    voted_id: int
    election_deadline_ms: int
    granted: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)
    name: str = "prospective"

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, self.leader_id, self.voted_id)


@dataclass(slots=True)
class CandidateState:
    """Voted for itself in ``epoch``; collecting votes. After a loss or a timeout it backs off
    (``backoff_deadline_ms``) before trying again through pre-vote."""

    epoch: int
    node_id: int
    election_deadline_ms: int
    retries: int
    granted: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)
    backoff_deadline_ms: int | None = None
    name: str = "candidate"

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, NO_LEADER, self.node_id)


@dataclass(slots=True)
class FollowerState:
    """Fetching from ``leader_id``; ``fetch_deadline_ms`` is the fetch timeout."""

    epoch: int
    leader_id: int
    voted_id: int
    fetch_deadline_ms: int
    has_fetched_from_leader: bool = False
    #: A snapshot being downloaded with FetchSnapshot: its id and the bytes so far.
    fetching_snapshot: tuple[OffsetAndEpoch, bytearray] | None = None
    #: Observers whose fetch timed out ask any voter (round robin) instead of the leader.
    fetch_from_any_voter: bool = False
    name: str = "follower"

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, self.leader_id, self.voted_id)


@dataclass(slots=True)
class ResignedState:
    """A leader that stepped down (or restarted as leader): sends EndQuorumEpoch to the voters
    in ``unacknowledged`` and waits out an election timeout, never leading this epoch again."""

    epoch: int
    node_id: int
    election_deadline_ms: int
    preferred_successors: tuple[int, ...]
    unacknowledged: set[int]
    name: str = "resigned"

    @property
    def election(self) -> ElectionState:
        return ElectionState(self.epoch, self.node_id, self.node_id)


NonLeaderState = UnattachedState | ProspectiveState | CandidateState | FollowerState | ResignedState


class QuorumState:
    """The current state of this node and the only place that changes it (see module doc).

    ``LeaderState`` is built by the replica (it needs the log); this class only swaps it in.
    """

    def __init__(
        self,
        node_id: int,
        voters: frozenset[int],
        config: QuorumConfig,
        random: RandomSource,
    ) -> None:
        # KIP-853: ``voters`` may be empty for an observer that has not read a VotersRecord
        # yet (formatted with --no-initial-controllers); it learns them by fetching.
        self.node_id = node_id
        self.voters = voters
        self.config = config
        self.random = random
        self.state: Any = UnattachedState(0, NO_VOTE, None)
        self.election_retries = 0
        #: KIP-853 / Raft dissertation 4.2.2: a node removed by a VotersRecord that is not
        #: committed yet still runs elections (set by the replica), or a quorum that needs it
        #: to replicate that record could never elect a leader.
        self.electable_outside_voters = False

    # --- queries ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self.state.epoch)

    @property
    def election(self) -> ElectionState:
        election: ElectionState = self.state.election
        return election

    @property
    def leader_id(self) -> int:
        return self.election.leader_id

    @property
    def is_voter(self) -> bool:
        """Takes part in elections: in the voter set, or removed by an uncommitted change."""
        return self.node_id in self.voters or self.electable_outside_voters

    @property
    def is_observer(self) -> bool:
        return not self.is_voter

    @property
    def is_only_voter(self) -> bool:
        return self.voters == frozenset((self.node_id,))

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def remote_voters(self) -> list[int]:
        return sorted(v for v in self.voters if v != self.node_id)

    def random_election_timeout_ms(self) -> int:
        """Kafka's ``randomElectionTimeoutMs``: uniform in ``[timeout, 2 * timeout)``."""
        timeout = self.config.controller_quorum_election_timeout_ms
        return timeout + self.random.randrange(0, timeout)

    def election_backoff_ms(self, retries: int) -> int:
        """Kafka's ``binaryExponentialElectionBackoffMs``: random, doubling per retry, capped."""
        ceiling = self.config.controller_quorum_retry_backoff_ms << min(20, max(retries - 1, 0))
        backoff = self.random.randrange(0, max(1, ceiling))
        return min(backoff, self.config.controller_quorum_election_backoff_max_ms)

    # --- start-up --------------------------------------------------------------------------

    def initialize(
        self, election: ElectionState | None, log_end: OffsetAndEpoch, now_ms: int
    ) -> None:
        """Start in the state the ``quorum-state`` file describes (Kafka's ``initialize``)."""
        election = election or ElectionState(0)
        deadline = None if self.is_observer else now_ms + self.random_election_timeout_ms()
        # A vote in quorum-state of a node that is no longer a voter (KIP-853: removed) is
        # kept: it cannot vote while an observer, and must not vote twice if re-added.
        if election.epoch < log_end.epoch:
            # The log saw a newer epoch than quorum-state (lost file): start unattached there.
            self.state = UnattachedState(log_end.epoch, NO_VOTE, deadline)
        elif election.leader_id == self.node_id:
            # A restarted leader resigns: it must not vote in, or lead, its old epoch again
            # (its unflushed records of that epoch may be lost). Also when it is no longer a
            # voter (it removed itself, KIP-853): it still remembers leading the epoch.
            if deadline is None:
                deadline = now_ms + self.random_election_timeout_ms()
            self.state = ResignedState(
                election.epoch, self.node_id, deadline, (), set(self.remote_voters)
            )
        elif election.has_leader and election.leader_id != self.node_id:
            self.state = FollowerState(
                election.epoch,
                election.leader_id,
                election.voted_id,
                now_ms + self.config.controller_quorum_fetch_timeout_ms,
            )
        else:
            self.state = UnattachedState(election.epoch, election.voted_id, deadline)

    # --- transitions -----------------------------------------------------------------------

    def _carried_deadline(self, now_ms: int) -> int | None:
        if self.is_observer:
            return None
        state = self.state
        if isinstance(state, UnattachedState | ProspectiveState | CandidateState):
            return state.election_deadline_ms
        return now_ms + self.random_election_timeout_ms()

    def transition_to_unattached(self, epoch: int, now_ms: int) -> None:
        """A higher epoch without a known leader (or, within the epoch, a lost pre-vote)."""
        state = self.state
        same_epoch = epoch == state.epoch
        if epoch < state.epoch or (
            same_epoch and not isinstance(state, ProspectiveState | UnattachedState)
        ):
            raise AssertionError(f"cannot go unattached in epoch {epoch} from {state}")
        voted = state.voted_id if same_epoch else NO_VOTE
        deadline = self._carried_deadline(now_ms)
        if same_epoch and deadline is not None and deadline <= now_ms:
            deadline = now_ms + self.random_election_timeout_ms()
        self.state = UnattachedState(epoch, voted, deadline)

    def transition_to_unattached_voted(self, epoch: int, candidate_id: int, now_ms: int) -> None:
        """Grant a vote: reset the election timeout, since the candidate has as good a chance
        to win as we have."""
        state = self.state
        if candidate_id == self.node_id or candidate_id < 0:
            raise AssertionError(f"cannot vote for {candidate_id}")
        if not isinstance(state, UnattachedState) or state.epoch != epoch or state.voted_id >= 0:
            raise AssertionError(f"cannot vote in epoch {epoch} from {state}")
        self.state = UnattachedState(
            epoch, candidate_id, now_ms + self.random_election_timeout_ms()
        )

    def transition_to_follower(self, epoch: int, leader_id: int, now_ms: int) -> None:
        state = self.state
        if leader_id == self.node_id or leader_id < 0:
            raise AssertionError(f"cannot follow {leader_id}")
        if epoch < state.epoch:
            raise AssertionError(f"cannot follow in epoch {epoch} from {state}")
        voted = NO_VOTE
        if epoch == state.epoch:
            if isinstance(state, FollowerState) or (
                state.election.has_leader and not isinstance(state, ProspectiveState)
            ):
                raise AssertionError(f"cannot follow {leader_id} in epoch {epoch} from {state}")
            voted = state.election.voted_id
        self.election_retries = 0
        self.state = FollowerState(
            epoch, leader_id, voted, now_ms + self.config.controller_quorum_fetch_timeout_ms
        )

    def transition_to_prospective(self, now_ms: int) -> None:
        state = self.state
        if self.is_observer or isinstance(state, ProspectiveState):
            raise AssertionError(f"cannot go prospective from {state}")
        election = state.election
        leader_id = election.leader_id if isinstance(state, FollowerState) else NO_LEADER
        self.state = ProspectiveState(
            state.epoch,
            leader_id,
            election.voted_id,
            now_ms + self.random_election_timeout_ms(),
            granted={self.node_id},
        )

    def transition_to_candidate(self, now_ms: int) -> None:
        if self.is_observer or self.state.name == "leader":
            raise AssertionError(f"cannot become candidate from {self.state}")
        self.election_retries += 1
        self.state = CandidateState(
            self.epoch + 1,
            self.node_id,
            now_ms + self.random_election_timeout_ms(),
            self.election_retries,
            granted={self.node_id},
        )

    def transition_to_leader(self, leader_state: Any) -> None:
        if not isinstance(self.state, CandidateState):
            raise AssertionError(f"cannot lead from {self.state}")
        if len(self.state.granted & self.voters) < self.majority:
            raise AssertionError("cannot lead without a majority of votes")
        self.election_retries = 0
        self.state = leader_state

    def transition_to_resigned(self, preferred_successors: tuple[int, ...], now_ms: int) -> None:
        """Leader steps down in its epoch (soft state: a restarted leader starts here anyway)."""
        self.state = ResignedState(
            self.epoch,
            self.node_id,
            now_ms + self.random_election_timeout_ms(),
            preferred_successors,
            set(self.remote_voters),
        )
