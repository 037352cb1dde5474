"""Partition reassignments (KIP-455) asked of the controller (Kafka's
``ReplicationControlManager.alterPartitionReassignments`` / ``listPartitionReassignments``, with
``PartitionReassignmentReplicas`` and ``PartitionReassignmentRevert``).

AlterPartitionReassignments: per partition, a target replica list starts (or replaces) a
reassignment: one ``PartitionChangeRecord`` sets ``replicas`` to the target followed by the
replicas it removes, ``adding_replicas`` (target - current, ascending) and ``removing_replicas``
(current - target, ascending); the ISR is unchanged. The new replicas then fetch from the
leader; once the leader's AlterPartition brings every replica that stays into the ISR, the
``PartitionChangeBuilder`` completes it: replicas = target, the removing replicas leave the ISR,
a leader being removed hands over to the first target replica in the ISR, adding / removing
are cleared. A reassignment the ISR already allows (a reordering, a shrink) completes at once.
A null target cancels: the adding replicas leave the replica list and the ISR, the removing
ones stay; when no ISR member would be left the revert needs an unclean election and is refused
unless ``unclean.leader.election.enable`` is on for the topic. All records of one request are
committed as one batch.

Errors per partition, with Kafka's messages: UNKNOWN_TOPIC_OR_PARTITION ("Unable to find a topic
named t." / "Unable to find partition t:9."), INVALID_REPLICA_ASSIGNMENT for an empty list, an
unregistered broker or one named twice (``validateManualPartitionAssignment``: brokers checked
in ascending order; a registered but fenced broker is accepted, as in Kafka) or an unclean
revert, INVALID_REPLICATION_FACTOR when v1's ``allow_replication_factor_change`` is false and
the target's size differs from the replica count the partition has or is heading for (KIP-860),
NO_REASSIGNMENT_IN_PROGRESS when cancelling nothing.

ListPartitionReassignments: the partitions with adding or removing replicas -- all of them, or
those asked for (unknown topics and partitions are left out, as Kafka does) -- with their
replicas, adding and removing replicas; topics by name, partitions ascending.

A node that is not the active controller forwards both requests to it (AlterPartitionReassignments
v1, ListPartitionReassignments v0). Not implemented: throttles, log directory placement.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from .controller_base import ControllerBase
from .image import MetadataImage, PartitionRegistration, TopicImage
from .leader_election import is_active, unclean_enabled
from .partition_change import Election, PartitionChangeBuilder
from .records import MetadataRecord

log = logging.getLogger(__name__)

#: The versions used to forward to the active controller.
ALTER_PARTITION_REASSIGNMENTS_VERSION = 1
LIST_PARTITION_REASSIGNMENTS_VERSION = 0
#: Kafka's ``Errors.NO_REASSIGNMENT_IN_PROGRESS`` message.
NO_REASSIGNMENT_MESSAGE = "No partition reassignment is in progress."

#: One topic of an AlterPartitionReassignments request: (partition index, target replicas or
#: None to cancel) pairs.
ReassignablePartitions = Sequence[tuple[int, Sequence[int] | None]]


@dataclass(slots=True)
class ReassignablePartitionResponse:
    """One partition of an AlterPartitionReassignments answer."""

    partition_index: int
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


@dataclass(slots=True)
class ReassignableTopicResponse:
    """One topic of an AlterPartitionReassignments answer."""

    name: str
    partitions: list[ReassignablePartitionResponse] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OngoingPartitionReassignment:
    """One partition of a ListPartitionReassignments answer."""

    partition_index: int
    replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...]
    removing_replicas: tuple[int, ...]


@dataclass(slots=True)
class OngoingTopicReassignment:
    """One topic of a ListPartitionReassignments answer."""

    name: str
    partitions: list[OngoingPartitionReassignment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PartitionReassignmentReplicas:
    """The replica lists of a reassignment from ``current`` to ``target`` (Kafka's
    ``PartitionReassignmentReplicas``): the target then the removed replicas; adding and
    removing ascending."""

    replicas: tuple[int, ...]
    removing: tuple[int, ...]
    adding: tuple[int, ...]

    @classmethod
    def of(cls, current: Sequence[int], target: Sequence[int]) -> PartitionReassignmentReplicas:
        removing = tuple(sorted(set(current) - set(target)))
        adding = tuple(sorted(set(target) - set(current)))
        return cls((*target, *removing), removing, adding)


@dataclass(frozen=True, slots=True)
class PartitionReassignmentRevert:
    """The replicas and ISR after cancelling a reassignment (Kafka's
    ``PartitionReassignmentRevert``): the adding replicas leave both; an ISR left empty becomes
    every remaining replica, which is an unclean election."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    unclean: bool

    @classmethod
    def of(cls, partition: PartitionRegistration) -> PartitionReassignmentRevert:
        adding = set(partition.adding_replicas)
        replicas = tuple(r for r in partition.replicas if r not in adding)
        isr = tuple(r for r in partition.isr if r not in adding)
        if not isr:
            return cls(replicas, replicas, True)
        return cls(replicas, isr, False)


