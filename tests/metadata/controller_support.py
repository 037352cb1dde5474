"""Test support: a QuorumController on a one-voter Raft that commits every append at once,
and the metadata records tests build its starting image from."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from pykbroker.metadata import schemas
from pykbroker.metadata.controller import QuorumController
from pykbroker.metadata.image import MetadataImage
from pykbroker.metadata.metadata_log import MetadataLog
from pykbroker.metadata.records import MetadataRecord, record
from pykbroker.raft import LeaderAndEpoch
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog


class CommittingRaft:
    """A one-voter Raft leader that commits each batch as soon as it is appended."""

    def __init__(self, log: KafkaReplicatedLog, leader: int = 1) -> None:
        self.log = log
        self.leader_and_epoch = LeaderAndEpoch(leader, 1)
        self.controller: QuorumController | None = None
        self.batches = 0

    def append(self, records: Sequence[bytes]) -> int:
        self.batches += 1
        offset = self.log.append_as_leader(list(records), 1).last_offset
        assert self.controller is not None
        self.controller.handle_commit(self.log.log_end_offset)
        return offset


def broker_record(broker_id: int, *, fenced: bool = False) -> MetadataRecord:
    """A RegisterBrokerRecord without endpoints; the broker epoch is ``broker_id * 10``."""
    return record(
        schemas.REGISTER_BROKER_RECORD,
        broker_id=broker_id,
        incarnation_id=uuid.UUID(int=broker_id),
        broker_epoch=broker_id * 10,
        end_points=[],
        features=[],
        rack=None,
        fenced=fenced,
    )


def partition_record(
    topic_id: uuid.UUID,
    index: int,
    replicas: list[int],
    isr: list[int],
    leader: int,
    *,
    adding: Sequence[int] = (),
    removing: Sequence[int] = (),
) -> MetadataRecord:
    """A PartitionRecord at leader epoch and partition epoch 0."""
    return record(
        schemas.PARTITION_RECORD,
        partition_id=index,
        topic_id=topic_id,
        replicas=replicas,
        isr=isr,
        removing_replicas=list(removing),
        adding_replicas=list(adding),
        leader=leader,
        leader_epoch=0,
        partition_epoch=0,
        directories=[],
    )


@asynccontextmanager
async def committing_controller(
    tmp_path: Path, records: Sequence[MetadataRecord]
) -> AsyncIterator[tuple[QuorumController, CommittingRaft]]:
    """The active controller (node 1) of a one-voter quorum whose image starts as ``records``."""
    log = KafkaReplicatedLog.open(tmp_path / METADATA_PARTITION_DIR)
    raft = CommittingRaft(log)
    controller = QuorumController(
        MetadataLog(log.log),
        raft,
        node_id=1,
        default_num_partitions=1,
        default_replication_factor=1,
        clock=lambda: 0,
        commit_timeout_ms=5000,
        rng=random.Random(1),
    )
    raft.controller = controller
    controller.image = MetadataImage().apply(list(records), -1)
    controller.handle_leader_change(raft.leader_and_epoch)
    assert controller.is_active
    try:
        yield controller, raft
    finally:
        log.close()
