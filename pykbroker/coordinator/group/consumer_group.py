"""A KIP-848 consumer group and its members (Kafka's ``ConsumerGroup`` / ``ConsumerGroupMember``).

The group is the in-memory image of its ``__consumer_offsets`` records: the group epoch
(``ConsumerGroupMetadata``), the subscription metadata (``ConsumerGroupPartitionMetadata``),
the target assignment and its epoch (``ConsumerGroupTargetAssignment*``) and the members
(``ConsumerGroupMemberMetadata`` + ``ConsumerGroupCurrentMemberAssignment``). It changes only
through ``update_member`` / ``remove_member`` / ``update_target_assignment`` & co., which the
record replay calls, so a loaded group equals the live one.

Invariants: every partition is owned (assigned or pending revocation) by at most one member,
and ``partition_epochs`` maps exactly the owned partitions to their owner's member epoch; a
static member's instance id maps to exactly one member id; ``state`` is derived: Empty (no
member), Assigning (group epoch > assignment epoch), Reconciling (a member is not yet at the
target), Stable. Pure: no clock, no I/O.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from typing import NamedTuple

Assignment = Mapping[uuid.UUID, frozenset[int]]
"""Partitions by topic id; treated as immutable (a new mapping for every change)."""

EMPTY_ASSIGNMENT: Assignment = {}

#: Member epochs with a meaning (ConsumerGroupHeartbeat).
JOIN_GROUP_MEMBER_EPOCH = 0
LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2
NO_PARTITION_EPOCH = -1


class MemberState(IntEnum):
    """Kafka's ``MemberState``; the values are what the CurrentMemberAssignment record stores."""

    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127

    @classmethod
    def from_value(cls, value: int) -> MemberState:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class ConsumerGroupState(Enum):
    """Kafka's ``ConsumerGroupState``; values are the display names (ListGroups, describe)."""

    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


class TopicMetadata(NamedTuple):
    """A subscribed topic as the group last saw it (subscription metadata)."""

    topic_id: uuid.UUID
    name: str
    num_partitions: int


class IllegalStateError(AssertionError):
    """A record or a transition that would break the group's invariants."""


def make_assignment(items: Iterable[tuple[uuid.UUID, Iterable[int]]]) -> Assignment:
    """An ``Assignment`` from (topic id, partitions) pairs; empty partition sets are dropped."""
    result: dict[uuid.UUID, frozenset[int]] = {}
    for topic_id, partitions in items:
        merged = result.get(topic_id, frozenset()) | frozenset(partitions)
        if merged:
            result[topic_id] = merged
    return result


def assignment_size(assignment: Assignment) -> int:
    return sum(len(p) for p in assignment.values())


@dataclass(frozen=True, slots=True)
class ConsumerGroupMember:
    """One member; replaced (``dataclasses.replace``), never mutated."""

    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: frozenset[str] = frozenset()
    subscribed_topic_regex: str | None = None
    server_assignor_name: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned_partitions: Assignment = field(default_factory=dict)
    partitions_pending_revocation: Assignment = field(default_factory=dict)

    def is_reconciled_to(self, target_assignment_epoch: int) -> bool:
        return self.state is MemberState.STABLE and self.member_epoch == target_assignment_epoch

    def with_epoch(self, member_epoch: int) -> ConsumerGroupMember:
        """Kafka's ``updateMemberEpoch``: the previous epoch becomes the current one."""
        return replace(self, previous_member_epoch=self.member_epoch, member_epoch=member_epoch)

    def subscription_equals(self, other: ConsumerGroupMember) -> bool:
        return (
            self.subscribed_topic_names == other.subscribed_topic_names
            and self.subscribed_topic_regex == other.subscribed_topic_regex
        )


