"""VoterChangeHandlers: AddRaftVoter, RemoveRaftVoter and UpdateRaftVoter on the leader (KIP-853).

Part of ``RaftReplica``; mirrors Kafka's ``AddVoterHandler``, ``RemoveVoterHandler`` and
``UpdateVoterHandler`` with the checks in their order and Kafka's errors:

1. not the leader: NOT_LEADER_OR_FOLLOWER (UpdateRaftVoter: the leader-epoch checks first);
2. a change already in progress, or no high watermark yet in this epoch (the leader has not
   committed its LeaderChangeMessage): REQUEST_TIMED_OUT;
3. kraft.version 0 (static ``controller.quorum.voters``): UNSUPPORTED_VERSION;
4. the latest VotersRecord is not committed yet: REQUEST_TIMED_OUT (one change at a time);
5. add: the id already votes: DUPLICATE_VOTER; the observer (same directory id) is not caught
   up: REQUEST_TIMED_OUT. remove/update: no such voter key: VOTER_NOT_FOUND. A missing
   directory id, no listeners or an unsupported kraft.version range: INVALID_REQUEST;
6. append the new VotersRecord -- it takes effect at once (``_sync_voters``); Add/Remove are
   answered when it commits (REQUEST_TIMED_OUT at the deadline, NOT_LEADER_OR_FOLLOWER if the
   leadership ends), Update at once. A leader that removed itself resigns once the record is
   committed (``replica._poll_leader``).

The driver (``pykbroker.server.raft_driver``) routes the requests from the CONTROLLER listener
and sends a voter's own UpdateRaftVoter when its endpoint changed. Not done: Kafka's ApiVersions
round trip to the new voter before the add (its supported kraft.version range is assumed 0-1).
"""

from __future__ import annotations

from pykbroker.api.protocol.errors import ErrorCode

from .core import ReplicaCore
from .leader_state import LeaderState, PendingVoterChange
from .log import ControlRecordType
from .messages import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    RaftMessage,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
    VoterChangeRequest,
    VoterChangeResponse,
)
from .voter_set import KRAFT_VERSION_1, VoterNode, VoterSet


