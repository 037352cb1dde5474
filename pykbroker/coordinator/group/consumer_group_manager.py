"""KIP-848 consumer groups: ConsumerGroupHeartbeat and its timers.

Mirrors the consumer-group half of Kafka's ``GroupMetadataManager``. A heartbeat (1) creates
or updates the member and, when a subscription changed (or the subscribed topics changed in
the metadata image), bumps the group epoch; (2) when the group epoch is ahead of the target
assignment epoch, runs the group's server-side assignor (``uniform`` or ``range``) and stores
the new target assignment; (3) reconciles the member towards the target, revocation before
assignment (``current_assignment.reconcile``). Members are fenced when their session
(``group.consumer.session.timeout.ms``) expires or when they do not revoke within their
rebalance timeout; static members (instance id) may leave with epoch -2 and be replaced by a
new member id with the same instance id, keeping their partitions.

Every state change is a record (``consumer_group_records``): the manager replays each record
into the in-memory group the moment it produces it, and the same ``replay`` loads the records
at start-up, so the live state is always what the log says. A request is fully validated
before its first record, so a rejected request changes nothing. The response is released once
the driver has appended the records.

Pure: time comes in as ``now_ms``, the topics as an immutable ``MetadataImage``, member ids
from the injected ``new_uuid``. The ``Timer`` is shared with the classic groups.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.image import MetadataImage

from . import consumer_group_records as cgr
from . import records
from .assignors import GroupSpec, MemberSpec, assign
from .config import GroupCoordinatorConfig
from .consumer_group import (
    JOIN_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    Assignment,
    ConsumerGroup,
    ConsumerGroupMember,
    IllegalStateError,
    MemberState,
    TopicMetadata,
)
from .consumer_group_requests import (
    ApiError,
    ConsumerGroupHeartbeatRequest,
    check_member_epoch,
    heartbeat_error,
    response_assignment,
    validate_heartbeat,
)
from .current_assignment import reconcile
from .group import DEAD, EMPTY
from .group_metadata_manager import GroupMetadataManager
from .requests import append_error_to_response_error
from .result import PendingWrite, Record, ResponseFuture

log = logging.getLogger(__name__)

NO_ERROR = ErrorCode.NO_ERROR
#: Internal topics a regular expression never matches.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})


def _session_key(group_id: str, member_id: str) -> tuple[str, str, str]:
    return ("consumer-session", group_id, member_id)


def _rebalance_key(group_id: str, member_id: str) -> tuple[str, str, str]:
    return ("consumer-rebalance", group_id, member_id)


class ConsumerGroupManager:
    """All consumer (KIP-848) groups of this coordinator."""

    def __init__(
        self,
        config: GroupCoordinatorConfig,
        classic: GroupMetadataManager,
        *,
        new_uuid: Callable[[], Any] = uuid.uuid4,
    ) -> None:
        self.config = config
        self.classic = classic
        self.timer = classic.timer
        self.groups: dict[str, ConsumerGroup] = {}
        self._new_uuid = new_uuid
        self._image: MetadataImage | None = None
        self._regex_cache: dict[str, tuple[MetadataImage, frozenset[str]]] = {}

    def group(self, group_id: str) -> ConsumerGroup | None:
        return self.groups.get(group_id)

    def update_image(self, image: MetadataImage) -> None:
        """The newest metadata image (topics, partition counts) the driver has seen."""
        self._image = image

    # -- ConsumerGroupHeartbeat --------------------------------------------------------

    def heartbeat(
        self,
        request: ConsumerGroupHeartbeatRequest,
        future: ResponseFuture,
        now_ms: int,
        image: MetadataImage | None = None,
    ) -> list[PendingWrite]:
        """Handle one heartbeat; ``future`` gets the response once its records are written."""
        if image is not None:
            self._image = image
        out: list[Record] = []
        try:
            validate_heartbeat(request, self.config.group_consumer_assignors)
            if request.member_epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
                response = self._leave(request, out)
            else:
                response = self._heartbeat(request, now_ms, out)
        except ApiError as exc:
            assert not out, "records were produced before a request was rejected"
            future.complete(heartbeat_error(exc.code, exc.message))
            return []
        return self._respond(request.group_id, response, out, future)

    def _respond(
        self, group_id: str, response: dict[str, Any], out: list[Record], future: ResponseFuture
    ) -> list[PendingWrite]:
        if not out:
            future.complete(response)
            return []

        def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if error != NO_ERROR:
                future.complete(heartbeat_error(append_error_to_response_error(error)))
            else:
                future.complete(response)
            return []

        return [PendingWrite(self.classic.partition_for(group_id), out, on_appended)]

    def _group_for_heartbeat(
        self, group_id: str, create: bool
    ) -> tuple[ConsumerGroup | None, bool]:
        """The group, or (None, replaces_classic) when it is to be created."""
        group = self.groups.get(group_id)
        if group is not None:
            return group, False
        classic = self.classic.group(group_id)
        if classic is not None and not classic.is_in_state(DEAD):
            if create and classic.is_in_state(EMPTY):
                # An empty classic group (perhaps only offsets) becomes a consumer group.
                return None, True
            raise ApiError(
                ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group."
            )
        if not create:
            raise ApiError(ErrorCode.UNKNOWN_MEMBER_ID, f"Consumer group {group_id} not found.")
        return None, False

    def _heartbeat(
        self, request: ConsumerGroupHeartbeatRequest, now_ms: int, out: list[Record]
    ) -> dict[str, Any]:
        group_id = request.group_id
        epoch = request.member_epoch
        owned = request.topic_partitions
        # -- validation: nothing changes before this section is through ----------------
        group, replaces_classic = self._group_for_heartbeat(
            group_id, epoch == JOIN_GROUP_MEMBER_EPOCH
        )
        member_id = request.member_id or str(self._new_uuid())  # v0: the coordinator names it
        members = group.members if group is not None else {}
        if member_id not in members and len(members) >= self.config.group_consumer_max_size:
            raise ApiError(
                ErrorCode.GROUP_MAX_SIZE_REACHED,
                f"The consumer group has reached its maximum capacity of "
                f"{self.config.group_consumer_max_size} members.",
            )
        replaced: ConsumerGroupMember | None = None
        instance_id = request.instance_id
        if instance_id is None:
            member = members.get(member_id)
            if member is None:
                if epoch != JOIN_GROUP_MEMBER_EPOCH:
                    raise ApiError(
                        ErrorCode.UNKNOWN_MEMBER_ID,
                        f"Member {member_id} is not a member of group {group_id}.",
                    )
            else:
                if epoch != JOIN_GROUP_MEMBER_EPOCH:
                    check_member_epoch(member, epoch, owned)
        else:
            static = group.static_member(instance_id) if group is not None else None
            member = members.get(member_id)
            if epoch == JOIN_GROUP_MEMBER_EPOCH:
                if static is not None and static.member_id != member_id:
                    if static.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH:
                        raise ApiError(
                            ErrorCode.UNRELEASED_INSTANCE_ID,
                            f"Static member with unknown member id and instance id {instance_id} "
                            f"cannot join the group because the instance id is owned by "
                            f"{static.member_id} member.",
                        )
                    replaced = static
            else:
                if static is None:
                    raise ApiError(
                        ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {instance_id} is unknown."
                    )
                if static.member_id != member_id:
                    raise ApiError(
                        ErrorCode.FENCED_INSTANCE_ID,
                        f"Static member {member_id} with instance id {instance_id} was fenced by "
                        f"member {static.member_id}.",
                    )
                member = static
                check_member_epoch(member, epoch, owned)
        if member is not None and member.state is MemberState.UNKNOWN and (owned is None or owned):
            raise ApiError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                "The consumer group member is in a unknown state. The member must abandon all "
                "its partitions and rejoin.",
            )
        # -- changes -------------------------------------------------------------------
        if group is None:
            if replaces_classic:
                self.classic.delete_empty_group(group_id)
                out.append((records.group_metadata_key(group_id), None))
            group = ConsumerGroup(group_id)
            self.groups[group_id] = group
        base_assignment: Assignment | None = None
        if replaced is not None:
            old_target = group.target(replaced.member_id)
            base_assignment = replaced.assigned_partitions
            self._remove_member(group, replaced, out)
            self._emit(
                out, cgr.ConsumerGroupTargetAssignmentMember(group_id, member_id, old_target)
            )
            member = None
        previous = member if member is not None else ConsumerGroupMember(member_id)
        updated = self._updated_member(previous, request)
        bump = group.group_epoch == 0
        if updated != previous or member is None:
            self._emit(
                out,
                cgr.ConsumerGroupMemberSubscription(group_id, member_id, _subscription(updated)),
            )
            bump |= not updated.subscription_equals(previous) or (
                updated.server_assignor_name != previous.server_assignor_name
            )
        bump |= self._refresh_regexes(group)
        metadata = self._subscription_metadata(group)
        if metadata != group.subscription_metadata:
            self._emit(out, cgr.ConsumerGroupSubscriptionMetadata(group_id, metadata))
            bump = True
        if bump:
            self._emit(out, cgr.ConsumerGroupEpoch(group_id, group.group_epoch + 1))
        if group.group_epoch > group.assignment_epoch:
            self._update_target_assignment(group, out)
        current = group.members[member_id]
        start = (
            current
            if base_assignment is None
            else replace(current, assigned_partitions=base_assignment)
        )
        reconciled = reconcile(
            start,
            group.assignment_epoch,
            group.target(member_id),
            group.current_partition_epoch,
            owned,
        )
        if reconciled != current:
            self._emit(out, _current_assignment_record(group_id, reconciled))
            if reconciled.state is MemberState.UNREVOKED_PARTITIONS:
                self._schedule_rebalance_timeout(group_id, reconciled, now_ms)
            else:
                self.timer.cancel(_rebalance_key(group_id, member_id))
        self._schedule_session_timeout(group_id, member_id, now_ms)
        response: dict[str, Any] = {
            "error_code": NO_ERROR,
            "error_message": None,
            "member_id": member_id,
            "member_epoch": reconciled.member_epoch,
            "heartbeat_interval_ms": self.config.group_consumer_heartbeat_interval_ms,
            "assignment": None,
        }
        full_request = epoch == JOIN_GROUP_MEMBER_EPOCH or (
            request.rebalance_timeout_ms != -1
            and (
                request.subscribed_topic_names is not None
                or request.subscribed_topic_regex is not None
            )
            and owned is not None
        )
        if full_request or reconciled.assigned_partitions != previous.assigned_partitions:
            response["assignment"] = response_assignment(reconciled.assigned_partitions)
        return response

    def _updated_member(
        self, member: ConsumerGroupMember, request: ConsumerGroupHeartbeatRequest
    ) -> ConsumerGroupMember:
        changes: dict[str, Any] = {
            "client_id": request.client_id,
            "client_host": request.client_host,
        }
        if request.instance_id is not None:
            changes["instance_id"] = request.instance_id
        if request.rack_id is not None:
            changes["rack_id"] = request.rack_id
        if request.rebalance_timeout_ms != -1:
            changes["rebalance_timeout_ms"] = request.rebalance_timeout_ms
        if request.server_assignor is not None:
            changes["server_assignor_name"] = request.server_assignor
        if request.subscribed_topic_names is not None:
            changes["subscribed_topic_names"] = frozenset(request.subscribed_topic_names)
        if request.subscribed_topic_regex is not None:
            changes["subscribed_topic_regex"] = request.subscribed_topic_regex or None
        return replace(member, **changes)

    def _leave(self, request: ConsumerGroupHeartbeatRequest, out: list[Record]) -> dict[str, Any]:
        group_id, member_id = request.group_id, request.member_id
        group = self.groups.get(group_id)
        if group is None:
            classic = self.classic.group(group_id)
            if classic is not None and not classic.is_in_state(DEAD):
                raise ApiError(
                    ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group."
                )
            raise ApiError(ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group {group_id} not found.")
        response = {
            "error_code": NO_ERROR,
            "error_message": None,
            "member_id": member_id,
            "member_epoch": request.member_epoch,
            "heartbeat_interval_ms": 0,
            "assignment": None,
        }
        if request.instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise ApiError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"Member {member_id} is not a member of group {group_id}.",
                )
            log.info("[GroupId %s] Member %s left the consumer group.", group_id, member_id)
            self._fence(group, member, out)
            return response
        static = group.static_member(request.instance_id)
        if static is None:
            raise ApiError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {request.instance_id} is unknown."
            )
        if static.member_id != member_id:
            raise ApiError(
                ErrorCode.FENCED_INSTANCE_ID,
                f"Static member {member_id} with instance id {request.instance_id} was fenced "
                f"by member {static.member_id}.",
            )
        if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            # A temporary leave: the partitions stay reserved until the session expires.
            leaving = replace(
                static,
                member_epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                partitions_pending_revocation={},
            )
            self._emit(out, _current_assignment_record(group_id, leaving))
        else:
            self._fence(group, static, out)
        return response

    # -- target assignment -------------------------------------------------------------

    def _update_target_assignment(self, group: ConsumerGroup, out: list[Record]) -> None:
        assignor = group.preferred_server_assignor(self.config.default_consumer_assignor)
        topic_ids = {name: t.topic_id for name, t in group.subscription_metadata.items()}
        spec = GroupSpec(
            members={
                member_id: MemberSpec(
                    subscribed_topic_ids=frozenset(
                        topic_ids[name] for name in group.member_topics(m) if name in topic_ids
                    ),
                    current=group.target(member_id),
                    instance_id=m.instance_id,
                    rack_id=m.rack_id,
                )
                for member_id, m in group.members.items()
            },
            topics={t.topic_id: t.num_partitions for t in group.subscription_metadata.values()},
        )
        new_target = assign(assignor, spec)
        for member_id in sorted(new_target):
            if new_target[member_id] != group.target(member_id):
                self._emit(
                    out,
                    cgr.ConsumerGroupTargetAssignmentMember(
                        group.group_id, member_id, new_target[member_id]
                    ),
                )
        self._emit(out, cgr.ConsumerGroupTargetAssignmentEpoch(group.group_id, group.group_epoch))

    # -- subscriptions -----------------------------------------------------------------

    def _resolve_regex(self, regex: str) -> frozenset[str] | None:
        image = self._image
        if image is None:
            return None
        cached = self._regex_cache.get(regex)
        if cached is not None and cached[0] is image:
            return cached[1]
        try:
            pattern = re.compile(regex)
        except re.error:
            return frozenset()
        matched = frozenset(
            name
            for name in image.topics
            if name not in INTERNAL_TOPICS and pattern.fullmatch(name) is not None
        )
        self._regex_cache[regex] = (image, matched)
        return matched

    def _refresh_regexes(self, group: ConsumerGroup) -> bool:
        """Re-resolve the members' regular expressions; True if any result changed."""
        changed = False
        for member in group.members.values():
            regex = member.subscribed_topic_regex
            if not regex:
                if member.member_id in group.resolved_regex_topics:
                    group.set_resolved_regex_topics(member.member_id, frozenset())
                    del group.resolved_regex_topics[member.member_id]
                    changed = True
                continue
            resolved = self._resolve_regex(regex)
            if resolved is None:
                continue
            if group.resolved_regex_topics.get(member.member_id) != resolved:
                group.set_resolved_regex_topics(member.member_id, resolved)
                changed = True
        return changed

    def _subscription_metadata(self, group: ConsumerGroup) -> dict[str, TopicMetadata]:
        """The subscribed topics that exist, as the image has them (the old view if none)."""
        names = group.subscribed_topics_with(None)
        image = self._image
        result: dict[str, TopicMetadata] = {}
        for name in sorted(names):
            if image is None:
                known = group.subscription_metadata.get(name)
                if known is not None:
                    result[name] = known
                continue
            topic = image.topics.get(name)
            if topic is not None:
                result[name] = TopicMetadata(topic.topic_id, name, len(topic.partitions))
        return result

    # -- removal and timers ------------------------------------------------------------

    def _remove_member(
        self, group: ConsumerGroup, member: ConsumerGroupMember, out: list[Record]
    ) -> None:
        group_id, member_id = group.group_id, member.member_id
        self._emit(out, cgr.ConsumerGroupCurrentAssignment(group_id, member_id, None))
        self._emit(out, cgr.ConsumerGroupTargetAssignmentMember(group_id, member_id, None))
        self._emit(out, cgr.ConsumerGroupMemberSubscription(group_id, member_id, None))
        self.timer.cancel(_session_key(group_id, member_id))
        self.timer.cancel(_rebalance_key(group_id, member_id))

    def _fence(self, group: ConsumerGroup, member: ConsumerGroupMember, out: list[Record]) -> None:
        """Kafka's ``consumerGroupFenceMember``: remove the member, bump the group epoch."""
        self._remove_member(group, member, out)
        metadata = self._subscription_metadata(group)
        if metadata != group.subscription_metadata:
            self._emit(out, cgr.ConsumerGroupSubscriptionMetadata(group.group_id, metadata))
        self._emit(out, cgr.ConsumerGroupEpoch(group.group_id, group.group_epoch + 1))

    def _schedule_session_timeout(self, group_id: str, member_id: str, now_ms: int) -> None:
        self.timer.schedule(
            _session_key(group_id, member_id),
            now_ms + self.config.group_consumer_session_timeout_ms,
            partial(self._expire, group_id, member_id, None),
        )

    def _schedule_rebalance_timeout(
        self, group_id: str, member: ConsumerGroupMember, now_ms: int
    ) -> None:
        timeout = member.rebalance_timeout_ms
        if timeout < 0:
            timeout = self.config.group_consumer_session_timeout_ms
        self.timer.schedule(
            _rebalance_key(group_id, member.member_id),
            now_ms + timeout,
            partial(self._expire, group_id, member.member_id, member.member_epoch),
        )

    def _expire(self, group_id: str, member_id: str, epoch: int | None) -> list[PendingWrite]:
        """A session (``epoch`` None) or rebalance timeout (still at ``epoch``) ran out."""
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        if group is None or member is None:
            return []
        if epoch is not None and member.member_epoch != epoch:
            return []
        if epoch is None:
            log.info("[GroupId %s] Member %s fenced: its session expired.", group_id, member_id)
        else:
            log.info(
                "[GroupId %s] Member %s fenced: it did not revoke its partitions within %d ms.",
                group_id,
                member_id,
                member.rebalance_timeout_ms,
            )
        out: list[Record] = []
        self._fence(group, member, out)
        return [PendingWrite(self.classic.partition_for(group_id), out, None)]

    # -- records -----------------------------------------------------------------------

    def _emit(self, out: list[Record], record: cgr.ConsumerGroupRecord) -> None:
        self.replay(record)
        out.append(record.encode())

    def replay(self, record: cgr.ConsumerGroupRecord) -> None:
        """Apply one record to the in-memory groups (live, and when loading)."""
        deleted = cgr.replay(self.groups, record)
        if deleted is not None:
            for member_id in deleted.members:
                self.timer.cancel(_session_key(deleted.group_id, member_id))
                self.timer.cancel(_rebalance_key(deleted.group_id, member_id))

    def load(self, record: cgr.ConsumerGroupRecord) -> None:
        """Replay a loaded record; a record that breaks an invariant is logged and skipped."""
        try:
            self.replay(record)
        except IllegalStateError as exc:
            log.warning("__consumer_offsets: skipping %s: %s", type(record).__name__, exc)

    def on_loaded(self, now_ms: int) -> None:
        """After loading: start every member's session (and pending rebalance) timer."""
        for group in self.groups.values():
            for member in group.members.values():
                self._schedule_session_timeout(group.group_id, member.member_id, now_ms)
                if member.state is MemberState.UNREVOKED_PARTITIONS:
                    self._schedule_rebalance_timeout(group.group_id, member, now_ms)

    def tombstones(self, group_id: str, out: list[Record]) -> None:
        """Delete a group: Kafka's ``createGroupTombstoneRecords``, replayed at once."""
        group = self.groups.get(group_id)
        if group is None:
            return
        members = list(group.members)
        for member_id in members:
            self._emit(out, cgr.ConsumerGroupCurrentAssignment(group_id, member_id, None))
        for member_id in members:
            self._emit(out, cgr.ConsumerGroupTargetAssignmentMember(group_id, member_id, None))
        self._emit(out, cgr.ConsumerGroupTargetAssignmentEpoch(group_id, None))
        for member_id in members:
            self._emit(out, cgr.ConsumerGroupMemberSubscription(group_id, member_id, None))
        self._emit(out, cgr.ConsumerGroupSubscriptionMetadata(group_id, None))
        self._emit(out, cgr.ConsumerGroupEpoch(group_id, None))

    # -- offsets and admin -------------------------------------------------------------

    def validate_offset_commit(
        self,
        group: ConsumerGroup,
        member_id: str,
        member_epoch: int,
        api_version: int,
        *,
        group_instance_id: str | None = None,
        is_transactional: bool = False,
    ) -> ErrorCode | None:
        """Kafka's ``ConsumerGroup.validateOffsetCommit``: a transactional commit
        (TxnOffsetCommit) without member id, epoch and instance id is accepted, and is not
        bound to OffsetCommit v9."""
        if member_epoch < 0 and group.is_empty():
            return None  # the admin client, or a consumer without group management
        if is_transactional and member_epoch < 0 and not member_id and group_instance_id is None:
            return None
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if not is_transactional and api_version < 9:
            # OffsetCommit v9+ must be used by members of the consumer protocol.
            return ErrorCode.UNSUPPORTED_VERSION
        if member_epoch != member.member_epoch:
            return ErrorCode.STALE_MEMBER_EPOCH
        return None

    def validate_offset_fetch(
        self, group: ConsumerGroup, member_id: str | None, member_epoch: int
    ) -> ErrorCode | None:
        """Kafka's ``ConsumerGroup.validateOffsetFetch``."""
        if member_epoch < 0 and member_id is None:
            return None
        member = group.members.get(member_id or "")
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member_epoch != member.member_epoch:
            return ErrorCode.STALE_MEMBER_EPOCH
        return None


def _subscription(member: ConsumerGroupMember) -> cgr.MemberSubscription:
    return cgr.MemberSubscription(
        instance_id=member.instance_id,
        rack_id=member.rack_id,
        client_id=member.client_id,
        client_host=member.client_host,
        subscribed_topic_names=tuple(sorted(member.subscribed_topic_names)),
        subscribed_topic_regex=member.subscribed_topic_regex,
        rebalance_timeout_ms=member.rebalance_timeout_ms,
        server_assignor=member.server_assignor_name,
    )


def _current_assignment_record(
    group_id: str, member: ConsumerGroupMember
) -> cgr.ConsumerGroupCurrentAssignment:
    return cgr.ConsumerGroupCurrentAssignment(
        group_id,
        member.member_id,
        cgr.CurrentAssignment(
            member_epoch=member.member_epoch,
            previous_member_epoch=member.previous_member_epoch,
            state=member.state,
            assigned_partitions=member.assigned_partitions,
            partitions_pending_revocation=member.partitions_pending_revocation,
        ),
    )