def validate_manual_partition_assignment(image: MetadataImage, replicas: Sequence[int]) -> None:
    """Kafka's ``validateManualPartitionAssignment`` (without a replication factor):
    INVALID_REPLICA_ASSIGNMENT raised with Kafka's message."""
    if not replicas:
        raise KafkaError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes an empty replica list.",
        )
    previous: int | None = None
    for broker_id in sorted(replicas):
        if broker_id not in image.brokers:
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes broker {broker_id}, but no such "
                "broker is registered.",
            )
        if broker_id == previous:
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes the broker {broker_id} more than once.",
            )
        previous = broker_id


def _replication_factor_heading_for(partition: PartitionRegistration) -> int:
    """The replica count the partition has, or will have once its reassignment completes."""
    if not partition.is_reassigning:
        return len(partition.replicas)
    heading = set(partition.replicas) | set(partition.adding_replicas)
    return len(heading - set(partition.removing_replicas))


def reassignment_change(
    image: MetadataImage,
    topic: TopicImage,
    index: int,
    target: Sequence[int] | None,
    *,
    allow_replication_factor_change: bool = True,
    unclean_default: bool = False,
) -> MetadataRecord | None:
    """The PartitionChangeRecord starting, changing or cancelling (``target`` None) a
    reassignment of ``topic``-``index``, None if nothing changes; errors raised as
    ``KafkaError`` (Kafka's ``alterPartitionReassignment``)."""
    partition = topic.partitions.get(index)
    if partition is None:
        raise KafkaError(
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            f"Unable to find partition {topic.name}:{index}.",
        )
    builder = PartitionChangeBuilder(
        partition, topic.topic_id, index, functools.partial(is_active, image)
    )
    unclean = unclean_enabled(image, topic.name, unclean_default)
    if target is None:
        if not partition.is_reassigning:
            raise KafkaError(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, NO_REASSIGNMENT_MESSAGE)
        revert = PartitionReassignmentRevert.of(partition)
        if revert.unclean and not unclean:
            raise KafkaError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Unable to revert partition assignment for {topic.name}:{index} because it "
                "would require an unclean leader election.",
            )
        if unclean:
            builder.set_election(Election.UNCLEAN)
        return (
            builder.set_target_isr(revert.isr)
            .set_target_replicas(revert.replicas)
            .set_target_removing(())
            .set_target_adding(())
            .build()
        )
    validate_manual_partition_assignment(image, target)
    if not allow_replication_factor_change:
        current = _replication_factor_heading_for(partition)
        if current != len(target):
            raise KafkaError(
                ErrorCode.INVALID_REPLICATION_FACTOR,
                f"The replication factor is changed from {current} to {len(target)}",
            )
    reassignment = PartitionReassignmentReplicas.of(partition.replicas, target)
    if reassignment.replicas != partition.replicas:
        builder.set_target_replicas(reassignment.replicas)
    if reassignment.removing:
        builder.set_target_removing(reassignment.removing)
    if reassignment.adding:
        builder.set_target_adding(reassignment.adding)
    return builder.build()


def ongoing_reassignments(
    image: MetadataImage, topics: Mapping[str, Sequence[int]] | None
) -> list[OngoingTopicReassignment]:
    """Kafka's ``listPartitionReassignments`` over ``image``."""
    wanted: list[tuple[TopicImage, Sequence[int]]] = []
    if topics is None:
        for name in sorted(image.topics):
            topic = image.topics[name]
            wanted.append((topic, sorted(topic.partitions)))
    else:
        for name, indexes in topics.items():
            found = image.topics.get(name)
            if found is not None:
                wanted.append((found, indexes))
    results: list[OngoingTopicReassignment] = []
    for topic, indexes in wanted:
        ongoing = OngoingTopicReassignment(topic.name)
        for index in indexes:
            partition = topic.partitions.get(index)
            if partition is not None and partition.is_reassigning:
                ongoing.partitions.append(
                    OngoingPartitionReassignment(
                        index,
                        partition.replicas,
                        partition.adding_replicas,
                        partition.removing_replicas,
                    )
                )
        if ongoing.partitions:
            results.append(ongoing)
    return results


