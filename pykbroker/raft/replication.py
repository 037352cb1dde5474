"""ReplicationHandlers: pull replication with Fetch and FetchSnapshot, on both sides.

Part of ``RaftReplica``; mirrors ``KafkaRaftClient.handleFetchRequest`` /
``tryCompleteFetchRequest`` (leader), ``handleFetchResponse`` (follower, observer),
``handleFetchSnapshotRequest/Response`` and the fetch purgatory.

Invariants:

* the leader counts a replica's fetch offset toward the high watermark only when the fetch
  validated against its log (same epoch at that offset) -- Log Matching makes the replica's
  log equal to the leader's below that offset;
* a follower applies the leader's high watermark only after a validated fetch, as
  ``min(high_watermark, log_end_offset)``, and never truncates below its high watermark;
* a follower downloads a snapshot only when the leader no longer has the records it needs,
  and installing it moves the log start (and the high watermark) to the snapshot end offset.
"""

from __future__ import annotations

import logging

from pykbroker.api.protocol.errors import ErrorCode

from .core import ParkedFetch, RaftStateError, ReplicaCore
from .log import LogAppendError, ValidationKind, truncation_offset, validate_offset_and_epoch
from .messages import (
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    RaftMessage,
)
from .quorum_state import FollowerState

logger = logging.getLogger(__name__)


