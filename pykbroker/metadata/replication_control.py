"""ISR changes and leader elections asked of the controller (Kafka's
``ReplicationControlManager.alterPartition`` / ``electLeaders`` /
``maybeBalancePartitionLeaders``).

AlterPartition: a partition leader sends the ISR it wants with the leader epoch and partition
epoch it knows. Per partition, as Kafka 4.1 checks: UNKNOWN_TOPIC_ID (or
UNKNOWN_TOPIC_OR_PARTITION by name, v0-1) for an unknown topic, UNKNOWN_TOPIC_OR_PARTITION for
an unknown partition, NOT_CONTROLLER when the sender knows a newer leader or partition epoch
than this controller (it is behind), FENCED_LEADER_EPOCH for an older leader epoch,
INVALID_REQUEST when the sender is not the leader, INVALID_UPDATE_VERSION for an older
partition epoch, INVALID_REQUEST for an ISR with a non-replica, a duplicate or without the
leader, or a bad leader recovery state, INELIGIBLE_REPLICA (OPERATION_NOT_ATTEMPTED before v2)
for an ISR member that is not registered, fenced, in controlled shutdown or of another broker
epoch. A stale or unknown sender broker epoch is STALE_BROKER_EPOCH for the whole request.
Valid changes become ``PartitionChangeRecord``s (ISR, partition epoch + 1; a leader that left
the ISR hands over) and the answer is the committed state (leader, leader epoch, ISR, recovery
state, partition epoch); an ISR equal to the current one writes nothing and answers the
current state.

ElectLeaders: PREFERRED (0) moves leadership to the first replica when it is live and in the
ISR (ELECTION_NOT_NEEDED if it already leads, PREFERRED_LEADER_NOT_AVAILABLE if it cannot);
UNCLEAN (1) elects a leader for a leaderless partition, from outside the ISR if need be
(ELECTION_NOT_NEEDED if it has one, ELIGIBLE_LEADERS_NOT_AVAILABLE if no replica is live).
Without topic partitions every partition is tried and those needing no election are left out
of the answer, as Kafka does.

``auto.leader.rebalance.enable``: every ``leader.imbalance.check.interval.seconds`` the active
controller runs preferred elections for partitions not led by their first replica (at most
1000 a round, Kafka's ``maxElectionsPerImbalance``; ``leader.imbalance.per.broker.percentage``
is not used, as in Kafka's KRaft controller).

An AlterPartition whose ISR completes a reassignment (``reassignment``) that removes the
leader moves leadership: the change is committed and the answer is NEW_LEADER_ELECTED, as Kafka
answers; the old leader learns the new state from the metadata.

Not implemented: ELR (KIP-966), log directory checks.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from .controller_base import ControllerBase
from .image import MetadataImage, PartitionRegistration
from .leader_election import is_active, preferred_leader_changes, unclean_enabled
from .partition_change import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    RECOVERED,
    RECOVERING,
    Election,
    PartitionChangeBuilder,
)
from .records import MetadataRecord

log = logging.getLogger(__name__)

#: Kafka's ``ElectionType``.
PREFERRED_ELECTION = 0
UNCLEAN_ELECTION = 1
#: Kafka's ``QuorumController`` ``maxElectionsPerImbalance``.
MAX_ELECTIONS_PER_IMBALANCE = 1000
#: The AlterPartition / ElectLeaders versions used to forward to the active controller.
ALTER_PARTITION_VERSION = 3
ELECT_LEADERS_VERSION = 2


@dataclass(frozen=True, slots=True)
class AlterPartitionItem:
    """One partition of an AlterPartition request: the ISR its leader wants.

    ``new_isr`` holds (broker id, broker epoch) pairs; a broker epoch of -1 skips the epoch
    check of that member (AlterPartition v2 sends none)."""

    topic_id: uuid.UUID
    partition_index: int
    leader_epoch: int
    partition_epoch: int
    new_isr: tuple[tuple[int, int], ...]
    leader_recovery_state: int = RECOVERED
    #: Only for v0-1 requests, which name topics instead of giving ids.
    topic_name: str | None = None


@dataclass(frozen=True, slots=True)
class AlterPartitionResult:
    """The controller's answer for one partition: an error, or the committed state."""

    topic_id: uuid.UUID
    partition_index: int
    error: ErrorCode = ErrorCode.NO_ERROR
    leader_id: int = NO_LEADER
    leader_epoch: int = -1
    isr: tuple[int, ...] = ()
    leader_recovery_state: int = RECOVERED
    partition_epoch: int = -1
    topic_name: str | None = None


@dataclass(slots=True)
class ElectionResult:
    """One partition of an ElectLeaders answer."""

    partition_id: int
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


