"""ElectionHandlers: Vote (with KIP-996 pre-vote), BeginQuorumEpoch and EndQuorumEpoch.

Part of ``RaftReplica``; mirrors ``KafkaRaftClient.handleVoteRequest/Response``,
``handleBeginQuorumEpochRequest/Response``, ``handleEndQuorumEpochRequest/Response`` and the
election outcome logic (``maybeTransitionForward``, ``maybeHandleElectionLoss``,
``onBecomeLeader``).

Invariants: a standard vote is granted at most once per epoch, and the grant is in the
persisted election state before the response leaves (``take_output`` ordering); a pre-vote
never changes the voter's state beyond catching up to a higher epoch; a node becomes leader
only with a majority of granted votes in its epoch and then writes a LeaderChangeMessage
control record, whose commit opens the epoch (see ``LeaderState``).
"""

from __future__ import annotations

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode

from .core import ReplicaCore
from .leader_state import LeaderState
from .log import ControlRecordType, end_offset
from .messages import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    OffsetAndEpoch,
    RaftMessage,
    VoteRequest,
    VoteResponse,
)
from .quorum_state import (
    NO_VOTE,
    CandidateState,
    FollowerState,
    ProspectiveState,
    ResignedState,
    UnattachedState,
)
from .schemas import LEADER_CHANGE_MESSAGE
from .voter_set import KRAFT_VERSION_1, encode_kraft_version


