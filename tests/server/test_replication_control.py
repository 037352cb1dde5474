"""The QuorumController's replication operations on a Raft that commits every append at once:
ElectLeaders (preferred, unclean, every partition, bad type), AlterPartition whole-request
errors, the leader rebalance, and CreateTopics placement/validation with fenced brokers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.metadata import schemas
from pykbroker.metadata.controller import AlterPartitionItem, CreateTopicRequest, QuorumController
from pykbroker.metadata.image import PartitionRegistration
from pykbroker.metadata.partition_change import NO_LEADER, RECOVERING
from pykbroker.metadata.records import MetadataRecord, record
from tests.metadata.controller_support import broker_record, committing_controller, partition_record

TOPIC_ID = uuid.UUID(int=9)


broker = broker_record


def partition(index: int, replicas: list[int], isr: list[int], leader: int) -> MetadataRecord:
    return partition_record(TOPIC_ID, index, replicas, isr, leader)


@asynccontextmanager
async def controller_with(
    tmp_path: Path, *records: MetadataRecord
) -> AsyncIterator[QuorumController]:
    base = [
        broker(1),
        broker(2),
        broker(3, fenced=True),
        record(schemas.TOPIC_RECORD, name="t", topic_id=TOPIC_ID),
    ]
    async with committing_controller(tmp_path, [*base, *records]) as (controller, _):
        yield controller


def parts(controller: QuorumController) -> dict[int, PartitionRegistration]:
    return dict(controller.image.topics["t"].partitions)


async def test_preferred_election_for_every_partition_answers_only_the_elected(
    tmp_path: Path,
) -> None:
    async with controller_with(
        tmp_path,
        partition(0, [1, 2], [1, 2], 2),  # preferred leader 1 live and in the ISR: moves
        partition(1, [2, 1], [2, 1], 2),  # already the preferred leader: left out
        partition(2, [3, 2], [2], 2),  # preferred leader fenced: not available
    ) as controller:
        results = await controller.elect_leaders(0, None)
        assert [(r.topic, [(p.partition_id, p.error) for p in r.partitions]) for r in results] == [
            ("t", [(0, ErrorCode.NO_ERROR), (2, ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE)])
        ]
        after = parts(controller)
        assert (after[0].leader, after[0].leader_epoch) == (1, 1)
        assert after[1].leader_epoch == 0
        named = await controller.elect_leaders(0, {"t": [1, 7], "nope": [0]})
        assert [[p.error for p in r.partitions] for r in named] == [
            [ErrorCode.ELECTION_NOT_NEEDED, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
            [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
        ]
        assert await controller.elect_leaders(0, {}) == []


async def test_unclean_election_through_elect_leaders(tmp_path: Path) -> None:
    async with controller_with(
        tmp_path,
        partition(0, [3, 2], [3], NO_LEADER),  # ISR only the fenced broker 3
        partition(1, [3], [3], NO_LEADER),  # no live replica at all
    ) as controller:
        results = await controller.elect_leaders(1, {"t": [0, 1]})
        assert [p.error for p in results[0].partitions] == [
            ErrorCode.NO_ERROR,
            ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE,
        ]
        elected = parts(controller)[0]
        assert (elected.leader, elected.isr, elected.leader_recovery_state) == (
            2,
            (2,),
            RECOVERING,
        )
        with pytest.raises(KafkaError) as caught:
            await controller.elect_leaders(7, None)
        assert caught.value.code == ErrorCode.INVALID_REQUEST


async def test_alter_partition_whole_request_errors(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        item = AlterPartitionItem(TOPIC_ID, 0, 0, 0, ((1, 10),))
        with pytest.raises(KafkaError) as caught:
            await controller.handle_alter_partition(1, 11, [item])
        assert caught.value.code == ErrorCode.STALE_BROKER_EPOCH
        with pytest.raises(KafkaError) as caught:
            await controller.handle_alter_partition(4, 40, [item])
        assert caught.value.code == ErrorCode.STALE_BROKER_EPOCH
        assert await controller.handle_alter_partition(1, 11, []) == []
        results = await controller.handle_alter_partition(1, 10, [item, item])
        # The second sees the first's change: its partition epoch is stale.
        assert [(r.error, r.isr, r.partition_epoch) for r in results] == [
            (ErrorCode.NO_ERROR, (1,), 1),
            (ErrorCode.INVALID_UPDATE_VERSION, (), -1),
        ]
        # The same ISR again: nothing written, the current state answered.
        again = AlterPartitionItem(TOPIC_ID, 0, 0, 1, ((1, 10),))
        end = controller.applied_offset
        results = await controller.handle_alter_partition(1, 10, [again])
        assert (results[0].error, results[0].partition_epoch) == (ErrorCode.NO_ERROR, 1)
        assert controller.applied_offset == end


async def test_the_leader_rebalance_moves_partitions_to_their_preferred_leader(
    tmp_path: Path,
) -> None:
    async with controller_with(
        tmp_path, partition(0, [1, 2], [1, 2], 2), partition(1, [2, 1], [2], 2)
    ) as controller:
        assert await controller.balance_partition_leaders() == 1
        assert parts(controller)[0].leader == 1
        assert await controller.balance_partition_leaders() == 0


async def test_create_topics_places_on_unfenced_brokers_and_checks_configs(tmp_path: Path) -> None:
    async with controller_with(tmp_path) as controller:
        results = await controller.create_topics(
            [
                CreateTopicRequest("two", num_partitions=4, replication_factor=2),
                CreateTopicRequest("three", replication_factor=3),
                CreateTopicRequest("manual", assignments={0: [3, 2], 1: [1, 2]}),
                CreateTopicRequest("all-fenced", assignments={0: [3]}),
                CreateTopicRequest("minisr", configs={"min.insync.replicas": "0"}),
                CreateTopicRequest("unclean", configs={"unclean.leader.election.enable": "x"}),
                CreateTopicRequest(
                    "ok",
                    configs={"min.insync.replicas": "2", "unclean.leader.election.enable": "true"},
                ),
            ]
        )
        assert [r.error for r in results] == [
            ErrorCode.NO_ERROR,
            ErrorCode.INVALID_REPLICATION_FACTOR,
            ErrorCode.NO_ERROR,
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            ErrorCode.INVALID_CONFIG,
            ErrorCode.INVALID_CONFIG,
            ErrorCode.NO_ERROR,
        ]
        assert results[1].message == (
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 "
            "cannot be reached because only 2 broker(s) are registered."
        )
        two = controller.image.topics["two"].partitions
        assert all(sorted(p.replicas) == [1, 2] and p.isr == p.replicas for p in two.values())
        assert sorted(p.leader for p in two.values()) == [1, 1, 2, 2]
        manual = controller.image.topics["manual"].partitions
        # A fenced broker in a manual assignment is a replica outside the ISR.
        assert (manual[0].replicas, manual[0].isr, manual[0].leader) == ((3, 2), (2,), 2)
        assert controller.image.topic_config("ok")["unclean.leader.election.enable"] == "true"
