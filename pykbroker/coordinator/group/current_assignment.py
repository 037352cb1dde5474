"""Reconciling a member towards the target assignment (Kafka's ``CurrentAssignmentBuilder``).

KIP-848's rule, "revocation before assignment": a member first gives up (revokes) the
partitions the target no longer gives it, staying in its epoch (state
UNREVOKED_PARTITIONS) until its heartbeat no longer lists them as owned; only then does it move
to the target epoch and get its new partitions. A new partition is handed out only once no
other member owns it any more (its partition epoch is -1); until then the member waits in
UNRELEASED_PARTITIONS with what it can already have. So a partition never has two owners.

Pure: a function of the member, the target, the group's partition epochs and what the member
reported it owns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from .consumer_group import (
    NO_PARTITION_EPOCH,
    Assignment,
    ConsumerGroupMember,
    MemberState,
)

OwnedPartitions = Sequence[tuple[uuid.UUID, Sequence[int]]]
"""The ``TopicPartitions`` of a heartbeat: what the member owns (None: not sent)."""


class FencedMemberEpochError(Exception):
    """The member must give up all its partitions and rejoin (FENCED_MEMBER_EPOCH)."""


def owns_any(owned: OwnedPartitions | None, partitions: Assignment) -> bool:
    """Whether the member (by its report) still owns any of ``partitions``.

    A member that did not report (``None``) is assumed to still own them (as Kafka).
    """
    if owned is None:
        return True
    for topic_id, owned_partitions in owned:
        pending = partitions.get(topic_id)
        if pending and any(p in pending for p in owned_partitions):
            return True
    return False


def reconcile(
    member: ConsumerGroupMember,
    target_epoch: int,
    target: Assignment,
    partition_epoch: Callable[[uuid.UUID, int], int],
    owned: OwnedPartitions | None,
) -> ConsumerGroupMember:
    """The member's next state (itself if it cannot progress yet)."""
    state = member.state
    if state is MemberState.STABLE:
        if member.member_epoch != target_epoch:
            return _next(member, member.member_epoch, target_epoch, target, partition_epoch, owned)
        return member
    if state is MemberState.UNREVOKED_PARTITIONS:
        if owns_any(owned, member.partitions_pending_revocation):
            return member
        return _next(member, member.member_epoch + 1, target_epoch, target, partition_epoch, owned)
    if state is MemberState.UNRELEASED_PARTITIONS:
        return _next(member, member.member_epoch, target_epoch, target, partition_epoch, owned)
    # UNKNOWN: written by a newer coordinator; start over from nothing.
    if owned is None or owned:
        raise FencedMemberEpochError(
            "The consumer group member is in a unknown state. The member must abandon all "
            "its partitions and rejoin."
        )
    return _next(member, target_epoch, target_epoch, target, partition_epoch, owned)


def _next(
    member: ConsumerGroupMember,
    member_epoch: int,
    target_epoch: int,
    target: Assignment,
    partition_epoch: Callable[[uuid.UUID, int], int],
    owned: OwnedPartitions | None,
) -> ConsumerGroupMember:
    """Kafka's ``computeNextAssignment``."""
    has_unreleased = False
    new_assigned: dict[uuid.UUID, frozenset[int]] = {}
    pending_revocation: dict[uuid.UUID, frozenset[int]] = {}
    pending_assignment: dict[uuid.UUID, frozenset[int]] = {}
    current_assigned = member.assigned_partitions
    for topic_id in set(target) | set(current_assigned):
        wanted = target.get(topic_id, frozenset())
        current = current_assigned.get(topic_id, frozenset())
        kept = current & wanted
        revoke = current - kept
        add = wanted - kept
        revoking_now = member.partitions_pending_revocation.get(topic_id, frozenset())
        releasable = frozenset(
            p
            for p in add
            if partition_epoch(topic_id, p) == NO_PARTITION_EPOCH or p in revoking_now
        )
        if releasable != add:
            has_unreleased = True
        if kept:
            new_assigned[topic_id] = kept
        if revoke:
            pending_revocation[topic_id] = revoke
        if releasable:
            pending_assignment[topic_id] = releasable
    if pending_revocation and owns_any(owned, pending_revocation):
        # Revoke first: stay in this epoch until the member stops reporting them.
        return replace(
            member.with_epoch(member_epoch),
            state=MemberState.UNREVOKED_PARTITIONS,
            assigned_partitions=new_assigned,
            partitions_pending_revocation=pending_revocation,
        )
    if pending_assignment:
        for topic_id, partitions in pending_assignment.items():
            new_assigned[topic_id] = new_assigned.get(topic_id, frozenset()) | partitions
    return replace(
        member.with_epoch(target_epoch),
        state=MemberState.UNRELEASED_PARTITIONS if has_unreleased else MemberState.STABLE,
        assigned_partitions=new_assigned,
        partitions_pending_revocation={},
    )
