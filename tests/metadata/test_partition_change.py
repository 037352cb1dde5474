"""Leader election and ISR rules of the controller, pure: PartitionChangeBuilder (online,
preferred and unclean elections, the ISR never empty), the changes for a fenced / unfenced
broker, preferred leader rebalance, AlterPartition validation, and how a PartitionChangeRecord
moves the epochs when replayed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata import schemas
from pykbroker.metadata.image import TOPIC_RESOURCE, MetadataImage, PartitionRegistration
from pykbroker.metadata.leader_election import (
    broker_fenced_changes,
    broker_unfenced_changes,
    preferred_leader_changes,
)
from pykbroker.metadata.partition_change import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    RECOVERING,
    Election,
    PartitionChangeBuilder,
)
from pykbroker.metadata.records import MetadataRecord, record
from pykbroker.metadata.replication_control import AlterPartitionItem, validate_alter_partition

TOPIC_ID = uuid.UUID(int=7)


def reg(
    replicas: tuple[int, ...], isr: tuple[int, ...], leader: int, epoch: int = 3
) -> PartitionRegistration:
    return PartitionRegistration(replicas, isr, leader, epoch, 10)


def change(partition: PartitionRegistration, **kwargs: Any) -> dict[str, Any] | None:
    live = kwargs.pop("live", {1, 2, 3})
    builder = PartitionChangeBuilder(partition, TOPIC_ID, 0, lambda r: r in live)
    if "election" in kwargs:
        builder.set_election(kwargs.pop("election"))
    if "isr" in kwargs:
        builder.set_target_isr(kwargs.pop("isr"))
    built = builder.build()
    return None if built is None else built.data


def test_the_current_leader_stays_when_still_eligible() -> None:
    assert change(reg((1, 2, 3), (1, 2, 3), 2)) is None
    data = change(reg((1, 2, 3), (1, 2, 3), 2), isr=[2, 3])
    assert data is not None
    assert (data["isr"], data["leader"]) == ([2, 3], NO_LEADER_CHANGE)


def test_a_dead_leader_is_replaced_by_the_first_isr_member_in_replica_order() -> None:
    data = change(reg((1, 2, 3), (3, 2, 1), 1), isr=[3, 2], live={2, 3})
    assert data is not None
    assert (data["leader"], data["isr"]) == (2, [3, 2])


def test_the_isr_keeps_its_last_member_and_the_partition_goes_offline() -> None:
    data = change(reg((1, 2), (1,), 1), isr=[], live={2})
    assert data is not None
    assert data["leader"] == NO_LEADER
    assert data["isr"] is None  # unchanged: [1]


def test_unclean_election_takes_a_live_replica_outside_the_isr() -> None:
    data = change(reg((1, 2), (1,), 1), isr=[], live={2}, election=Election.UNCLEAN)
    assert data is not None
    assert (data["leader"], data["isr"], data["leader_recovery_state"]) == (2, [2], RECOVERING)
    # Nothing live at all: no leader, even unclean.
    data = change(reg((1, 2), (1,), 1), isr=[], live=set(), election=Election.UNCLEAN)
    assert data is not None
    assert data["leader"] == NO_LEADER


def test_preferred_election() -> None:
    data = change(reg((1, 2, 3), (1, 2, 3), 2), election=Election.PREFERRED)
    assert data is not None
    assert data["leader"] == 1
    # The preferred replica out of the ISR or dead: the current leader stays (no change).
    assert change(reg((1, 2, 3), (2, 3), 2), election=Election.PREFERRED) is None
    assert change(reg((1, 2, 3), (1, 2, 3), 2), election=Election.PREFERRED, live={2, 3}) is None


def test_replaying_a_change_moves_the_epochs_as_kafka() -> None:
    old = reg((1, 2, 3), (1, 2, 3), 1, epoch=4)
    isr_only = old.merge({"isr": [1, 2], "leader": NO_LEADER_CHANGE})
    assert (isr_only.leader_epoch, isr_only.partition_epoch, isr_only.isr) == (4, 11, (1, 2))
    # Naming a leader bumps the leader epoch, even the same leader.
    same = old.merge({"leader": 1})
    assert (same.leader, same.leader_epoch, same.partition_epoch) == (1, 5, 11)
    unclean = old.merge({"leader": 3, "isr": [3], "leader_recovery_state": RECOVERING})
    assert (unclean.leader, unclean.isr, unclean.leader_recovery_state) == (3, (3,), RECOVERING)


# --- whole images ----------------------------------------------------------------------------


def broker(broker_id: int, fenced: bool = False) -> MetadataRecord:
    return record(
        schemas.REGISTER_BROKER_RECORD,
        broker_id=broker_id,
        incarnation_id=uuid.UUID(int=broker_id),
        broker_epoch=broker_id * 100,
        end_points=[],
        features=[],
        rack=None,
        fenced=fenced,
    )


def partition_record(index: int, replicas: list[int], isr: list[int]) -> MetadataRecord:
    return record(
        schemas.PARTITION_RECORD,
        partition_id=index,
        topic_id=TOPIC_ID,
        replicas=replicas,
        isr=isr,
        removing_replicas=[],
        adding_replicas=[],
        leader=isr[0] if isr else NO_LEADER,
        leader_epoch=0,
        partition_epoch=0,
        directories=[],
    )


def image(*records: MetadataRecord, unclean: str | None = None) -> MetadataImage:
    configs = []
    if unclean is not None:
        configs.append(
            record(
                schemas.CONFIG_RECORD,
                resource_type=TOPIC_RESOURCE,
                resource_name="t",
                name="unclean.leader.election.enable",
                value=unclean,
            )
        )
    return MetadataImage().apply(
        [
            broker(1),
            broker(2),
            broker(3),
            record(schemas.TOPIC_RECORD, name="t", topic_id=TOPIC_ID),
            *configs,
            *records,
        ],
        0,
    )


def fence(before: MetadataImage, broker_id: int, unclean: bool = False) -> MetadataImage:
    changes = broker_fenced_changes(before, broker_id, unclean)
    fenced = record(schemas.FENCE_BROKER_RECORD, id=broker_id, epoch=broker_id * 100)
    return before.apply([*changes, fenced])


def parts(img: MetadataImage) -> dict[int, PartitionRegistration]:
    return dict(img.topics["t"].partitions)


def test_fencing_moves_leadership_and_shrinks_the_isr() -> None:
    start = image(
        partition_record(0, [1, 2, 3], [1, 2, 3]),
        partition_record(1, [2, 1, 3], [2, 1, 3]),
        partition_record(2, [1], [1]),
        partition_record(3, [2, 3], [2, 3]),
    )
    after = parts(fence(start, 1))
    assert (after[0].leader, after[0].isr, after[0].leader_epoch) == (2, (2, 3), 1)
    assert (after[1].leader, after[1].isr, after[1].leader_epoch) == (2, (2, 3), 0)
    assert (after[2].leader, after[2].isr, after[2].leader_epoch) == (NO_LEADER, (1,), 1)
    assert after[3] == parts(start)[3]  # untouched: no record
    assert all(p.partition_epoch == 1 for i, p in after.items() if i != 3)
    # A second broker fenced: partition 0 keeps its last ISR member and goes offline.
    twice = parts(fence(fence(start, 1), 2))
    assert (twice[0].leader, twice[0].isr) == (3, (3,))
    assert (twice[3].leader, twice[3].isr) == (3, (3,))
    thrice = parts(fence(fence(fence(start, 1), 2), 3))
    assert (thrice[0].leader, thrice[0].isr) == (NO_LEADER, (3,))


def test_unfencing_gives_leaderless_partitions_their_leader_back() -> None:
    fenced = fence(image(partition_record(0, [1, 2], [1, 2])), 1)
    fenced = fence(fenced, 2)
    assert parts(fenced)[0].leader == NO_LEADER
    assert parts(fenced)[0].isr == (2,)
    # Broker 1 comes back: not in the ISR, so the partition stays offline (clean election).
    assert broker_unfenced_changes(fenced, 1) == []
    # Broker 2 comes back: it is the ISR, it leads with a new epoch.
    changes = broker_unfenced_changes(fenced, 2)
    back = fenced.apply([record(schemas.UNFENCE_BROKER_RECORD, id=2, epoch=200), *changes])
    assert (parts(back)[0].leader, parts(back)[0].leader_epoch) == (2, 3)


@pytest.mark.parametrize(("topic_config", "broker_default"), [("true", False), (None, True)])
def test_unclean_leader_election_when_enabled(
    topic_config: str | None, broker_default: bool
) -> None:
    start = image(partition_record(0, [1, 2, 3], [1]), unclean=topic_config)
    after = parts(fence(start, 1, unclean=broker_default))[0]
    assert (after.leader, after.isr, after.leader_recovery_state) == (2, (2,), RECOVERING)


def test_unclean_leader_election_is_off_by_default_and_per_topic() -> None:
    start = image(partition_record(0, [1, 2, 3], [1]), unclean="false")
    after = parts(fence(start, 1, unclean=True))[0]
    assert (after.leader, after.isr) == (NO_LEADER, (1,))


def test_preferred_leader_changes() -> None:
    start = image(
        record(
            schemas.PARTITION_RECORD, **{**partition_record(0, [1, 2], [1, 2]).data, "leader": 2}
        ),
        record(schemas.PARTITION_RECORD, **{**partition_record(1, [3, 2], [2]).data, "leader": 2}),
        partition_record(2, [2, 1], [2, 1]),
    )
    changes = preferred_leader_changes(start, 10)
    assert [(c.data["partition_id"], c.data["leader"]) for c in changes] == [(0, 1)]
    assert preferred_leader_changes(start, 0) == []


# --- AlterPartition validation ----------------------------------------------------------------


def item(
    isr: list[tuple[int, int]], leader_epoch: int = 3, partition_epoch: int = 10
) -> AlterPartitionItem:
    return AlterPartitionItem(TOPIC_ID, 0, leader_epoch, partition_epoch, tuple(isr))


@pytest.mark.parametrize(
    ("sender", "request_item", "expected"),
    [
        (1, item([(1, -1), (2, -1)]), ErrorCode.NO_ERROR),
        (1, item([(1, 100), (2, 200)]), ErrorCode.NO_ERROR),
        (1, item([(1, -1)], leader_epoch=4), ErrorCode.NOT_CONTROLLER),
        (1, item([(1, -1)], partition_epoch=11), ErrorCode.NOT_CONTROLLER),
        (1, item([(1, -1)], leader_epoch=2), ErrorCode.FENCED_LEADER_EPOCH),
        (2, item([(1, -1)]), ErrorCode.INVALID_REQUEST),
        (1, item([(1, -1)], partition_epoch=9), ErrorCode.INVALID_UPDATE_VERSION),
        (1, item([(1, -1), (4, -1)]), ErrorCode.INVALID_REQUEST),
        (1, item([(1, -1), (1, -1)]), ErrorCode.INVALID_REQUEST),
        (1, item([(2, -1)]), ErrorCode.INVALID_REQUEST),
        (1, item([(1, -1), (3, -1)]), ErrorCode.INELIGIBLE_REPLICA),
        (1, item([(1, -1), (2, 201)]), ErrorCode.INELIGIBLE_REPLICA),
    ],
)
def test_alter_partition_validation(
    sender: int, request_item: AlterPartitionItem, expected: ErrorCode
) -> None:
    img = MetadataImage().apply([broker(1), broker(2), broker(3, fenced=True)], 0)
    partition = PartitionRegistration((1, 2, 3), (1, 2), 1, 3, 10)
    assert validate_alter_partition(img, sender, partition, request_item, 3) == expected


def test_alter_partition_validation_of_old_versions_and_unknown_partitions() -> None:
    img = MetadataImage().apply([broker(1), broker(2), broker(3, fenced=True)], 0)
    partition = PartitionRegistration((1, 2, 3), (1, 2), 1, 3, 10)
    fenced_member = item([(1, -1), (3, -1)])
    assert validate_alter_partition(img, 1, partition, fenced_member, 1) == (
        ErrorCode.OPERATION_NOT_ATTEMPTED
    )
    assert validate_alter_partition(img, 1, None, fenced_member, 3) == (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )


def test_the_leader_reports_recovery_after_an_unclean_election() -> None:
    recovering = PartitionRegistration((1, 2), (2,), 2, 4, 10, RECOVERING)
    built = (
        PartitionChangeBuilder(recovering, TOPIC_ID, 0, lambda r: True)
        .set_target_isr([2, 1])
        .set_target_leader_recovery_state(0)
        .build()
    )
    assert built is not None
    assert (built.data["isr"], built.data["leader_recovery_state"]) == ([2, 1], 0)
    assert recovering.merge(built.data).leader_recovery_state == 0