@dataclass(slots=True)
class TopicElectionResults:
    """One topic of an ElectLeaders answer."""

    topic: str
    partitions: list[ElectionResult] = field(default_factory=list)


def _answer(
    item: AlterPartitionItem, error: ErrorCode, partition: PartitionRegistration | None = None
) -> AlterPartitionResult:
    if partition is None or error != ErrorCode.NO_ERROR:
        return AlterPartitionResult(
            item.topic_id, item.partition_index, error, topic_name=item.topic_name
        )
    return AlterPartitionResult(
        item.topic_id,
        item.partition_index,
        ErrorCode.NO_ERROR,
        partition.leader,
        partition.leader_epoch,
        partition.isr,
        partition.leader_recovery_state,
        partition.partition_epoch,
        item.topic_name,
    )


def validate_alter_partition(
    image: MetadataImage,
    broker_id: int,
    partition: PartitionRegistration | None,
    item: AlterPartitionItem,
    version: int,
) -> ErrorCode:
    """The error for one AlterPartition partition, NO_ERROR if the change may be made (Kafka's
    ``validateAlterPartitionData``)."""
    if partition is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if item.leader_epoch > partition.leader_epoch:
        return ErrorCode.NOT_CONTROLLER
    if item.partition_epoch > partition.partition_epoch:
        return ErrorCode.NOT_CONTROLLER
    if item.leader_epoch < partition.leader_epoch:
        return ErrorCode.FENCED_LEADER_EPOCH
    if broker_id != partition.leader:
        return ErrorCode.INVALID_REQUEST
    if item.partition_epoch < partition.partition_epoch:
        return ErrorCode.INVALID_UPDATE_VERSION
    new_isr = [b for b, _ in item.new_isr]
    if len(set(new_isr)) != len(new_isr) or not set(new_isr) <= set(partition.replicas):
        return ErrorCode.INVALID_REQUEST
    if partition.leader not in new_isr:
        return ErrorCode.INVALID_REQUEST
    if item.leader_recovery_state not in (RECOVERED, RECOVERING):
        return ErrorCode.INVALID_REQUEST
    if item.leader_recovery_state == RECOVERING and len(new_isr) > 1:
        return ErrorCode.INVALID_REQUEST
    if partition.leader_recovery_state == RECOVERED and item.leader_recovery_state == RECOVERING:
        return ErrorCode.INVALID_REQUEST
    for member, member_epoch in item.new_isr:
        reg = image.brokers.get(member)
        if (
            reg is None
            or not reg.is_active  # fenced or in controlled shutdown (KIP-631)
            or (member_epoch != -1 and reg.epoch != member_epoch)
        ):
            return (
                ErrorCode.INELIGIBLE_REPLICA if version > 1 else ErrorCode.OPERATION_NOT_ATTEMPTED
            )
    return ErrorCode.NO_ERROR


