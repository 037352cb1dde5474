"""Server-side assignors for consumer groups (Kafka's ``UniformAssignor``, ``RangeAssignor``).

An assignor maps a ``GroupSpec`` (each member's subscribed topic ids and its current target
assignment) and the partition counts of the subscribed topics to a new target assignment.
Both are sticky: a member keeps the partitions it has in the current target as long as that
stays within balance, so a rebalance moves as few partitions as possible (each moved
partition costs a revocation round trip).

* ``uniform`` (the default): every partition of every subscribed topic goes to a member
  subscribed to it, and member loads differ by at most one when the subscriptions are the
  same (homogeneous); with different subscriptions a partition goes to the least loaded
  member that subscribes to its topic, then partitions move from the most to the least
  loaded eligible members while that reduces the spread.
* ``range``: per topic, the subscribed members (sorted by member id) get contiguous ranges,
  the first ``partitions % members`` one partition more, which co-partitions topics with the
  same partition count in a fresh group; current owners keep their partitions up to their
  quota.

Pure and deterministic: equal inputs give equal outputs (members and partitions are sorted).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from .config import RANGE_ASSIGNOR, UNIFORM_ASSIGNOR
from .consumer_group import Assignment

TopicPartition = tuple[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """What an assignor knows of a member."""

    subscribed_topic_ids: frozenset[uuid.UUID]
    current: Assignment
    instance_id: str | None = None
    rack_id: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSpec:
    members: Mapping[str, MemberSpec]
    #: topic id -> number of partitions, for the subscribed topics that exist.
    topics: Mapping[uuid.UUID, int]


def _to_assignment(
    owned: Mapping[str, list[TopicPartition]], members: list[str]
) -> dict[str, Assignment]:
    result: dict[str, Assignment] = {}
    for member_id in members:
        by_topic: dict[uuid.UUID, set[int]] = {}
        for topic_id, partition in owned.get(member_id, []):
            by_topic.setdefault(topic_id, set()).add(partition)
        result[member_id] = {t: frozenset(p) for t, p in by_topic.items()}
    return result


def uniform_assign(spec: GroupSpec) -> dict[str, Assignment]:
    """Kafka's ``UniformAssignor``: balanced and sticky (see the module docstring)."""
    members = sorted(spec.members)
    eligible: dict[uuid.UUID, list[str]] = {}
    for topic_id in sorted(spec.topics):
        subscribers = [m for m in members if topic_id in spec.members[m].subscribed_topic_ids]
        if subscribers:
            eligible[topic_id] = subscribers
    owner: dict[TopicPartition, str] = {}
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    # 1. Stickiness: keep what the current target gives, where still valid.
    for member_id in members:
        current = spec.members[member_id].current
        for topic_id in sorted(current):
            if member_id not in eligible.get(topic_id, ()):
                continue
            for partition in sorted(current[topic_id]):
                tp = (topic_id, partition)
                if partition < spec.topics[topic_id] and tp not in owner:
                    owner[tp] = member_id
                    owned[member_id].append(tp)
    # 2. Homogeneous quotas: trim members above ceil(P / M) so the rest can be balanced.
    all_partitions = [(t, p) for t in eligible for p in range(spec.topics[t])]
    if members and all(len(eligible[t]) == len(members) for t in eligible):
        total = len(all_partitions)
        base, extra = divmod(total, len(members))
        # Members already holding more than the base quota keep the extra ones first.
        ranked = sorted(members, key=lambda m: (-len(owned[m]), m))
        quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(ranked)}
        for member_id in members:
            while len(owned[member_id]) > quota[member_id]:
                del owner[owned[member_id].pop()]
    # 3. Unassigned partitions go to the least loaded eligible member, most constrained first.
    unassigned = [tp for tp in all_partitions if tp not in owner]
    unassigned.sort(key=lambda tp: (len(eligible[tp[0]]), tp[0], tp[1]))
    for tp in unassigned:
        target = min(eligible[tp[0]], key=lambda m: (len(owned[m]), m))
        owner[tp] = target
        owned[target].append(tp)
    # 4. Balance: move partitions from loaded to less loaded eligible members. Each move
    # lowers the sum of squared loads, so this ends.
    moved = True
    while moved:
        moved = False
        for member_id in sorted(members, key=lambda m: (-len(owned[m]), m)):
            for tp in list(reversed(owned[member_id])):
                load = len(owned[member_id])
                candidate = min(eligible[tp[0]], key=lambda m: (len(owned[m]), m))
                if len(owned[candidate]) + 1 < load:
                    owned[member_id].remove(tp)
                    owned[candidate].append(tp)
                    owner[tp] = candidate
                    moved = True
    return _to_assignment(owned, members)


def range_assign(spec: GroupSpec) -> dict[str, Assignment]:
    """Kafka's (server-side) ``RangeAssignor``: per-topic ranges, sticky within quotas."""
    members = sorted(spec.members)
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for topic_id in sorted(spec.topics):
        subscribers = [m for m in members if topic_id in spec.members[m].subscribed_topic_ids]
        if not subscribers:
            continue
        num_partitions = spec.topics[topic_id]
        base, extra = divmod(num_partitions, len(subscribers))
        kept: dict[str, list[int]] = {}
        taken: set[int] = set()
        for member_id in subscribers:
            current = sorted(
                p
                for p in spec.members[member_id].current.get(topic_id, ())
                if p < num_partitions and p not in taken
            )
            kept[member_id] = current
            taken.update(current)
        # The extra partitions go to members already holding more than the base, in order,
        # then to the first members in sorted order.
        with_more = [m for m in subscribers if len(kept[m]) > base]
        others = [m for m in subscribers if len(kept[m]) <= base]
        quota = dict.fromkeys(subscribers, base)
        for member_id in (with_more + others)[:extra]:
            quota[member_id] += 1
        for member_id in subscribers:
            kept[member_id] = kept[member_id][: quota[member_id]]
        taken = {p for parts in kept.values() for p in parts}
        free = [p for p in range(num_partitions) if p not in taken]
        for member_id in subscribers:
            while len(kept[member_id]) < quota[member_id] and free:
                kept[member_id].append(free.pop(0))
            owned[member_id].extend((topic_id, p) for p in sorted(kept[member_id]))
    return _to_assignment(owned, members)


ASSIGNORS = {UNIFORM_ASSIGNOR: uniform_assign, RANGE_ASSIGNOR: range_assign}


def assign(assignor: str, spec: GroupSpec) -> dict[str, Assignment]:
    """Run the assignor named ``assignor`` (``uniform`` or ``range``)."""
    return ASSIGNORS[assignor](spec)