class ElectionHandlers(ReplicaCore):
    """Vote / BeginQuorumEpoch / EndQuorumEpoch handling."""

    # --- elections ---------------------------------------------------------------------------

    def _start_election(self, now_ms: int) -> None:
        """Election timeout: pre-vote first (KIP-996) unless disabled."""
        if self.config.pre_vote_enabled:
            self._to_prospective(now_ms)
        else:
            self._to_candidate(now_ms)
        self._maybe_transition_forward(now_ms)

    def _maybe_transition_forward(self, now_ms: int) -> None:
        state = self.quorum.state
        majority = self.quorum.majority
        # Only votes of the current voter set count (a node removed by an uncommitted change
        # may run, but does not count itself).
        if isinstance(state, ProspectiveState) and len(state.granted & self.voters) >= majority:
            self._to_candidate(now_ms)
            state = self.quorum.state
        if (
            isinstance(state, CandidateState)
            and state.backoff_deadline_ms is None
            and len(state.granted & self.voters) >= majority
        ):
            self._become_leader(now_ms)

    def _maybe_handle_election_loss(self, now_ms: int) -> None:
        state = self.quorum.state
        cannot_win = len(self.voters) - self.quorum.majority
        if isinstance(state, ProspectiveState) and len(state.rejected) > cannot_win:
            self._prospective_lost(now_ms)
        elif (
            isinstance(state, CandidateState)
            and state.backoff_deadline_ms is None
            and len(state.rejected) > cannot_win
        ):
            state.backoff_deadline_ms = now_ms + self.quorum.election_backoff_ms(state.retries)

    def _prospective_lost(self, now_ms: int) -> None:
        """Pre-vote lost or timed out: back to following the known leader, or unattached."""
        state = self.quorum.state
        assert isinstance(state, ProspectiveState)
        if state.leader_id >= 0:
            self._to_follower(state.epoch, state.leader_id, now_ms)
        else:
            self._to_unattached(state.epoch, now_ms)

    def _become_leader(self, now_ms: int) -> None:
        """Kafka's ``onBecomeLeader``: lead from the current log end, announce the epoch with a
        LeaderChangeMessage control record."""
        state = self.quorum.state
        assert isinstance(state, CandidateState)
        old = state
        leader = LeaderState(
            node_id=self.node_id,
            epoch=state.epoch,
            epoch_start_offset=self.log.log_end_offset,
            voters=self.voters,
            granting_voters=frozenset(state.granted),
            check_quorum_timeout_ms=self.config.check_quorum_timeout_ms,
            now_ms=now_ms,
        )
        self.quorum.transition_to_leader(leader)
        self._after_transition(old)
        value = codec.encode(
            LEADER_CHANGE_MESSAGE,
            0,
            {
                "version": 0,
                "leader_id": self.node_id,
                "voters": [{"voter_id": v} for v in sorted(self.voters)],
                "granting_voters": [{"voter_id": v} for v in sorted(state.granted)],
            },
        )
        self.log.append_as_leader([value], leader.epoch, ControlRecordType.LEADER_CHANGE)
        self._log_changed()
        control = self.control
        if control.kraft_version >= KRAFT_VERSION_1 and control.last_voter_set_offset == -1:
            # KIP-853: the voters are only in the bootstrap checkpoint; write them to the log
            # so that replicas formatted without it (observers) learn them by fetching.
            voters = control.last_voter_set
            kraft = encode_kraft_version(control.kraft_version)
            self.log.append_as_leader([kraft], leader.epoch, ControlRecordType.KRAFT_VERSION)
            self.log.append_as_leader(
                [voters.encode()], leader.epoch, ControlRecordType.KRAFT_VOTERS
            )
            self._log_changed()
        if leader.update_local_state(self.log.log_end_offset, now_ms):
            self._on_leader_high_watermark(now_ms)

    # --- Vote ----------------------------------------------------------------------------------

    def _vote_response(self, error: ErrorCode, granted: bool = False) -> VoteResponse:
        return VoteResponse(error, self.quorum.leader_id, self.quorum.epoch, granted)

    def _handle_vote_request(self, message: RaftMessage, request: VoteRequest, now_ms: int) -> None:
        self._respond(message, self._vote(request, now_ms))

    def _vote(self, request: VoteRequest, now_ms: int) -> VoteResponse:
        if not self._valid_cluster_id(request.cluster_id):
            return self._vote_response(ErrorCode.INCONSISTENT_CLUSTER_ID)
        epoch = request.candidate_epoch
        last_epoch = request.last_offset_epoch
        if (
            request.last_offset < 0
            or last_epoch < 0
            or last_epoch > epoch
            or (last_epoch == epoch and not request.pre_vote)
        ):
            return self._vote_response(ErrorCode.INVALID_REQUEST)
        if epoch < self.quorum.epoch:
            return self._vote_response(ErrorCode.FENCED_LEADER_EPOCH)
        if epoch > self.quorum.epoch:
            self._to_unattached(epoch, now_ms)
        if request.voter_id >= 0 and request.voter_id != self.node_id:
            return self._vote_response(ErrorCode.INVALID_VOTER_KEY)
        # KIP-853: no voter-set check on either side -- a new voter that has not fetched the
        # VotersRecord adding it must still vote, or a quorum that needs it could never elect.
        up_to_date = OffsetAndEpoch(request.last_offset, last_epoch) >= end_offset(self.log)
        granted = self._can_grant_vote(request.candidate_id, up_to_date, request.pre_vote)
        state = self.quorum.state
        if (
            granted
            and not request.pre_vote
            and isinstance(state, UnattachedState | ProspectiveState)
            and state.voted_id == NO_VOTE
        ):
            if isinstance(state, ProspectiveState):
                self._to_unattached(epoch, now_ms)
            self._to_unattached_voted(epoch, request.candidate_id, now_ms)
        return self._vote_response(ErrorCode.NO_ERROR, granted)

    def _can_grant_vote(self, candidate_id: int, up_to_date: bool, pre_vote: bool) -> bool:
        """Each state's ``canGrantVote`` (Kafka 4 with KIP-996)."""
        state = self.quorum.state
        if isinstance(state, UnattachedState | ProspectiveState):
            if pre_vote:
                return up_to_date
            if state.voted_id != NO_VOTE:
                return state.voted_id == candidate_id
            if isinstance(state, ProspectiveState) and state.leader_id >= 0:
                return False
            return up_to_date
        if isinstance(state, CandidateState):
            return pre_vote and up_to_date
        if isinstance(state, FollowerState):
            # A follower still hearing from its leader refuses to help depose it; one that has
            # not fetched since it started following grants, which ends ping-pong elections.
            return pre_vote and up_to_date and not state.has_fetched_from_leader
        return False  # leader, resigned

    def _handle_vote_response(self, source: int, response: VoteResponse, now_ms: int) -> bool:
        state = self.quorum.state
        if response.error_code == ErrorCode.UNSUPPORTED_VERSION and isinstance(
            state, ProspectiveState
        ):
            # KIP-996 compatibility: a voter without pre-vote; run a standard election.
            self._to_candidate(now_ms)
            self._maybe_transition_forward(now_ms)
            return True
        if self._handle_common_response(
            response.error_code, response.leader_id, response.leader_epoch, now_ms
        ):
            return response.error_code == ErrorCode.NO_ERROR
        state = self.quorum.state
        if not isinstance(state, ProspectiveState | CandidateState):
            return True
        if response.vote_granted:
            state.granted.add(source)
            state.rejected.discard(source)
            self._maybe_transition_forward(now_ms)
        else:
            if source not in state.granted:
                state.rejected.add(source)
            self._maybe_handle_election_loss(now_ms)
        return True

    # --- BeginQuorumEpoch ----------------------------------------------------------------------

    def _begin_epoch_response(self, error: ErrorCode) -> BeginQuorumEpochResponse:
        return BeginQuorumEpochResponse(error, self.quorum.leader_id, self.quorum.epoch)

    def _handle_begin_quorum_epoch_request(
        self, message: RaftMessage, request: BeginQuorumEpochRequest, now_ms: int
    ) -> None:
        if not self._valid_cluster_id(request.cluster_id):
            response = self._begin_epoch_response(ErrorCode.INCONSISTENT_CLUSTER_ID)
        elif request.leader_epoch < self.quorum.epoch:
            response = self._begin_epoch_response(ErrorCode.FENCED_LEADER_EPOCH)
        elif request.voter_id >= 0 and request.voter_id != self.node_id:
            response = self._begin_epoch_response(ErrorCode.INVALID_VOTER_KEY)
        else:
            # KIP-853: a voter the leader added may not have read that VotersRecord yet.
            self._maybe_transition(request.leader_id, request.leader_epoch, now_ms)
            response = self._begin_epoch_response(ErrorCode.NO_ERROR)
        self._respond(message, response)

    def _handle_begin_quorum_epoch_response(
        self, source: int, response: BeginQuorumEpochResponse, now_ms: int
    ) -> bool:
        if self._handle_common_response(
            response.error_code, response.leader_id, response.leader_epoch, now_ms
        ):
            return response.error_code == ErrorCode.NO_ERROR
        leader = self._leader_state()
        if leader is not None:
            leader.unacknowledged.discard(source)
        return True

    # --- EndQuorumEpoch ------------------------------------------------------------------------

    def _end_epoch_response(self, error: ErrorCode) -> EndQuorumEpochResponse:
        return EndQuorumEpochResponse(error, self.quorum.leader_id, self.quorum.epoch)

    def _handle_end_quorum_epoch_request(
        self, message: RaftMessage, request: EndQuorumEpochRequest, now_ms: int
    ) -> None:
        if not self._valid_cluster_id(request.cluster_id):
            response = self._end_epoch_response(ErrorCode.INCONSISTENT_CLUSTER_ID)
        elif request.leader_epoch < self.quorum.epoch:
            response = self._end_epoch_response(ErrorCode.FENCED_LEADER_EPOCH)
        elif request.leader_id not in self.voters or self.quorum.is_observer:
            response = self._end_epoch_response(ErrorCode.INCONSISTENT_VOTER_SET)
        else:
            self._maybe_transition(request.leader_id, request.leader_epoch, now_ms)
            state = self.quorum.state
            if isinstance(state, FollowerState) and state.leader_id == request.leader_id:
                backoff = self._end_epoch_election_backoff_ms(request.preferred_successors)
                state.fetch_deadline_ms = min(state.fetch_deadline_ms, now_ms + backoff)
            response = self._end_epoch_response(ErrorCode.NO_ERROR)
        self._respond(message, response)

    def _end_epoch_election_backoff_ms(self, preferred_successors: tuple[int, ...]) -> int:
        """The first preferred successor starts at once; the next ones wait exponentially
        longer (Kafka's ``strictExponentialElectionBackoffMs``)."""
        if self.node_id not in preferred_successors:
            return self.config.controller_quorum_election_backoff_max_ms
        position = preferred_successors.index(self.node_id)
        if position == 0:
            return 0
        return min(
            self.config.controller_quorum_election_backoff_max_ms,
            self.config.controller_quorum_retry_backoff_ms << (position - 1),
        )

    def _handle_end_quorum_epoch_response(
        self, source: int, response: EndQuorumEpochResponse, now_ms: int
    ) -> bool:
        if self._handle_common_response(
            response.error_code, response.leader_id, response.leader_epoch, now_ms
        ):
            return response.error_code == ErrorCode.NO_ERROR
        state = self.quorum.state
        if isinstance(state, ResignedState):
            state.unacknowledged.discard(source)
        return True