class ReplicationControl(ControllerBase):
    """AlterPartition, ElectLeaders and the automatic preferred leader rebalance."""

    # --- AlterPartition -----------------------------------------------------------------

    async def alter_partition(
        self, items: Sequence[AlterPartitionItem]
    ) -> list[AlterPartitionResult]:
        """This broker (a partition leader) asks the active controller for ISR changes; sent
        over the controller channel (AlterPartition v3) when this node is not the active
        controller. Per-partition errors are in the results; a whole-request error
        (STALE_BROKER_EPOCH, REQUEST_TIMED_OUT, ...) is raised as ``KafkaError``. Answers once
        this node's own image shows the committed partition epochs."""
        deadline = self._deadline()
        if not items:
            return []
        if await self._await_active(deadline):
            return await self.handle_alter_partition(
                self.node_id, self.broker_epoch, items, ALTER_PARTITION_VERSION
            )
        results = await self._forward_alter_partition(items, deadline)
        done = {
            (r.topic_id, r.partition_index): r.partition_epoch
            for r in results
            if r.error == ErrorCode.NO_ERROR
        }

        def visible(image: MetadataImage) -> bool:
            for (topic_id, index), epoch in done.items():
                topic = image.topics_by_id.get(topic_id)
                partition = topic.partitions.get(index) if topic is not None else None
                if partition is not None and partition.partition_epoch < epoch:
                    return False
            return True

        await self._await_image(visible, deadline)
        return results

    async def _forward_alter_partition(
        self, items: Sequence[AlterPartitionItem], deadline: float
    ) -> list[AlterPartitionResult]:
        by_topic: dict[uuid.UUID, list[AlterPartitionItem]] = {}
        for item in items:
            by_topic.setdefault(item.topic_id, []).append(item)
        body = {
            "broker_id": self.node_id,
            "broker_epoch": self.broker_epoch,
            "topics": [
                {
                    "topic_id": topic_id,
                    "partitions": [
                        {
                            "partition_index": item.partition_index,
                            "leader_epoch": item.leader_epoch,
                            "new_isr_with_epochs": [
                                {"broker_id": b, "broker_epoch": e} for b, e in item.new_isr
                            ],
                            "leader_recovery_state": item.leader_recovery_state,
                            "partition_epoch": item.partition_epoch,
                        }
                        for item in topic_items
                    ],
                }
                for topic_id, topic_items in by_topic.items()
            ],
        }
        response = await self._forward(
            ApiKey.ALTER_PARTITION,
            ALTER_PARTITION_VERSION,
            body,
            deadline,
            lambda r: [r["error_code"]],
        )
        if response["error_code"]:
            raise KafkaError(ErrorCode(response["error_code"]), "AlterPartition failed")
        return [
            AlterPartitionResult(
                topic["topic_id"],
                p["partition_index"],
                ErrorCode(p["error_code"]),
                p["leader_id"],
                p["leader_epoch"],
                tuple(p["isr"]),
                p["leader_recovery_state"],
                p["partition_epoch"],
            )
            for topic in response["topics"]
            for p in topic["partitions"]
        ]

    async def handle_alter_partition(
        self,
        broker_id: int,
        broker_epoch: int,
        items: Sequence[AlterPartitionItem],
        version: int = ALTER_PARTITION_VERSION,
    ) -> list[AlterPartitionResult]:
        """Active controller: validate and commit ISR changes from partition leader
        ``broker_id``; NOT_CONTROLLER / STALE_BROKER_EPOCH raised as ``KafkaError``."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        if not items:
            return []
        image = self._validation_image()
        reg = image.brokers.get(broker_id)
        if reg is None:
            raise KafkaError(
                ErrorCode.STALE_BROKER_EPOCH, f"No broker registration found for broker {broker_id}"
            )
        if reg.epoch != broker_epoch:
            raise KafkaError(
                ErrorCode.STALE_BROKER_EPOCH,
                f"Expected broker epoch {reg.epoch}, but got broker epoch {broker_epoch}",
            )
        results: list[AlterPartitionResult] = []
        records: list[MetadataRecord] = []
        for item in items:
            topic = (
                image.topics_by_id.get(item.topic_id)
                if version > 1
                else image.topics.get(item.topic_name or "")
            )
            if topic is None:
                unknown = (
                    ErrorCode.UNKNOWN_TOPIC_ID
                    if version > 1
                    else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                )
                results.append(_answer(item, unknown))
                continue
            partition = topic.partitions.get(item.partition_index)
            error = validate_alter_partition(image, broker_id, partition, item, version)
            if error != ErrorCode.NO_ERROR or partition is None:
                log.info(
                    "rejecting AlterPartition from broker %d for %s-%d: %s",
                    broker_id,
                    topic.name,
                    item.partition_index,
                    error.name,
                )
                results.append(_answer(item, error))
                continue
            builder = PartitionChangeBuilder(
                partition,
                topic.topic_id,
                item.partition_index,
                functools.partial(is_active, image),
            )
            if unclean_enabled(image, topic.name, self.unclean_leader_election_enable):
                builder.set_election(Election.UNCLEAN)
            change = (
                builder.set_target_isr([b for b, _ in item.new_isr])
                .set_target_leader_recovery_state(item.leader_recovery_state)
                .build()
            )
            if change is not None:
                records.append(change)
                partition = partition.merge(change.data)
                image = image.apply([change])
                if change.data["leader"] not in (broker_id, NO_LEADER_CHANGE):
                    # Only completing a reassignment moves the leader here (Kafka's answer).
                    log.info(
                        "AlterPartition from broker %d for %s-%d completed the ongoing "
                        "partition reassignment and triggered a leadership change",
                        broker_id,
                        topic.name,
                        item.partition_index,
                    )
                    results.append(_answer(item, ErrorCode.NEW_LEADER_ELECTED))
                    continue
            results.append(_answer(item, ErrorCode.NO_ERROR, partition))
        if records:
            await self._commit(records, deadline)
        return results

    # --- ElectLeaders ----------------------------------------------------------------------

    async def elect_leaders(
        self, election_type: int, partitions: Mapping[str, Sequence[int]] | None
    ) -> list[TopicElectionResults]:
        """ElectLeaders for ``partitions`` (topic -> partition ids; None: every partition),
        forwarded (v2) when this node is not the active controller; a whole-request error is
        raised as ``KafkaError``. Answers once this node's image has the elections."""
        deadline = self._deadline()
        if partitions is not None and not partitions:
            return []
        if await self._await_active(deadline):
            return await self.handle_elect_leaders(election_type, partitions)
        body = {
            "election_type": election_type,
            "topic_partitions": (
                None
                if partitions is None
                else [{"topic": t, "partitions": list(p)} for t, p in partitions.items()]
            ),
            "timeout_ms": self.commit_timeout_ms,
        }
        response = await self._forward(
            ApiKey.ELECT_LEADERS, ELECT_LEADERS_VERSION, body, deadline, lambda r: [r["error_code"]]
        )
        if response["error_code"]:
            raise KafkaError(ErrorCode(response["error_code"]), "ElectLeaders failed")
        results = [
            TopicElectionResults(
                t["topic"],
                [
                    ElectionResult(
                        p["partition_id"], ErrorCode(p["error_code"]), p["error_message"]
                    )
                    for p in t["partition_result"]
                ],
            )
            for t in response["replica_election_results"]
        ]
        elected = {
            (t.topic, r.partition_id)
            for t in results
            for r in t.partitions
            if r.error == ErrorCode.NO_ERROR
        }

        def visible(image: MetadataImage) -> bool:
            for name, index in elected:
                topic = image.topics.get(name)
                partition = topic.partitions.get(index) if topic is not None else None
                if partition is None:
                    continue
                if election_type == PREFERRED_ELECTION and not partition.has_preferred_leader:
                    return False
                if election_type == UNCLEAN_ELECTION and partition.leader == NO_LEADER:
                    return False
            return True

        await self._await_image(visible, deadline)
        return results

    async def handle_elect_leaders(
        self, election_type: int, partitions: Mapping[str, Sequence[int]] | None
    ) -> list[TopicElectionResults]:
        """Active controller: run the elections and commit them (Kafka's ``electLeaders``)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        if election_type not in (PREFERRED_ELECTION, UNCLEAN_ELECTION):
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"Unknown election type {election_type}")
        image = self._validation_image()
        records: list[MetadataRecord] = []
        results: list[TopicElectionResults] = []
        if partitions is None:
            for name in sorted(image.topics):
                topic_results = TopicElectionResults(name)
                results.append(topic_results)
                for index in sorted(image.topics[name].partitions):
                    image, result = self._elect_leader(image, name, index, election_type, records)
                    if result.error != ErrorCode.ELECTION_NOT_NEEDED:
                        topic_results.partitions.append(result)
        else:
            for name, indexes in partitions.items():
                topic_results = TopicElectionResults(name)
                results.append(topic_results)
                for index in indexes:
                    image, result = self._elect_leader(image, name, index, election_type, records)
                    topic_results.partitions.append(result)
        if records:
            await self._commit(records, deadline)
        return results

    def _elect_leader(
        self,
        image: MetadataImage,
        name: str,
        index: int,
        election_type: int,
        records: list[MetadataRecord],
    ) -> tuple[MetadataImage, ElectionResult]:
        topic = image.topics.get(name)
        if topic is None:
            return image, ElectionResult(
                index, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such topic as {name}"
            )
        partition = topic.partitions.get(index)
        if partition is None:
            return image, ElectionResult(
                index,
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"No such partition as {name}-{index}",
            )
        if (election_type == PREFERRED_ELECTION and partition.has_preferred_leader) or (
            election_type == UNCLEAN_ELECTION and partition.leader != NO_LEADER
        ):
            return image, ElectionResult(index, ErrorCode.ELECTION_NOT_NEEDED)
        change = (
            PartitionChangeBuilder(
                partition, topic.topic_id, index, functools.partial(is_active, image)
            )
            .set_election(
                Election.PREFERRED if election_type == PREFERRED_ELECTION else Election.UNCLEAN
            )
            .build()
        )
        if change is None:
            code = (
                ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
                if election_type == PREFERRED_ELECTION
                else ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE
            )
            return image, ElectionResult(index, code)
        records.append(change)
        return image.apply([change]), ElectionResult(index)

    # --- automatic leader rebalance -------------------------------------------------------------

    async def balance_partition_leaders(self) -> int:
        """Active controller: preferred leader elections for imbalanced partitions (one round of
        ``auto.leader.rebalance.enable``); the number of partitions moved."""
        if not self.is_active:
            return 0
        records = preferred_leader_changes(self._validation_image(), MAX_ELECTIONS_PER_IMBALANCE)
        if records:
            log.info(
                "auto leader rebalance: moving %d partition(s) to their preferred leader",
                len(records),
            )
            await self._commit(records, self._deadline())
        return len(records)