class ReassignmentControl(ControllerBase):
    """AlterPartitionReassignments and ListPartitionReassignments."""

    async def alter_partition_reassignments(
        self,
        topics: Sequence[tuple[str, ReassignablePartitions]],
        *,
        allow_replication_factor_change: bool = True,
    ) -> list[ReassignableTopicResponse]:
        """Start, change or cancel reassignments (topic name, [(partition, target or None)]);
        forwarded (v1) when this node is not the active controller. Errors are per partition; a
        whole-request error (REQUEST_TIMED_OUT, ...) is raised as ``KafkaError``."""
        deadline = self._deadline()
        if await self._await_active(deadline):
            return await self.handle_alter_partition_reassignments(
                topics, allow_replication_factor_change=allow_replication_factor_change
            )
        body = {
            "timeout_ms": self.commit_timeout_ms,
            "allow_replication_factor_change": allow_replication_factor_change,
            "topics": [
                {
                    "name": name,
                    "partitions": [
                        {
                            "partition_index": index,
                            "replicas": None if target is None else list(target),
                        }
                        for index, target in partitions
                    ],
                }
                for name, partitions in topics
            ],
        }
        response = await self._forward(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            ALTER_PARTITION_REASSIGNMENTS_VERSION,
            body,
            deadline,
            lambda r: [
                r["error_code"],
                *(p["error_code"] for t in r.get("responses", []) for p in t["partitions"]),
            ],
        )
        if response["error_code"]:
            raise KafkaError(ErrorCode(response["error_code"]), response.get("error_message"))
        return [
            ReassignableTopicResponse(
                t["name"],
                [
                    ReassignablePartitionResponse(
                        p["partition_index"], ErrorCode(p["error_code"]), p["error_message"]
                    )
                    for p in t["partitions"]
                ],
            )
            for t in response.get("responses", [])
        ]

    async def handle_alter_partition_reassignments(
        self,
        topics: Sequence[tuple[str, ReassignablePartitions]],
        *,
        allow_replication_factor_change: bool = True,
    ) -> list[ReassignableTopicResponse]:
        """Active controller: validate every partition, commit the changes as one batch."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        image = self._validation_image()
        records: list[MetadataRecord] = []
        results: list[ReassignableTopicResponse] = []
        done = 0
        for name, partitions in topics:
            topic_result = ReassignableTopicResponse(name)
            results.append(topic_result)
            for index, target in partitions:
                result = ReassignablePartitionResponse(index)
                topic_result.partitions.append(result)
                try:
                    topic = image.topics.get(name)
                    if topic is None:
                        raise KafkaError(
                            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            f"Unable to find a topic named {name}.",
                        )
                    change = reassignment_change(
                        image,
                        topic,
                        index,
                        target,
                        allow_replication_factor_change=allow_replication_factor_change,
                        unclean_default=self.unclean_leader_election_enable,
                    )
                except KafkaError as exc:
                    log.info(
                        "Unable to alter partition reassignment for %s:%d: %s %s",
                        name,
                        index,
                        exc.code.name,
                        exc.message,
                    )
                    result.error, result.message = exc.code, exc.message
                    continue
                done += 1
                if change is not None:
                    records.append(change)
                    image = image.apply([change])
        log.info(
            "Successfully altered %d out of %d partition reassignment(s).",
            done,
            sum(len(t.partitions) for t in results),
        )
        if records:
            await self._commit(records, deadline)
        return results

    async def list_partition_reassignments(
        self, topics: Mapping[str, Sequence[int]] | None
    ) -> list[OngoingTopicReassignment]:
        """The reassignments in progress (topic -> partitions; None: all), as the active
        controller sees them; forwarded (v0) when this node is not it."""
        deadline = self._deadline()
        if await self._await_active(deadline):
            return ongoing_reassignments(self._validation_image(), topics)
        body = {
            "timeout_ms": self.commit_timeout_ms,
            "topics": None
            if topics is None
            else [
                {"name": name, "partition_indexes": list(indexes)}
                for name, indexes in topics.items()
            ],
        }
        response = await self._forward(
            ApiKey.LIST_PARTITION_REASSIGNMENTS,
            LIST_PARTITION_REASSIGNMENTS_VERSION,
            body,
            deadline,
            lambda r: [r["error_code"]],
        )
        if response["error_code"]:
            raise KafkaError(ErrorCode(response["error_code"]), response.get("error_message"))
        return [
            OngoingTopicReassignment(
                t["name"],
                [
                    OngoingPartitionReassignment(
                        p["partition_index"],
                        tuple(p["replicas"]),
                        tuple(p["adding_replicas"]),
                        tuple(p["removing_replicas"]),
                    )
                    for p in t["partitions"]
                ],
            )
            for t in response.get("topics") or []
        ]
