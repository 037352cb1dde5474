"""Partition reassignments (KIP-455) on the active controller: starting one writes the union of
replicas with adding / removing, AlterPartition completes it once the target is in the ISR
(moving a leader that is removed, NEW_LEADER_ELECTED), a reordering or shrink completes at once,
cancelling reverts, ListPartitionReassignments lists what is in progress, a non-active node
forwards, and Kafka's errors and messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata import schemas
from pykbroker.metadata.controller import AlterPartitionItem, QuorumController
from pykbroker.metadata.image import PartitionRegistration
from pykbroker.metadata.metadata_log import MetadataLog
from pykbroker.metadata.reassignment import (
    OngoingPartitionReassignment,
    PartitionReassignmentReplicas,
    ReassignablePartitionResponse,
)
from pykbroker.metadata.records import MetadataRecord, record
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog
from tests.metadata.controller_support import (
    CommittingRaft,
    broker_record,
    committing_controller,
    partition_record,
)

TOPIC_ID = uuid.UUID(int=7)


broker = broker_record


def partition(
    index: int,
    replicas: list[int],
    isr: list[int],
    leader: int,
    *,
    adding: Sequence[int] = (),
    removing: Sequence[int] = (),
) -> MetadataRecord:
    return partition_record(
        TOPIC_ID, index, replicas, isr, leader, adding=adding, removing=removing
    )


@asynccontextmanager
async def controller_with(
    tmp_path: Path, *partitions: MetadataRecord, configs: Sequence[MetadataRecord] = ()
) -> AsyncIterator[QuorumController]:
    base = [
        broker(1),
        broker(2),
        broker(3),
        broker(4, fenced=True),
        record(schemas.TOPIC_RECORD, name="t", topic_id=TOPIC_ID),
    ]
    records = [*base, *partitions, *configs]
    async with committing_controller(tmp_path, records) as (controller, _):
        yield controller


def part(controller: QuorumController, index: int = 0) -> PartitionRegistration:
    return controller.image.topics["t"].partitions[index]


async def reassign(
    controller: QuorumController, *targets: tuple[int, Sequence[int] | None], **kwargs: Any
) -> list[ReassignablePartitionResponse]:
    results = await controller.alter_partition_reassignments([("t", list(targets))], **kwargs)
    assert [r.name for r in results] == ["t"]
    return results[0].partitions


async def alter_isr(
    controller: QuorumController, leader: int, isr: Sequence[int], index: int = 0
) -> ErrorCode:
    p = part(controller, index)
    [result] = await controller.handle_alter_partition(
        leader,
        leader * 10,
        [
            AlterPartitionItem(
                TOPIC_ID,
                index,
                p.leader_epoch,
                p.partition_epoch,
                tuple((b, b * 10) for b in isr),
            )
        ],
    )
    return result.error


def test_reassignment_replicas_as_kafka_computes_them() -> None:
    r = PartitionReassignmentReplicas.of([3, 1, 2], [4, 2, 5])
    assert (r.replicas, r.removing, r.adding) == ((4, 2, 5, 1, 3), (1, 3), (4, 5))


async def test_start_then_complete_moves_the_leader_off_a_removed_replica(
    tmp_path: Path,
) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        assert await reassign(controller, (0, [2, 3])) == [ReassignablePartitionResponse(0)]
        started = part(controller)
        assert started.replicas == (2, 3, 1)
        assert started.adding_replicas == (3,)
        assert started.removing_replicas == (1,)
        assert (started.isr, started.leader, started.leader_epoch) == ((1, 2), 1, 0)
        assert started.partition_epoch == 1
        listed = await controller.list_partition_reassignments(None)
        assert [(t.name, t.partitions) for t in listed] == [
            ("t", [OngoingPartitionReassignment(0, (2, 3, 1), (3,), (1,))])
        ]

        # Broker 3 caught up: the leader's AlterPartition completes the reassignment.
        assert await alter_isr(controller, 1, [1, 2, 3]) == ErrorCode.NEW_LEADER_ELECTED
        done = part(controller)
        assert done.replicas == (2, 3)
        assert done.isr == (2, 3)
        assert (done.leader, done.leader_epoch) == (2, 1)
        assert not done.is_reassigning
        assert await controller.list_partition_reassignments(None) == []


async def test_completion_keeps_a_staying_leader_and_bumps_its_epoch(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        await reassign(controller, (0, [1, 3]))
        assert part(controller).replicas == (1, 3, 2)
        # Not every adding replica is in the ISR yet: nothing completes.
        assert await alter_isr(controller, 1, [1, 2]) == ErrorCode.NO_ERROR
        assert part(controller).is_reassigning
        assert await alter_isr(controller, 1, [1, 2, 3]) == ErrorCode.NO_ERROR
        done = part(controller)
        assert (done.replicas, done.isr, done.leader) == ((1, 3), (1, 3), 1)
        assert done.leader_epoch == 1  # broker 2 left the replicas: a new leader epoch
        assert not done.is_reassigning


async def test_reordering_and_shrinking_complete_at_once(tmp_path: Path) -> None:
    async with controller_with(
        tmp_path, partition(0, [1, 2], [1, 2], 1), partition(1, [1, 2, 3], [1, 2, 3], 3)
    ) as controller:
        results = await reassign(controller, (0, [2, 1]), (1, [1, 2]))
        assert [r.error for r in results] == [ErrorCode.NO_ERROR, ErrorCode.NO_ERROR]
        reordered = part(controller, 0)
        assert (reordered.replicas, reordered.leader, reordered.leader_epoch) == ((2, 1), 1, 0)
        shrunk = part(controller, 1)
        assert (shrunk.replicas, shrunk.isr) == ((1, 2), (1, 2))
        assert (shrunk.leader, shrunk.leader_epoch) == (1, 1)  # broker 3 led: moved off it
        assert not reordered.is_reassigning
        assert not shrunk.is_reassigning
        # The same target again changes nothing.
        offset = controller.image.offset
        assert await reassign(controller, (0, [2, 1])) == [ReassignablePartitionResponse(0)]
        assert controller.image.offset == offset


async def test_cancel_reverts_to_the_original_replicas(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        await reassign(controller, (0, [2, 3]))
        assert await alter_isr(controller, 1, [1, 2]) == ErrorCode.NO_ERROR
        assert await reassign(controller, (0, None)) == [ReassignablePartitionResponse(0)]
        reverted = part(controller)
        # Kafka's PartitionReassignmentRevert: the adding replicas leave, in the list's order.
        assert reverted.replicas == (2, 1)
        assert (reverted.isr, reverted.leader) == ((1, 2), 1)
        assert not reverted.is_reassigning
        assert await reassign(controller, (0, None)) == [
            ReassignablePartitionResponse(
                0,
                ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                "No partition reassignment is in progress.",
            )
        ]


async def test_cancel_that_needs_an_unclean_election_is_refused(tmp_path: Path) -> None:
    ongoing = partition(0, [3, 2, 1], [3], 3, adding=[3], removing=[1, 2])
    async with controller_with(tmp_path, ongoing) as controller:
        assert part(controller).adding_replicas == (3,)
        assert await reassign(controller, (0, None)) == [
            ReassignablePartitionResponse(
                0,
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                "Unable to revert partition assignment for t:0 because it would require an "
                "unclean leader election.",
            )
        ]
    unclean = record(
        schemas.CONFIG_RECORD,
        resource_type=2,
        resource_name="t",
        name="unclean.leader.election.enable",
        value="true",
    )
    async with controller_with(tmp_path / "unclean", ongoing, configs=[unclean]) as controller:
        assert await reassign(controller, (0, None)) == [ReassignablePartitionResponse(0)]
        reverted = part(controller)
        # Kafka's revert takes every remaining replica into the ISR and elects from it.
        assert (reverted.replicas, reverted.leader, reverted.isr) == ((2, 1), 2, (2, 1))
        assert not reverted.is_reassigning


async def test_errors_as_kafka(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        results = await reassign(
            controller,
            (9, [1, 2]),
            (0, []),
            (0, [1, 2, 1]),
            (0, [5, 1, 6]),
            (0, [1, 2, 3]),
        )
        assert [(r.error, r.message) for r in results] == [
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "Unable to find partition t:9."),
            (
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes an empty replica list.",
            ),
            (
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes the broker 1 more than once.",
            ),
            (
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes broker 5, but no such broker is "
                "registered.",
            ),
            (ErrorCode.NO_ERROR, None),  # a larger replication factor is allowed by default
        ]
        [unknown] = await controller.alter_partition_reassignments([("nope", [(0, [1])])])
        assert unknown.partitions == [
            ReassignablePartitionResponse(
                0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "Unable to find a topic named nope."
            )
        ]
        # KIP-860: heading for 3 replicas, a 2-replica target changes the replication factor.
        assert await reassign(controller, (0, [2, 3]), allow_replication_factor_change=False) == [
            ReassignablePartitionResponse(
                0,
                ErrorCode.INVALID_REPLICATION_FACTOR,
                "The replication factor is changed from 3 to 2",
            )
        ]
        # A registered but fenced broker is accepted (Kafka checks registration only).
        assert await reassign(controller, (0, [1, 4])) == [ReassignablePartitionResponse(0)]
        assert part(controller).adding_replicas == (4,)


async def test_list_named_partitions_skips_unknown_and_idle_ones(tmp_path: Path) -> None:
    async with controller_with(
        tmp_path, partition(0, [1, 2], [1, 2], 1), partition(1, [1, 2], [1, 2], 1)
    ) as controller:
        await reassign(controller, (1, [1, 3]))
        listed = await controller.list_partition_reassignments({"t": [0, 1, 7], "nope": [0]})
        assert [(t.name, t.partitions) for t in listed] == [
            ("t", [OngoingPartitionReassignment(1, (1, 3, 2), (3,), (2,))])
        ]
        assert await controller.list_partition_reassignments({"t": [0]}) == []


class RecordingChannel:
    """A controller channel that answers like the active controller would."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sent: list[tuple[int, int, dict[str, Any]]] = []

    async def send(
        self, api_key: int, version: int, body: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        self.sent.append((api_key, version, body))
        return self.response


async def test_a_node_that_is_not_the_active_controller_forwards(tmp_path: Path) -> None:
    log = KafkaReplicatedLog.open(tmp_path / METADATA_PARTITION_DIR)
    channel = RecordingChannel(
        {
            "throttle_time_ms": 0,
            "error_code": 0,
            "error_message": None,
            "responses": [
                {
                    "name": "t",
                    "partitions": [
                        {"partition_index": 0, "error_code": 0, "error_message": None},
                        {
                            "partition_index": 1,
                            "error_code": ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                            "error_message": "No partition reassignment is in progress.",
                        },
                    ],
                }
            ],
            "topics": [
                {
                    "name": "t",
                    "partitions": [
                        {
                            "partition_index": 0,
                            "replicas": [2, 3, 1],
                            "adding_replicas": [3],
                            "removing_replicas": [1],
                        }
                    ],
                }
            ],
        }
    )
    try:
        controller = QuorumController(
            MetadataLog(log.log),
            CommittingRaft(log, leader=2),
            node_id=1,
            default_num_partitions=1,
            default_replication_factor=1,
            clock=lambda: 0,
            channel=channel,
            commit_timeout_ms=5000,
        )
        assert not controller.is_active
        results = await controller.alter_partition_reassignments(
            [("t", [(0, [2, 3]), (1, None)])], allow_replication_factor_change=False
        )
        assert results[0].partitions == [
            ReassignablePartitionResponse(0),
            ReassignablePartitionResponse(
                1,
                ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                "No partition reassignment is in progress.",
            ),
        ]
        listed = await controller.list_partition_reassignments({"t": [0]})
        assert listed[0].partitions == [OngoingPartitionReassignment(0, (2, 3, 1), (3,), (1,))]
        (alter_key, alter_version, alter_body), (list_key, list_version, list_body) = channel.sent
        assert (alter_key, alter_version) == (ApiKey.ALTER_PARTITION_REASSIGNMENTS, 1)
        assert alter_body["allow_replication_factor_change"] is False
        assert alter_body["topics"] == [
            {
                "name": "t",
                "partitions": [
                    {"partition_index": 0, "replicas": [2, 3]},
                    {"partition_index": 1, "replicas": None},
                ],
            }
        ]
        assert (list_key, list_version) == (ApiKey.LIST_PARTITION_REASSIGNMENTS, 0)
        assert list_body["topics"] == [{"name": "t", "partition_indexes": [0]}]
    finally:
        log.close()