class ReplicationHandlers(ReplicaCore):
    """Fetch / FetchSnapshot handling."""

    # --- leader: Fetch ---------------------------------------------------------------------------

    def _handle_fetch_request(
        self, message: RaftMessage, request: FetchRequest, now_ms: int
    ) -> None:
        if not self._valid_cluster_id(request.cluster_id):
            self._respond(message, self._error_fetch_response(ErrorCode.INCONSISTENT_CLUSTER_ID))
            return
        if (
            request.fetch_offset < 0
            or request.last_fetched_epoch < 0
            or request.last_fetched_epoch > request.current_leader_epoch
        ):
            self._respond(message, self._error_fetch_response(ErrorCode.INVALID_REQUEST))
            return
        response = self._try_complete_fetch(request, now_ms)
        leader = self._leader_state()
        if leader is not None and response.error_code == ErrorCode.NO_ERROR:
            # This voter follows us in our epoch (counted on receipt, not on completion).
            leader.update_check_quorum(request.replica_id, now_ms)
        if (
            response.error_code != ErrorCode.NO_ERROR
            or response.records
            or response.diverging_epoch is not None
            or response.snapshot_id is not None
            or request.max_wait_ms <= 0
        ):
            self._respond(message, response)
            return
        # Nothing to return yet: park until new records, a high watermark move, or max wait.
        self._parked[request.replica_id] = ParkedFetch(
            message, request, now_ms + request.max_wait_ms
        )

    def _try_complete_fetch(self, request: FetchRequest, now_ms: int) -> FetchResponse:
        error = self._validate_leader_only(request.current_leader_epoch)
        leader = self._leader_state()
        if error is not None or leader is None:
            return self._error_fetch_response(error or ErrorCode.NOT_LEADER_OR_FOLLOWER)
        log = self.log
        latest_snapshot = log.latest_snapshot_id
        high_watermark = -1 if leader.high_watermark is None else leader.high_watermark
        if (
            request.fetch_offset == 0
            and latest_snapshot is not None
            and latest_snapshot.offset > 0  # not Kafka's bootstrap checkpoint 0-0
        ):
            return FetchResponse(
                ErrorCode.NO_ERROR,
                self.node_id,
                leader.epoch,
                high_watermark,
                log.log_start_offset,
                snapshot_id=latest_snapshot,
            )
        valid = validate_offset_and_epoch(log, request.fetch_offset, request.last_fetched_epoch)
        if valid.kind is ValidationKind.SNAPSHOT:
            return FetchResponse(
                ErrorCode.NO_ERROR,
                self.node_id,
                leader.epoch,
                high_watermark,
                log.log_start_offset,
                snapshot_id=valid.offset_and_epoch,
            )
        if valid.kind is ValidationKind.DIVERGING:
            return FetchResponse(
                ErrorCode.NO_ERROR,
                self.node_id,
                leader.epoch,
                high_watermark,
                log.log_start_offset,
                diverging_epoch=valid.offset_and_epoch,
            )
        max_bytes = min(request.max_bytes, self.config.fetch_max_bytes)
        records = log.read(request.fetch_offset, max_bytes)
        if leader.update_replica_state(
            request.replica_id,
            request.fetch_offset,
            log.log_end_offset,
            now_ms,
            request.replica_directory_id,
        ):
            self._on_leader_high_watermark(now_ms)
            high_watermark = -1 if leader.high_watermark is None else leader.high_watermark
        return FetchResponse(
            ErrorCode.NO_ERROR,
            self.node_id,
            leader.epoch,
            high_watermark,
            log.log_start_offset,
            records,
        )

    def _on_leader_high_watermark(self, now_ms: int) -> None:
        leader = self._leader_state()
        assert leader is not None
        assert leader.high_watermark is not None
        self._update_high_watermark(leader.high_watermark)
        self._maybe_complete_voter_change()
        self._complete_parked_fetches(now_ms)

    def _complete_parked_fetches(self, now_ms: int, expired_only: bool = False) -> None:
        """Answer parked fetches (Kafka's purgatory ``completeAll`` / expiry)."""
        if not self._parked:
            return
        due = [
            replica
            for replica, fetch in self._parked.items()
            if not expired_only or fetch.deadline_ms <= now_ms
        ]
        fetches = [self._parked.pop(replica) for replica in due]
        for fetch in fetches:
            self._respond(fetch.message, self._try_complete_fetch(fetch.request, now_ms))

    # --- follower: Fetch -------------------------------------------------------------------------

    def _fetch_request(self) -> FetchRequest:
        return FetchRequest(
            cluster_id=self.cluster_id,
            replica_id=self.node_id,
            fetch_offset=self.log.log_end_offset,
            last_fetched_epoch=self.log.last_fetched_epoch,
            current_leader_epoch=self.quorum.epoch,
            max_wait_ms=self.config.fetch_max_wait_ms,
            max_bytes=self.config.fetch_max_bytes,
            log_start_offset=self.log.log_start_offset,
            replica_directory_id=self.directory_id,
        )

    def _handle_fetch_response(self, response: FetchResponse, now_ms: int) -> bool:
        if self._handle_common_response(
            response.error_code, response.leader_id, response.leader_epoch, now_ms
        ):
            return response.error_code == ErrorCode.NO_ERROR
        state = self.quorum.state
        if not isinstance(state, FollowerState) or response.leader_id != state.leader_id:
            return True
        if response.diverging_epoch is not None:
            diverging = response.diverging_epoch
            offset = truncation_offset(self.log, diverging)
            if diverging.offset < self.high_watermark or offset < self.high_watermark:
                raise RaftStateError(
                    f"node {self.node_id}: leader asked to truncate to {diverging}, below the "
                    f"high watermark {self.high_watermark}"
                )
            if offset < self.log.log_end_offset:
                self.log.truncate_to(offset)
                self._truncated(offset)
        elif response.snapshot_id is not None:
            if response.snapshot_id.offset < self.high_watermark:
                raise RaftStateError(
                    f"node {self.node_id}: snapshot {response.snapshot_id} below the high "
                    f"watermark {self.high_watermark}"
                )
            state.fetching_snapshot = (response.snapshot_id, bytearray())
        else:
            if response.records:
                try:
                    self.log.append_as_follower(response.records, state.epoch)
                except LogAppendError as exc:
                    # Bad bytes from the network never take the node down: count, refetch.
                    self.append_errors += 1
                    logger.warning("node %d: cannot append fetched records: %s", self.node_id, exc)
                    return False
                self._log_changed()
            if response.high_watermark >= 0:
                self._update_high_watermark(min(response.high_watermark, self.log.log_end_offset))
        self._successful_fetch(state, now_ms)
        return True

    def _successful_fetch(self, state: FollowerState, now_ms: int) -> None:
        state.has_fetched_from_leader = True
        state.fetch_from_any_voter = False
        state.fetch_deadline_ms = now_ms + self.config.controller_quorum_fetch_timeout_ms

    # --- leader: FetchSnapshot -------------------------------------------------------------------

    def _handle_fetch_snapshot_request(
        self, message: RaftMessage, request: FetchSnapshotRequest, now_ms: int
    ) -> None:
        self._respond(message, self._fetch_snapshot(request, now_ms))

    def _fetch_snapshot(self, request: FetchSnapshotRequest, now_ms: int) -> FetchSnapshotResponse:
        def error(code: ErrorCode) -> FetchSnapshotResponse:
            return FetchSnapshotResponse(code, self.quorum.leader_id, self.quorum.epoch)

        if not self._valid_cluster_id(request.cluster_id):
            return error(ErrorCode.INCONSISTENT_CLUSTER_ID)
        leader_error = self._validate_leader_only(request.current_leader_epoch)
        leader = self._leader_state()
        if leader_error is not None or leader is None:
            return error(leader_error or ErrorCode.NOT_LEADER_OR_FOLLOWER)
        leader.update_check_quorum(request.replica_id, now_ms)
        data = self.log.read_snapshot(request.snapshot_id)
        if data is None:
            return error(ErrorCode.SNAPSHOT_NOT_FOUND)
        position = request.position
        if position < 0 or (position >= len(data) and not position == len(data) == 0):
            return error(ErrorCode.POSITION_OUT_OF_RANGE)
        max_bytes = max(1, min(request.max_bytes, self.config.fetch_snapshot_max_bytes))
        return FetchSnapshotResponse(
            ErrorCode.NO_ERROR,
            self.node_id,
            leader.epoch,
            request.snapshot_id,
            len(data),
            position,
            bytes(data[position : position + max_bytes]),
        )

    # --- follower: FetchSnapshot -----------------------------------------------------------------

    def _fetch_snapshot_request(self, state: FollowerState) -> FetchSnapshotRequest:
        assert state.fetching_snapshot is not None
        snapshot_id, buffer = state.fetching_snapshot
        return FetchSnapshotRequest(
            cluster_id=self.cluster_id,
            replica_id=self.node_id,
            current_leader_epoch=state.epoch,
            snapshot_id=snapshot_id,
            position=len(buffer),
            max_bytes=self.config.fetch_snapshot_max_bytes,
        )

    def _handle_fetch_snapshot_response(self, response: FetchSnapshotResponse, now_ms: int) -> bool:
        if self._handle_common_response(
            response.error_code, response.leader_id, response.leader_epoch, now_ms
        ):
            if response.error_code in (
                ErrorCode.SNAPSHOT_NOT_FOUND,
                ErrorCode.POSITION_OUT_OF_RANGE,
            ):
                self._abandon_snapshot()
            return response.error_code == ErrorCode.NO_ERROR
        state = self.quorum.state
        if not isinstance(state, FollowerState) or state.fetching_snapshot is None:
            return True
        snapshot_id, buffer = state.fetching_snapshot
        if response.snapshot_id != snapshot_id or response.position != len(buffer):
            self._abandon_snapshot()
            return False
        buffer.extend(response.unaligned_records)
        self._successful_fetch(state, now_ms)
        if len(buffer) < response.size:
            return True
        state.fetching_snapshot = None
        data = bytes(buffer)
        self.log.install_snapshot(snapshot_id, data)
        self.control.load_snapshot(snapshot_id, data)
        self._truncated(snapshot_id.offset)
        self._out.snapshot_installed = snapshot_id
        if snapshot_id.offset > self.high_watermark:
            self._update_high_watermark(snapshot_id.offset)
        return True

    def _abandon_snapshot(self) -> None:
        """The leader no longer has the snapshot we were downloading: Fetch again to learn
        the new one."""
        state = self.quorum.state
        if isinstance(state, FollowerState):
            state.fetching_snapshot = None