class VoterChangeHandlers(ReplicaCore):
    """AddRaftVoter / RemoveRaftVoter / UpdateRaftVoter handling (see the module docstring)."""

    def _voter_change_response(
        self, request: VoterChangeRequest, error: ErrorCode, message: str | None = None
    ) -> VoterChangeResponse:
        if isinstance(request, AddRaftVoterRequest):
            return AddRaftVoterResponse(error, message)
        if isinstance(request, RemoveRaftVoterRequest):
            return RemoveRaftVoterResponse(error, message)
        return UpdateRaftVoterResponse(error, self.quorum.leader_id, self.quorum.epoch)

    def _handle_voter_change_request(
        self, message: RaftMessage, request: VoterChangeRequest, now_ms: int
    ) -> None:
        result = self._voter_change(message, request, now_ms)
        if result is not None:
            error, text = result
            self._respond(message, self._voter_change_response(request, error, text))

    def _voter_change(
        self, message: RaftMessage, request: VoterChangeRequest, now_ms: int
    ) -> tuple[ErrorCode, str | None] | None:
        """The immediate answer, or None when the request waits for its record to commit."""
        if not self._valid_cluster_id(request.cluster_id):
            return ErrorCode.INCONSISTENT_CLUSTER_ID, None
        if isinstance(request, UpdateRaftVoterRequest):
            epoch_error = self._validate_leader_only(request.current_leader_epoch)
            if epoch_error is not None:
                return epoch_error, None
        leader = self._leader_state()
        if leader is None or leader.resign_requested:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, None
        key = request.voter
        if key.directory_id is None:
            return ErrorCode.INVALID_REQUEST, f"{key} has no directory id"
        if not isinstance(request, RemoveRaftVoterRequest) and not request.listeners:
            return ErrorCode.INVALID_REQUEST, f"{key} has no listeners"
        self._expire_voter_change(leader, now_ms)
        if leader.pending_change is not None:
            return ErrorCode.REQUEST_TIMED_OUT, "a previous voter change is in progress"
        high_watermark = leader.high_watermark
        if high_watermark is None:
            return ErrorCode.REQUEST_TIMED_OUT, "the leader has not committed in its epoch yet"
        control = self.control
        if control.kraft_version < KRAFT_VERSION_1:
            return ErrorCode.UNSUPPORTED_VERSION, "kraft.version 0 has a static voter set"
        last_offset = control.last_voter_set_offset
        if last_offset is None or last_offset >= high_watermark:
            return ErrorCode.REQUEST_TIMED_OUT, "the latest voter change is not committed yet"
        voters = control.last_voter_set
        new_voters: VoterSet | None
        if isinstance(request, AddRaftVoterRequest):
            if key.id in voters.voter_ids:
                return ErrorCode.DUPLICATE_VOTER, f"{key.id} is already a voter"
            if not leader.is_replica_caught_up(key.id, key.directory_id, now_ms):
                return ErrorCode.REQUEST_TIMED_OUT, f"{key} is not caught up"
            new_voters = voters.add_voter(VoterNode(key, request.listeners))
            timeout_ms = max(request.timeout_ms, 1)
        elif isinstance(request, RemoveRaftVoterRequest):
            new_voters = voters.remove_voter(key)
            if new_voters is None:
                return ErrorCode.VOTER_NOT_FOUND, f"{key} is not a voter (or the last one)"
            timeout_ms = self.config.controller_quorum_request_timeout_ms
        else:
            if (
                not request.min_supported_version
                <= control.kraft_version
                <= (request.max_supported_version)
            ):
                return ErrorCode.INVALID_REQUEST, "kraft.version not supported by the voter"
            node = VoterNode(
                key, request.listeners, request.min_supported_version, request.max_supported_version
            )
            new_voters = voters.update_voter(node)
            if new_voters is None:
                return ErrorCode.VOTER_NOT_FOUND, f"{key} is not a voter"
            self._append_voters(leader, new_voters, now_ms)
            return ErrorCode.NO_ERROR, None
        assert new_voters is not None
        offset = self._append_voters(leader, new_voters, now_ms)
        leader.pending_change = PendingVoterChange(message, offset, now_ms + timeout_ms)
        self._maybe_complete_voter_change()
        return None

    def _append_voters(self, leader: LeaderState, voters: VoterSet, now_ms: int) -> int:
        info = self.log.append_as_leader(
            [voters.encode()], leader.epoch, ControlRecordType.KRAFT_VOTERS
        )
        self._log_changed()  # the new voter set takes effect now
        if leader.update_local_state(self.log.log_end_offset, now_ms):
            self._on_leader_high_watermark(now_ms)
        else:
            self._complete_parked_fetches(now_ms)
        return info.last_offset

    def _maybe_complete_voter_change(self) -> None:
        """The VotersRecord committed: answer the Add/Remove (Kafka's ``highWatermarkUpdated``)."""
        leader = self._leader_state()
        if leader is None or leader.pending_change is None:
            return
        pending = leader.pending_change
        if leader.high_watermark is not None and leader.high_watermark > pending.offset:
            leader.pending_change = None
            body = pending.message.body
            self._respond(pending.message, self._voter_change_response(body, ErrorCode.NO_ERROR))

    def _expire_voter_change(self, leader: LeaderState, now_ms: int) -> None:
        pending = leader.pending_change
        if pending is not None and now_ms >= pending.deadline_ms:
            self._abort_voter_change(leader, ErrorCode.REQUEST_TIMED_OUT)

    def _abort_voter_change(self, leader: LeaderState, error: ErrorCode) -> None:
        pending = leader.pending_change
        if pending is None:
            return
        leader.pending_change = None
        body = pending.message.body
        self._respond(pending.message, self._voter_change_response(body, error))
