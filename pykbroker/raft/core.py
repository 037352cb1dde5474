"""ReplicaCore: the state, outputs and transitions shared by the KRaft request handlers.

Part of ``RaftReplica`` (Kafka's ``KafkaRaftClient``): this base class holds the quorum state, the
log, the request manager and the output being built, and implements Kafka's
``maybeHandleCommonResponse`` / ``maybeTransition`` and the ``transitionTo*`` wrappers. The
election handlers (``election.py``) and the replication handlers (``replication.py``) build on
it; ``replica.py`` adds the public API and the per-state ``poll``.

Invariants: every state change goes through a ``_to_*`` wrapper, which forgets in-flight
requests and answers parked fetches of a lost leadership; the local ``high_watermark`` only
grows during the life of the object (it restarts at the log start offset, like Kafka's, which
does not persist it); nothing here does I/O -- messages and persistence needs are queued in
``_out`` and handed to the driver by ``take_output``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from pykbroker.api.protocol.errors import ErrorCode

from .config import QuorumConfig
from .kraft_control import KRaftControlRecordStateMachine
from .leader_state import LeaderState
from .log import ReplicatedLog
from .messages import (
    NO_LEADER,
    FetchRequest,
    FetchResponse,
    LeaderAndEpoch,
    RaftMessage,
    RaftRequest,
    RaftResponse,
)
from .output import RaftOutput
from .quorum_state import (
    CandidateState,
    ElectionState,
    FollowerState,
    ProspectiveState,
    QuorumState,
    RandomSource,
    ResignedState,
    UnattachedState,
)
from .request_manager import RequestManager

logger = logging.getLogger(__name__)


class RaftStateError(Exception):
    """A message contradicts what this node durably knows (two leaders in one epoch, a
    truncation below the high watermark): a safety bug somewhere, never a network fault."""


class NotLeaderError(Exception):
    """``append``/``resign``/``describe_quorum`` on a node that is not the leader of the epoch."""

    def __init__(self, leader_and_epoch: LeaderAndEpoch) -> None:
        super().__init__(f"not the leader; current leader {leader_and_epoch}")
        self.leader_and_epoch = leader_and_epoch


@dataclass(slots=True)
class ParkedFetch:
    """A Fetch the leader holds until new records, a high watermark change, or its deadline
    (Kafka's fetch purgatory)."""

    message: RaftMessage
    request: FetchRequest
    deadline_ms: int


class ReplicaCore:
    """Shared state of ``RaftReplica`` (see the module docstring)."""

    def __init__(
        self,
        node_id: int,
        voters: frozenset[int],
        log: ReplicatedLog,
        *,
        config: QuorumConfig,
        random: RandomSource,
        cluster_id: str | None,
        control: KRaftControlRecordStateMachine,
        directory_id: uuid.UUID | None = None,
        bootstrap_servers: tuple[int, ...] = (),
    ) -> None:
        self.node_id = node_id
        self.voters = voters
        #: KIP-853: kraft.version and the voter set as of every offset of the log.
        self.control = control
        self.directory_id = directory_id
        #: Node ids the driver maps to ``controller.quorum.bootstrap.servers`` addresses.
        self.bootstrap_servers = bootstrap_servers
        self.log = log
        self.config = config
        self.cluster_id = cluster_id
        self.quorum = QuorumState(node_id, voters, config, random)
        self.requests = RequestManager(config)
        self.high_watermark = log.log_start_offset
        self._out = RaftOutput()
        self._persisted: ElectionState | None = None
        self._last_leader_and_epoch = LeaderAndEpoch(NO_LEADER, -1)
        self._next_correlation_id = 0
        self._transitions = 0
        self._parked: dict[int, ParkedFetch] = {}
        self._now_ms = 0
        #: Fetched records the log refused (corrupt or out of place); each was refetched.
        self.append_errors = 0

    # --- queries -----------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.quorum.epoch

    @property
    def leader_id(self) -> int:
        return self.quorum.leader_id

    @property
    def leader_and_epoch(self) -> LeaderAndEpoch:
        election = self.quorum.election
        return LeaderAndEpoch(election.leader_id, election.epoch)

    @property
    def state_name(self) -> str:
        """``unattached``, ``voted``, ``prospective``, ``candidate``, ``leader``, ``follower``
        or ``resigned``."""
        return str(self.quorum.state.name)

    @property
    def is_leader(self) -> bool:
        return isinstance(self.quorum.state, LeaderState)

    def _leader_state(self) -> LeaderState | None:
        state = self.quorum.state
        return state if isinstance(state, LeaderState) else None

    # --- output ------------------------------------------------------------------------------

    def take_output(self) -> RaftOutput:
        """Everything queued since the last call, in the order the driver must act on it."""
        out, self._out = self._out, RaftOutput()
        election = self.quorum.election
        if election != self._persisted:
            out.persist_election_state = election
            self._persisted = election
        leader_and_epoch = LeaderAndEpoch(election.leader_id, election.epoch)
        if leader_and_epoch != self._last_leader_and_epoch:
            out.leader_change = leader_and_epoch
            self._last_leader_and_epoch = leader_and_epoch
        out.next_tick_ms = self._next_deadline_ms()
        return out

    def _next_deadline_ms(self) -> int | None:
        state = self.quorum.state
        deadlines: list[int | None] = [self.requests.next_deadline_ms(self._now_ms)]
        if isinstance(state, UnattachedState | ProspectiveState | ResignedState):
            deadlines.append(state.election_deadline_ms)
        elif isinstance(state, CandidateState):
            deadlines.append(state.backoff_deadline_ms or state.election_deadline_ms)
        elif isinstance(state, FollowerState):
            deadlines.append(state.fetch_deadline_ms)
        elif isinstance(state, LeaderState):
            deadlines.append(state.check_quorum_deadline_ms)
            if state.pending_change is not None:
                deadlines.append(state.pending_change.deadline_ms)
            deadlines.extend(p.deadline_ms for p in self._parked.values())
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def _send_request(self, destination: int, body: RaftRequest, now_ms: int) -> None:
        self._next_correlation_id += 1
        correlation_id = self._next_correlation_id
        self.requests.on_request_sent(destination, correlation_id, now_ms)
        self._out.messages.append(RaftMessage(self.node_id, destination, correlation_id, body))

    def _respond(self, request: RaftMessage, body: RaftResponse) -> None:
        self._out.messages.append(
            RaftMessage(self.node_id, request.source, request.correlation_id, body)
        )

    def _log_changed(self) -> None:
        self._out.flush_log = True
        self._sync_voters()

    def _truncated(self, offset: int) -> None:
        self._out.flush_log = True
        previous = self._out.truncated_to
        self._out.truncated_to = offset if previous is None else min(previous, offset)
        self.control.truncate_to(offset)
        self._sync_voters()

    def _sync_voters(self) -> None:
        """Read new control records; a new voter set takes effect at once (KIP-853: on
        append, not on commit; a truncation reverts it)."""
        self.control.update(self.log)
        voters = self.control.last_voter_set.voter_ids
        if voters == self.voters:
            self._update_electable()
            return
        logger.info("node %d: voters %s -> %s", self.node_id, sorted(self.voters), sorted(voters))
        self.voters = voters
        self.quorum.voters = voters
        self._update_electable()
        leader = self._leader_state()
        if leader is not None and leader.set_voters(voters, self._now_ms):
            self._on_leader_high_watermark(self._now_ms)

    def _update_high_watermark(self, high_watermark: int) -> None:
        """Move the local high watermark forward (records below it are committed)."""
        if high_watermark < self.high_watermark:
            raise RaftStateError(
                f"node {self.node_id}: high watermark would go back from "
                f"{self.high_watermark} to {high_watermark}"
            )
        if high_watermark > self.high_watermark:
            self.high_watermark = high_watermark
            self._out.high_watermark = high_watermark
            self._update_electable()

    def _update_electable(self) -> None:
        """Raft dissertation 4.2.2: a node that the latest, uncommitted VotersRecord removed
        still takes part in elections until that record commits."""
        offset = self.control.last_voter_set_offset
        self.quorum.electable_outside_voters = (
            self.node_id not in self.voters
            and offset is not None
            and offset >= self.high_watermark
            and self.node_id in self.control.voter_set_at(offset - 1).voter_ids
        )

    def _on_leader_high_watermark(self, now_ms: int) -> None:
        """The leader's high watermark moved (implemented by the replication handlers)."""
        raise NotImplementedError

    def _complete_parked_fetches(self, now_ms: int, expired_only: bool = False) -> None:
        """Answer parked fetches (implemented by the replication handlers)."""
        raise NotImplementedError

    def _maybe_complete_voter_change(self) -> None:
        """Answer a committed voter change (implemented in reconfiguration)."""
        raise NotImplementedError

    # --- transitions -------------------------------------------------------------------------

    def _after_transition(self, old: object) -> None:
        self._transitions += 1
        self.requests.reset_all()
        logger.debug("node %d: %s -> %s", self.node_id, old, self.quorum.state)
        if isinstance(old, LeaderState) and not self.is_leader:
            self._abort_voter_change(old, ErrorCode.NOT_LEADER_OR_FOLLOWER)
            parked, self._parked = self._parked, {}
            for fetch in parked.values():
                self._respond(
                    fetch.message, self._error_fetch_response(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                )

    def _abort_voter_change(self, leader: LeaderState, error: ErrorCode) -> None:
        """Answer the pending AddRaftVoter/RemoveRaftVoter (implemented in reconfiguration)."""
        raise NotImplementedError

    def _error_fetch_response(self, error: ErrorCode) -> FetchResponse:
        return FetchResponse(error, self.quorum.leader_id, self.quorum.epoch)

    def _to_unattached(self, epoch: int, now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_unattached(epoch, now_ms)
        self._after_transition(old)

    def _to_unattached_voted(self, epoch: int, candidate_id: int, now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_unattached_voted(epoch, candidate_id, now_ms)
        self._after_transition(old)

    def _to_follower(self, epoch: int, leader_id: int, now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_follower(epoch, leader_id, now_ms)
        self._after_transition(old)

    def _to_prospective(self, now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_prospective(now_ms)
        self._after_transition(old)

    def _to_candidate(self, now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_candidate(now_ms)
        self._after_transition(old)

    def _to_resigned(self, preferred_successors: tuple[int, ...], now_ms: int) -> None:
        old = self.quorum.state
        self.quorum.transition_to_resigned(preferred_successors, now_ms)
        self._after_transition(old)

    # --- Kafka's maybeTransition / maybeHandleCommonResponse ---------------------------------

    def _has_consistent_leader(self, epoch: int, leader_id: int) -> bool:
        if epoch != self.quorum.epoch or leader_id == NO_LEADER:
            return True
        known = self.quorum.election
        return not known.has_leader or known.leader_id == leader_id

    def _maybe_transition(self, leader_id: int, epoch: int, now_ms: int) -> None:
        """Catch up with a leader/epoch learned from a request or response."""
        if not self._has_consistent_leader(epoch, leader_id):
            raise RaftStateError(
                f"node {self.node_id}: leader {leader_id} in epoch {epoch} but we know "
                f"{self.quorum.election}"
            )
        if leader_id == self.node_id and not self.quorum.election.leader_id == self.node_id:
            raise RaftStateError(
                f"node {self.node_id}: told it leads epoch {epoch}, which it does not remember"
            )
        if epoch > self.quorum.epoch:
            # KIP-853: the leader need not be in our (possibly stale or empty) voter set.
            if leader_id != NO_LEADER:
                self._to_follower(epoch, leader_id, now_ms)
            else:
                self._to_unattached(epoch, now_ms)
        elif (
            epoch == self.quorum.epoch
            and leader_id != NO_LEADER
            and leader_id != self.node_id
            and not self.quorum.election.has_leader
        ):
            self._to_follower(epoch, leader_id, now_ms)

    def _handle_common_response(
        self, error: ErrorCode, leader_id: int, epoch: int, now_ms: int
    ) -> bool:
        """True if the response was fully handled here (stale, or it moved us to another
        epoch/leader, or a request-level error)."""
        if epoch < self.quorum.epoch or error == ErrorCode.UNKNOWN_LEADER_EPOCH:
            return True
        if epoch > self.quorum.epoch or error in (
            ErrorCode.FENCED_LEADER_EPOCH,
            ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ):
            self._maybe_transition(leader_id, epoch, now_ms)
            return True
        if (
            leader_id != NO_LEADER
            and leader_id != self.node_id
            and not self.quorum.election.has_leader
        ):
            self._to_follower(epoch, leader_id, now_ms)
            return error != ErrorCode.NO_ERROR
        if not self._has_consistent_leader(epoch, leader_id):
            raise RaftStateError(
                f"node {self.node_id}: response names leader {leader_id} in epoch {epoch} "
                f"but we know {self.quorum.election}"
            )
        return error != ErrorCode.NO_ERROR

    def _valid_cluster_id(self, cluster_id: str | None) -> bool:
        return cluster_id is None or self.cluster_id is None or cluster_id == self.cluster_id

    def _validate_leader_only(self, request_epoch: int) -> ErrorCode | None:
        """Kafka's ``validateLeaderOnlyRequest``."""
        if request_epoch < self.quorum.epoch:
            return ErrorCode.FENCED_LEADER_EPOCH
        if request_epoch > self.quorum.epoch:
            return ErrorCode.UNKNOWN_LEADER_EPOCH
        if not self.is_leader:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        return None