class ConsumerGroup:
    """A consumer (KIP-848) group."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerGroupMember] = {}
        self.static_members: dict[str, str] = {}
        self.subscription_metadata: dict[str, TopicMetadata] = {}
        self.target_assignment: dict[str, Assignment] = {}
        self.partition_epochs: dict[uuid.UUID, dict[int, int]] = {}
        self.subscribed_topic_names: Counter[str] = Counter()
        self.state = ConsumerGroupState.EMPTY
        #: topics a member's regex resolved to, by member id (not persisted: re-resolved).
        self.resolved_regex_topics: dict[str, frozenset[str]] = {}

    def __repr__(self) -> str:
        return (
            f"ConsumerGroup({self.group_id!r}, {self.state.value}, epoch={self.group_epoch}, "
            f"assignment_epoch={self.assignment_epoch}, members={list(self.members)})"
        )

    # -- lookups -----------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.members

    def member(self, member_id: str) -> ConsumerGroupMember | None:
        return self.members.get(member_id)

    def static_member(self, instance_id: str) -> ConsumerGroupMember | None:
        member_id = self.static_members.get(instance_id)
        return None if member_id is None else self.members.get(member_id)

    def target(self, member_id: str) -> Assignment:
        return self.target_assignment.get(member_id, EMPTY_ASSIGNMENT)

    def current_partition_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.partition_epochs.get(topic_id, {}).get(partition, NO_PARTITION_EPOCH)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        return self.subscribed_topic_names[topic] > 0

    def preferred_server_assignor(self, default: str) -> str:
        """The assignor most members ask for (``server_assignor``), else ``default``.

        Kafka counts the members' choices; ties go to the name seen first here.
        """
        votes = Counter(
            m.server_assignor_name for m in self.members.values() if m.server_assignor_name
        )
        if not votes:
            return default
        return max(votes, key=lambda name: votes[name])

    # -- changes (called by the record replay) -----------------------------------------

    def update_member(self, member: ConsumerGroupMember) -> None:
        old = self.members.get(member.member_id)
        if old is not None:
            self._remove_partition_epochs(old)
            self.subscribed_topic_names.subtract(self._topics_of(old))
            if (
                old.instance_id is not None
                and old.instance_id != member.instance_id
                and self.static_members.get(old.instance_id) == old.member_id
            ):
                del self.static_members[old.instance_id]
        self._add_partition_epochs(member)
        self.members[member.member_id] = member
        self.subscribed_topic_names.update(self._topics_of(member))
        self.subscribed_topic_names += Counter()  # drop zero counts
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id
        self.update_state()

    def remove_member(self, member_id: str) -> None:
        old = self.members.pop(member_id, None)
        if old is None:
            return
        self._remove_partition_epochs(old)
        self.subscribed_topic_names.subtract(self._topics_of(old))
        self.subscribed_topic_names += Counter()
        self.resolved_regex_topics.pop(member_id, None)
        if old.instance_id is not None and self.static_members.get(old.instance_id) == member_id:
            del self.static_members[old.instance_id]
        self.update_state()

    def set_resolved_regex_topics(self, member_id: str, topics: frozenset[str]) -> None:
        member = self.members.get(member_id)
        if member is not None:
            self.subscribed_topic_names.subtract(self._topics_of(member))
        self.resolved_regex_topics[member_id] = topics
        if member is not None:
            self.subscribed_topic_names.update(self._topics_of(member))
        self.subscribed_topic_names += Counter()

    def update_target_assignment(self, member_id: str, assignment: Assignment | None) -> None:
        if assignment is None:
            self.target_assignment.pop(member_id, None)
        else:
            self.target_assignment[member_id] = assignment

    def set_group_epoch(self, epoch: int) -> None:
        self.group_epoch = epoch
        self.update_state()

    def set_assignment_epoch(self, epoch: int) -> None:
        self.assignment_epoch = epoch
        self.update_state()

    def update_state(self) -> None:
        if self.state is ConsumerGroupState.DEAD:
            return
        if not self.members:
            self.state = ConsumerGroupState.EMPTY
        elif self.group_epoch > self.assignment_epoch:
            self.state = ConsumerGroupState.ASSIGNING
        elif any(not m.is_reconciled_to(self.assignment_epoch) for m in self.members.values()):
            self.state = ConsumerGroupState.RECONCILING
        else:
            self.state = ConsumerGroupState.STABLE

    # -- subscriptions -----------------------------------------------------------------

    def member_topics(self, member: ConsumerGroupMember) -> frozenset[str]:
        """The topic names a member subscribes to: its names plus what its regex matched."""
        resolved = self.resolved_regex_topics.get(member.member_id, frozenset())
        return member.subscribed_topic_names | resolved

    def _topics_of(self, member: ConsumerGroupMember) -> Iterable[str]:
        return self.member_topics(member)

    def subscribed_topics_with(
        self, updated: ConsumerGroupMember | None, removed: str | None = None
    ) -> frozenset[str]:
        """The group's subscribed topic names if ``updated`` replaced its old self and the
        member ``removed`` were gone (Kafka's ``computeSubscribedTopicNames``)."""
        names: set[str] = set()
        for member_id, member in self.members.items():
            if member_id == removed or (updated is not None and member_id == updated.member_id):
                continue
            names |= self.member_topics(member)
        if updated is not None:
            names |= self.member_topics(updated)
        return frozenset(names)

    # -- partition ownership -----------------------------------------------------------

    def _add_partition_epochs(self, member: ConsumerGroupMember) -> None:
        for assignment in (member.assigned_partitions, member.partitions_pending_revocation):
            for topic_id, partitions in assignment.items():
                epochs = self.partition_epochs.setdefault(topic_id, {})
                for partition in partitions:
                    previous = epochs.get(partition)
                    if previous is not None:
                        raise IllegalStateError(
                            f"group {self.group_id}: cannot give {topic_id}-{partition} to "
                            f"{member.member_id} at epoch {member.member_epoch}: it is still "
                            f"owned at epoch {previous}"
                        )
                    epochs[partition] = member.member_epoch

    def _remove_partition_epochs(self, member: ConsumerGroupMember) -> None:
        for assignment in (member.assigned_partitions, member.partitions_pending_revocation):
            for topic_id, partitions in assignment.items():
                epochs = self.partition_epochs.get(topic_id)
                if epochs is None:
                    continue
                for partition in partitions:
                    epochs.pop(partition, None)
                if not epochs:
                    del self.partition_epochs[topic_id]
