"""The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and their timers.

Mirrors the classic-group half of Kafka's ``GroupMetadataManager`` (4.x group coordinator,
which reproduces the old Scala ``GroupCoordinator``): the same states, checks, error codes
and timers (heartbeat/session expiry, the initial rebalance delay ``InitialDelayedJoin``,
the rebalance timeout of the join phase, the pending-sync timeout).

Pure, after h11/etcd: inputs are method calls that carry ``now_ms``; outputs are completed
``ResponseFuture``s (a parked JoinGroup or SyncGroup is answered when the rebalance gets there)
and ``PendingWrite``s (group metadata records the driver appends to ``__consumer_offsets``
before calling their continuation). Timers live in a ``Timer``; the driver calls
``tick(now_ms)`` when ``next_deadline()`` has come. No trio, no clock, no I/O; member ids use
the injected ``new_uuid``.

Invariant: every parked JoinGroup/SyncGroup future is completed exactly once, by the
rebalance, by an error, or when a newer request from the same member replaces it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

from . import records
from .config import GroupCoordinatorConfig
from .group import (
    COMPLETING_REBALANCE,
    DEAD,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    ClassicGroup,
    GroupError,
)
from .member import EMPTY_ASSIGNMENT, ClassicGroupMember
from .requests import (
    JoinGroupRequest,
    SyncGroupRequest,
    append_error_to_response_error,
    join_error,
    sync_error,
)
from .result import PendingWrite, ResponseFuture
from .timer import Timer

UNKNOWN_MEMBER_ID = ""
NO_ERROR = ErrorCode.NO_ERROR


def _join_key(group_id: str) -> tuple[str, str]:
    return ("join", group_id)


def _sync_key(group_id: str) -> tuple[str, str]:
    return ("sync", group_id)


def _heartbeat_key(group_id: str, member_id: str) -> tuple[str, str, str]:
    return ("heartbeat", group_id, member_id)


class GroupMetadataManager:
    """All classic groups of this coordinator, and the rules that move them."""

    def __init__(
        self,
        config: GroupCoordinatorConfig,
        *,
        new_uuid: Callable[[], Any] = uuid.uuid4,
        wall_offset_ms: int = 0,
    ) -> None:
        self.config = config
        self.groups: dict[str, ClassicGroup] = {}
        self.timer: Timer[list[PendingWrite]] = Timer()
        self._new_uuid = new_uuid
        #: wall-clock ms minus ``now_ms``: turns ``now_ms`` into record timestamps.
        self.wall_offset_ms = wall_offset_ms
        self._now = 0

    # -- lookups -----------------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return records.partition_for(group_id, self.config.offsets_topic_num_partitions)

    def group(self, group_id: str) -> ClassicGroup | None:
        return self.groups.get(group_id)

    def get_or_create_group(self, group_id: str, now_ms: int) -> ClassicGroup:
        group = self.groups.get(group_id)
        if group is None:
            group = ClassicGroup(group_id, now_ms=now_ms)
            self.groups[group_id] = group
        return group

    def delete_empty_group(self, group_id: str) -> None:
        """Forget an Empty group (a consumer group takes the id over, or it was deleted)."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        for member_id in list(group.pending_join_members):
            self.timer.cancel(_heartbeat_key(group_id, member_id))
        self.timer.cancel(_join_key(group_id))
        self.timer.cancel(_sync_key(group_id))
        group.transition_to(DEAD, self._now)

    @property
    def now_ms(self) -> int:
        """The ``now_ms`` of the latest input (timers run at their due time)."""
        return self._now

    def next_deadline(self) -> int | None:
        return self.timer.next_deadline()

    def tick(self, now_ms: int) -> list[PendingWrite]:
        """Run every timer due at ``now_ms`` (earliest first)."""
        self._now = now_ms
        writes: list[PendingWrite] = []
        while (action := self.timer.pop_due(now_ms)) is not None:
            writes.extend(action())
        return writes

    # -- JoinGroup ---------------------------------------------------------------------

    def join_group(
        self, request: JoinGroupRequest, future: ResponseFuture, now_ms: int
    ) -> list[PendingWrite]:
        self._now = now_ms
        config = self.config
        if not request.group_id:
            future.complete(join_error(request.member_id, ErrorCode.INVALID_GROUP_ID))
            return []
        if not (
            config.group_min_session_timeout_ms
            <= request.session_timeout_ms
            <= config.group_max_session_timeout_ms
        ):
            future.complete(join_error(request.member_id, ErrorCode.INVALID_SESSION_TIMEOUT))
            return []
        is_unknown_member = request.member_id == UNKNOWN_MEMBER_ID
        group = self.groups.get(request.group_id)
        if group is None:
            if not is_unknown_member:
                future.complete(join_error(request.member_id, ErrorCode.UNKNOWN_MEMBER_ID))
                return []
            group = self.get_or_create_group(request.group_id, now_ms)
        if not self._accept_joining_member(group, request.member_id):
            member = group.members.get(request.member_id)
            if member is not None:
                self._remove_member(group, member, ErrorCode.GROUP_MAX_SIZE_REACHED)
            future.complete(join_error(UNKNOWN_MEMBER_ID, ErrorCode.GROUP_MAX_SIZE_REACHED))
            return self._maybe_complete_join_phase(group)
        if is_unknown_member:
            return self._join_new_member(group, request, future)
        return self._join_existing_member(group, request, future)

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        max_size = self.config.group_max_size
        if group.state in (EMPTY, DEAD):
            return True
        if group.is_in_state(PREPARING_REBALANCE):
            member = group.members.get(member_id)
            return (
                member is not None and member.is_awaiting_join
            ) or group.num_members_awaiting_join < max_size
        return group.has_member(member_id) or group.size() < max_size

    def _join_new_member(
        self, group: ClassicGroup, request: JoinGroupRequest, future: ResponseFuture
    ) -> list[PendingWrite]:
        protocol_names = [name for name, _ in request.protocols]
        if group.is_in_state(DEAD):
            future.complete(join_error(UNKNOWN_MEMBER_ID, ErrorCode.COORDINATOR_NOT_AVAILABLE))
            return []
        if not group.supports_protocols(request.protocol_type, protocol_names):
            future.complete(join_error(UNKNOWN_MEMBER_ID, ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
            return []
        new_member_id = group.generate_member_id(
            request.client_id, request.group_instance_id, self._new_uuid
        )
        if request.group_instance_id is not None:
            old_member_id = group.static_member_id(request.group_instance_id)
            if old_member_id is not None:
                return self._update_static_member_and_rebalance(
                    group, request, old_member_id, new_member_id, future
                )
            return self._add_member_and_rebalance(group, request, new_member_id, future)
        if request.require_known_member_id:
            # KIP-394: hand out the member id and ask for a second JoinGroup carrying it.
            group.add_pending_member(new_member_id)
            self.timer.schedule(
                _heartbeat_key(group.group_id, new_member_id),
                self._now + request.session_timeout_ms,
                partial(self._expire_heartbeat, group.group_id, new_member_id),
            )
            future.complete(join_error(new_member_id, ErrorCode.MEMBER_ID_REQUIRED))
            return []
        return self._add_member_and_rebalance(group, request, new_member_id, future)

    def _join_existing_member(
        self, group: ClassicGroup, request: JoinGroupRequest, future: ResponseFuture
    ) -> list[PendingWrite]:
        member_id = request.member_id
        protocol_names = [name for name, _ in request.protocols]
        if group.is_in_state(DEAD):
            future.complete(join_error(member_id, ErrorCode.COORDINATOR_NOT_AVAILABLE))
            return []
        if not group.supports_protocols(request.protocol_type, protocol_names):
            future.complete(join_error(member_id, ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
            return []
        if group.is_pending_member(member_id):
            if request.group_instance_id is not None:
                # A pending member is always dynamic; a static id here is a client bug.
                future.complete(join_error(member_id, ErrorCode.INVALID_REQUEST))
                return []
            return self._add_member_and_rebalance(group, request, member_id, future)
        try:
            group.validate_member(member_id, request.group_instance_id)
        except GroupError as exc:
            future.complete(join_error(member_id, exc.code))
            return []
        member = group.member(member_id)
        if group.is_in_state(PREPARING_REBALANCE):
            return self._update_member_and_rebalance(group, member, request, future)
        if group.is_in_state(COMPLETING_REBALANCE):
            if member.matches(request.protocols):
                # Same metadata (it probably missed the JoinGroup response): answer again.
                future.complete(self._join_response(group, member_id))
                return []
            return self._update_member_and_rebalance(group, member, request, future)
        if group.is_in_state(STABLE):
            if group.is_leader(member_id) or not member.matches(request.protocols):
                # The leader's JoinGroup always rebalances (it may have seen a metadata change).
                return self._update_member_and_rebalance(group, member, request, future)
            future.complete(self._join_response(group, member_id, include_members=False))
            return []
        # EMPTY with a member cannot happen; let the member reset and rejoin.
        future.complete(join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID))
        return []

    def _join_response(
        self,
        group: ClassicGroup,
        member_id: str,
        *,
        include_members: bool = True,
        leader: str | None = None,
        skip_assignment: bool = False,
    ) -> dict[str, Any]:
        is_leader = group.is_leader(member_id)
        return {
            "error_code": NO_ERROR,
            "generation_id": group.generation_id,
            "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name,
            "leader": (leader if leader is not None else group.leader_id) or "",
            "skip_assignment": skip_assignment,
            "member_id": member_id,
            "members": (
                group.current_members_for_leader() if include_members and is_leader else []
            ),
        }

    def _add_member_and_rebalance(
        self,
        group: ClassicGroup,
        request: JoinGroupRequest,
        member_id: str,
        future: ResponseFuture,
    ) -> list[PendingWrite]:
        member = ClassicGroupMember(
            member_id=member_id,
            group_instance_id=request.group_instance_id,
            client_id=request.client_id,
            client_host=request.client_host,
            rebalance_timeout_ms=request.rebalance_timeout_ms,
            session_timeout_ms=request.session_timeout_ms,
            protocol_type=request.protocol_type,
            supported_protocols=list(request.protocols),
            is_new=True,
        )
        if group.is_in_state(PREPARING_REBALANCE) and group.previous_state is EMPTY:
            # The initial rebalance may be delayed further (InitialDelayedJoin).
            group.new_member_added = True
        group.add(member, future)
        # A new member cannot heartbeat before its join completes: give it the join timeout.
        self.reschedule_heartbeat(group, member, self.config.new_member_join_timeout_ms)
        return self._maybe_prepare_rebalance_or_complete_join(group)

    def _update_member_and_rebalance(
        self,
        group: ClassicGroup,
        member: ClassicGroupMember,
        request: JoinGroupRequest,
        future: ResponseFuture,
    ) -> list[PendingWrite]:
        group.update_member(
            member,
            request.protocols,
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
            future,
        )
        return self._maybe_prepare_rebalance_or_complete_join(group)

    def _update_static_member_and_rebalance(
        self,
        group: ClassicGroup,
        request: JoinGroupRequest,
        old_member_id: str,
        new_member_id: str,
        future: ResponseFuture,
    ) -> list[PendingWrite]:
        """KIP-345: a known static member rejoins with an unknown member id."""
        instance_id = request.group_instance_id
        assert instance_id is not None
        current_leader = group.leader_id
        member = group.replace_static_member(instance_id, old_member_id, new_member_id)
        self.timer.cancel(_heartbeat_key(group.group_id, old_member_id))
        self.reschedule_heartbeat(group, member)
        old_protocols = list(member.supported_protocols)
        old_rebalance_timeout_ms = member.rebalance_timeout_ms
        old_session_timeout_ms = member.session_timeout_ms
        group.update_member(
            member,
            request.protocols,
            request.rebalance_timeout_ms,
            request.session_timeout_ms,
            future,
        )
        if group.is_in_state(STABLE):
            if group.protocol_name != group.select_protocol():
                return self._maybe_prepare_rebalance_or_complete_join(group)
            # The selected protocol is unchanged: no rebalance, just persist the new member id.
            assignment = group.group_assignment()

            def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
                self._now = now_ms
                if error != NO_ERROR:
                    if group.members.get(new_member_id) is member:
                        group.update_member(
                            member,
                            old_protocols,
                            old_rebalance_timeout_ms,
                            old_session_timeout_ms,
                            None,
                        )
                        group.replace_static_member(instance_id, new_member_id, old_member_id)
                        self.reschedule_heartbeat(group, member)
                    response = self._join_response(
                        group, UNKNOWN_MEMBER_ID, include_members=False, leader=current_leader
                    )
                    response["error_code"] = append_error_to_response_error(error)
                    future.complete(response)
                elif not group.is_in_state(STABLE):
                    pass  # a rebalance started meanwhile; it answers the parked JoinGroup
                elif request.supports_skip_assignment:
                    # KIP-814: the static leader learns it leads but skips the assignment.
                    is_leader = group.is_leader(new_member_id)
                    group.complete_join_future(
                        member,
                        self._join_response(group, new_member_id, skip_assignment=is_leader),
                    )
                else:
                    # Before v9: name the old leader so the new member id does not assign.
                    group.complete_join_future(
                        member,
                        self._join_response(
                            group, new_member_id, include_members=False, leader=current_leader
                        ),
                    )
                return []

            return [self._group_metadata_write(group, assignment, on_appended)]
        if group.is_in_state(COMPLETING_REBALANCE):
            # The leader may already assign for the old member id: rebalance again.
            return self._prepare_rebalance(group)
        return self._maybe_complete_join_phase(group)

    # -- rebalance ---------------------------------------------------------------------

    def _maybe_prepare_rebalance_or_complete_join(self, group: ClassicGroup) -> list[PendingWrite]:
        if group.can_rebalance():
            return self._prepare_rebalance(group)
        return self._maybe_complete_join_phase(group)

    def _maybe_complete_join_phase(self, group: ClassicGroup) -> list[PendingWrite]:
        if (
            group.is_in_state(PREPARING_REBALANCE)
            and group.has_all_members_joined()
            and group.previous_state is not EMPTY
        ):
            return self._complete_join(group)
        return []

    def _prepare_rebalance(self, group: ClassicGroup) -> list[PendingWrite]:
        if group.is_in_state(COMPLETING_REBALANCE):
            # Members parked in SyncGroup must rejoin.
            self._reset_and_propagate_assignment_with_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        self.timer.cancel(_sync_key(group.group_id))
        is_initial_rebalance = group.is_in_state(EMPTY)
        if is_initial_rebalance:
            # InitialDelayedJoin: give more members the chance to join the first generation.
            delay_ms = self.config.group_initial_rebalance_delay_ms
            remaining_ms = max(group.rebalance_timeout_ms() - delay_ms, 0)
            self.timer.schedule(
                _join_key(group.group_id),
                self._now + delay_ms,
                partial(self._complete_initial_join, group.group_id, delay_ms, remaining_ms),
            )
        group.transition_to(PREPARING_REBALANCE, self._now)
        if is_initial_rebalance:
            return []
        if group.has_all_members_joined():
            return self._complete_join(group)
        self.timer.schedule(
            _join_key(group.group_id),
            self._now + group.rebalance_timeout_ms(),
            partial(self._complete_join_by_id, group.group_id),
        )
        return []

    def _complete_initial_join(
        self, group_id: str, delay_ms: int, remaining_ms: int
    ) -> list[PendingWrite]:
        group = self.groups.get(group_id)
        if group is None or not group.is_in_state(PREPARING_REBALANCE):
            return []
        if group.new_member_added and remaining_ms != 0:
            group.new_member_added = False
            new_delay_ms = min(self.config.group_initial_rebalance_delay_ms, remaining_ms)
            new_remaining_ms = max(remaining_ms - delay_ms, 0)
            self.timer.schedule(
                _join_key(group_id),
                self._now + new_delay_ms,
                partial(self._complete_initial_join, group_id, new_delay_ms, new_remaining_ms),
            )
            return []
        return self._complete_join(group)

    def _complete_join_by_id(self, group_id: str) -> list[PendingWrite]:
        group = self.groups.get(group_id)
        if group is None or not group.is_in_state(PREPARING_REBALANCE):
            return []
        return self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> list[PendingWrite]:
        """End the join phase: drop dynamic members that did not rejoin, start a generation."""
        self.timer.cancel(_join_key(group.group_id))
        for member in group.not_yet_rejoined_members():
            if not member.is_static:
                self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_in_state(DEAD):
            return []
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that did not rejoin are left: wait for them or their expiry.
            self.timer.schedule(
                _join_key(group.group_id),
                self._now + group.rebalance_timeout_ms(),
                partial(self._complete_join_by_id, group.group_id),
            )
            return []
        group.init_next_generation(self._now)
        if group.is_in_state(EMPTY):
            return [self._group_metadata_write(group, {}, None)]
        for member in group.all_members():
            group.complete_join_future(member, self._join_response(group, member.member_id))
            self.reschedule_heartbeat(group, member)
            member.is_new = False
            group.pending_sync_members.add(member.member_id)
        self.timer.schedule(
            _sync_key(group.group_id),
            self._now + group.rebalance_timeout_ms(),
            partial(self._expire_pending_sync, group.group_id, group.generation_id),
        )
        return []

    def _expire_pending_sync(self, group_id: str, generation_id: int) -> list[PendingWrite]:
        group = self.groups.get(group_id)
        if group is None or generation_id != group.generation_id:
            return []
        if group.state not in (COMPLETING_REBALANCE, STABLE) or not group.pending_sync_members:
            return []
        for member_id in list(group.pending_sync_members):
            member = group.members.get(member_id)
            if member is not None:
                self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
            group.pending_sync_members.discard(member_id)
        return self._prepare_rebalance(group)

    def _remove_member(
        self, group: ClassicGroup, member: ClassicGroupMember, error: ErrorCode
    ) -> None:
        """Remove a member, answering its parked requests (a timed-out JoinGroup is retried)."""
        group.complete_join_future(member, join_error(UNKNOWN_MEMBER_ID, error))
        group.complete_sync_future(member, sync_error(error))
        self.timer.cancel(_heartbeat_key(group.group_id, member.member_id))
        group.remove(member.member_id)

    def _reset_and_propagate_assignment_with_error(
        self, group: ClassicGroup, error: ErrorCode
    ) -> None:
        for member in group.all_members():
            member.assignment = EMPTY_ASSIGNMENT
        self._propagate_assignment(group, error)

    def _set_and_propagate_assignment(
        self, group: ClassicGroup, assignment: dict[str, bytes]
    ) -> None:
        for member in group.all_members():
            member.assignment = assignment.get(member.member_id, EMPTY_ASSIGNMENT)
        self._propagate_assignment(group, NO_ERROR)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode) -> None:
        ok = error == NO_ERROR
        for member in group.all_members():
            response = {
                "error_code": error,
                "protocol_type": group.protocol_type if ok else None,
                "protocol_name": group.protocol_name if ok else None,
                "assignment": member.assignment,
            }
            if group.complete_sync_future(member, response):
                # Restart the session: expiries were ignored while the member waited.
                self.reschedule_heartbeat(group, member)

    # -- heartbeats and expiry ---------------------------------------------------------

    def reschedule_heartbeat(
        self, group: ClassicGroup, member: ClassicGroupMember, timeout_ms: int | None = None
    ) -> None:
        timeout = member.session_timeout_ms if timeout_ms is None else timeout_ms
        self.timer.schedule(
            _heartbeat_key(group.group_id, member.member_id),
            self._now + timeout,
            partial(self._expire_heartbeat, group.group_id, member.member_id),
        )

    def keep_session_alive(self, group: ClassicGroup, member_id: str, now_ms: int) -> None:
        """Restart a member's session timer (an OffsetCommit from the member counts)."""
        self._now = now_ms
        self.reschedule_heartbeat(group, group.member(member_id))

    def _expire_heartbeat(self, group_id: str, member_id: str) -> list[PendingWrite]:
        group = self.groups.get(group_id)
        if group is None or group.is_in_state(DEAD):
            return []
        if group.is_pending_member(member_id):
            group.remove(member_id)
            return self._complete_join_if_all_joined(group)
        member = group.members.get(member_id)
        if member is None or member.has_satisfied_heartbeat():
            return []
        return self._remove_member_and_update_group(group, member)

    def _complete_join_if_all_joined(self, group: ClassicGroup) -> list[PendingWrite]:
        if group.is_in_state(PREPARING_REBALANCE) and group.has_all_members_joined():
            return self._complete_join(group)
        return []

    def _remove_member_and_update_group(
        self, group: ClassicGroup, member: ClassicGroupMember
    ) -> list[PendingWrite]:
        self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        if group.state in (STABLE, COMPLETING_REBALANCE):
            return self._maybe_prepare_rebalance_or_complete_join(group)
        return self._complete_join_if_all_joined(group)

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        now_ms: int,
    ) -> ErrorCode:
        self._now = now_ms
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_in_state(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        try:
            group.validate_member(member_id, group_instance_id)
        except GroupError as exc:
            return exc.code
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.is_in_state(EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        self.reschedule_heartbeat(group, group.member(member_id))
        if group.is_in_state(PREPARING_REBALANCE):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return NO_ERROR

    # -- SyncGroup ---------------------------------------------------------------------

    def sync_group(
        self, request: SyncGroupRequest, future: ResponseFuture, now_ms: int
    ) -> list[PendingWrite]:
        self._now = now_ms
        if not request.group_id:
            future.complete(sync_error(ErrorCode.INVALID_GROUP_ID))
            return []
        group = self.groups.get(request.group_id)
        if group is None:
            future.complete(sync_error(ErrorCode.UNKNOWN_MEMBER_ID))
            return []
        error = self._validate_sync_group(group, request)
        if error is not None:
            future.complete(sync_error(error))
            return []
        member_id = request.member_id
        if group.is_in_state(EMPTY):
            future.complete(sync_error(ErrorCode.UNKNOWN_MEMBER_ID))
            return []
        if group.is_in_state(PREPARING_REBALANCE):
            future.complete(sync_error(ErrorCode.REBALANCE_IN_PROGRESS))
            return []
        member = group.member(member_id)
        if group.is_in_state(STABLE):
            self._remove_pending_sync_member(group, member_id)
            future.complete(
                {
                    "error_code": NO_ERROR,
                    "protocol_type": group.protocol_type,
                    "protocol_name": group.protocol_name,
                    "assignment": member.assignment,
                }
            )
            self.reschedule_heartbeat(group, member)
            return []
        # COMPLETING_REBALANCE: park until the leader's assignment is stored.
        if member.awaiting_sync is not None:
            member.awaiting_sync.complete(sync_error(ErrorCode.REBALANCE_IN_PROGRESS))
        member.awaiting_sync = future
        self._remove_pending_sync_member(group, member_id)
        if not group.is_leader(member_id):
            return []
        assignment = {m_id: bytes(data) for m_id, data in request.assignments}
        for other in group.all_members():
            assignment.setdefault(other.member_id, EMPTY_ASSIGNMENT)
        generation_id = request.generation_id

        def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            self._now = now_ms
            # A member may have (re)joined while the record was written: only finish the
            # rebalance this assignment belongs to.
            if (
                self.groups.get(group.group_id) is not group
                or not group.is_in_state(COMPLETING_REBALANCE)
                or group.generation_id != generation_id
            ):
                return []
            if error != NO_ERROR:
                self._reset_and_propagate_assignment_with_error(
                    group, append_error_to_response_error(error)
                )
                return self._maybe_prepare_rebalance_or_complete_join(group)
            self._set_and_propagate_assignment(group, assignment)
            group.transition_to(STABLE, now_ms)
            return []

        return [self._group_metadata_write(group, assignment, on_appended)]

    def _validate_sync_group(
        self, group: ClassicGroup, request: SyncGroupRequest
    ) -> ErrorCode | None:
        if group.is_in_state(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        try:
            group.validate_member(request.member_id, request.group_instance_id)
        except GroupError as exc:
            return exc.code
        if request.generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if _inconsistent(request.protocol_type, group.protocol_type) or _inconsistent(
            request.protocol_name, group.protocol_name
        ):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return None

    def _remove_pending_sync_member(self, group: ClassicGroup, member_id: str) -> None:
        group.pending_sync_members.discard(member_id)
        if group.state in (DEAD, EMPTY, PREPARING_REBALANCE) or not group.pending_sync_members:
            self.timer.cancel(_sync_key(group.group_id))

    # -- LeaveGroup --------------------------------------------------------------------

    def leave_group(
        self,
        group_id: str,
        members: Sequence[tuple[str, str | None]],
        now_ms: int,
    ) -> tuple[ErrorCode, list[ErrorCode], list[PendingWrite]]:
        """Remove members given as (member_id, group_instance_id).

        Returns the top-level error, one error per member, and the writes to perform.
        """
        self._now = now_ms
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, [], []
        group = self.groups.get(group_id)
        if group is None:
            return NO_ERROR, [ErrorCode.UNKNOWN_MEMBER_ID for _ in members], []
        if group.is_in_state(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, [], []
        errors: list[ErrorCode] = []
        for member_id, instance_id in members:
            if member_id == UNKNOWN_MEMBER_ID:
                # Administrative removal of a static member by its instance id (KIP-345).
                current = group.static_member_id(instance_id)
                if current is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                self._remove_member(group, group.member(current), ErrorCode.UNKNOWN_MEMBER_ID)
            elif group.is_pending_member(member_id):
                group.remove(member_id)
                self.timer.cancel(_heartbeat_key(group_id, member_id))
            else:
                try:
                    group.validate_member(member_id, instance_id)
                except GroupError as exc:
                    errors.append(exc.code)
                    continue
                self._remove_member(group, group.member(member_id), ErrorCode.UNKNOWN_MEMBER_ID)
            errors.append(NO_ERROR)
        writes: list[PendingWrite] = []
        if any(error == NO_ERROR for error in errors):
            if group.state in (STABLE, COMPLETING_REBALANCE):
                writes = self._maybe_prepare_rebalance_or_complete_join(group)
            elif group.is_in_state(PREPARING_REBALANCE):
                writes = self._maybe_complete_join_phase(group)
        return NO_ERROR, errors, writes

    # -- persistence -------------------------------------------------------------------

    def _group_metadata_write(
        self,
        group: ClassicGroup,
        assignment: dict[str, bytes],
        on_appended: Callable[[ErrorCode, int], list[PendingWrite]] | None,
    ) -> PendingWrite:
        key = records.group_metadata_key(group.group_id)
        value = records.group_metadata_value(
            group, assignment, group.state_timestamp_ms + self.wall_offset_ms
        )
        return PendingWrite(self.partition_for(group.group_id), [(key, value)], on_appended)

    def load_group(self, group_id: str, value: dict[str, Any] | None, now_ms: int) -> None:
        """Replay a GroupMetadata record (None: a tombstone) while loading a partition."""
        self.groups.pop(group_id, None)
        if value is None:
            return
        protocol_type = value["protocol_type"] or None
        protocol_name = value["protocol"]
        state_timestamp = value.get("current_state_timestamp", -1)
        group = ClassicGroup(
            group_id,
            state=STABLE if value["members"] else EMPTY,
            # The persisted state time (wall clock) matters for offset expiry of Empty groups.
            now_ms=state_timestamp - self.wall_offset_ms if state_timestamp >= 0 else now_ms,
            generation_id=value["generation"],
            protocol_type=protocol_type,
            protocol_name=protocol_name,
        )
        for m in value["members"]:
            session_timeout_ms = m["session_timeout"]
            rebalance_timeout_ms = m["rebalance_timeout"]
            group.add(
                ClassicGroupMember(
                    member_id=m["member_id"],
                    group_instance_id=m["group_instance_id"],
                    client_id=m["client_id"],
                    client_host=m["client_host"],
                    rebalance_timeout_ms=(
                        rebalance_timeout_ms if rebalance_timeout_ms >= 0 else session_timeout_ms
                    ),
                    session_timeout_ms=session_timeout_ms,
                    protocol_type=protocol_type or "",
                    supported_protocols=[(protocol_name or "", bytes(m["subscription"]))],
                    assignment=bytes(m["assignment"]),
                )
            )
        if group.members:
            group.leader_id = value["leader"] or next(iter(group.members))
        else:
            group.leader_id = None
        self.groups[group_id] = group

    def on_loaded(self, now_ms: int) -> list[PendingWrite]:
        """After loading: start the members' sessions; rebalance groups over the size limit."""
        self._now = now_ms
        writes: list[PendingWrite] = []
        for group in list(self.groups.values()):
            for member in group.all_members():
                self.reschedule_heartbeat(group, member)
            if group.size() > self.config.group_max_size and group.can_rebalance():
                writes.extend(self._prepare_rebalance(group))
        return writes

    def on_unloaded(self) -> None:
        """This coordinator lost the partition (Kafka's ``onUnloaded``): every group is Dead
        and each member's parked JoinGroup or SyncGroup answers NOT_COORDINATOR, so the
        client looks the coordinator up again."""
        for group in self.groups.values():
            if not group.is_in_state(DEAD):
                group.transition_to(DEAD, self._now)
            for member in group.all_members():
                group.complete_join_future(
                    member, join_error(member.member_id, ErrorCode.NOT_COORDINATOR)
                )
                group.complete_sync_future(member, sync_error(ErrorCode.NOT_COORDINATOR))
        self.timer.cancel_all()


def _inconsistent(requested: str | None, current: str | None) -> bool:
    return requested is not None and current is not None and requested != current
