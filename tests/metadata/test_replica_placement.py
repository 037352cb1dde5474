"""StripedReplicaPlacer: replicas spread round-robin from a random start over racks, every
broker leads its share, the replication factor bounded by the usable brokers (Kafka's messages)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.image import BrokerRegistration, MetadataImage
from pykbroker.metadata.replica_placement import (
    InvalidReplicationFactor,
    StripedReplicaPlacer,
    usable_brokers,
)


@pytest.mark.parametrize("seed", range(5))
def test_replicas_are_distinct_and_leaders_striped(seed: int) -> None:
    placer = StripedReplicaPlacer(random.Random(seed))
    placements = placer.place(6, 3, [1, 2, 3])
    assert len(placements) == 6
    for replicas in placements:
        assert sorted(replicas) == [1, 2, 3]
    # Every broker leads its share, and consecutive partitions start one broker further.
    assert Counter(r[0] for r in placements) == {1: 2, 2: 2, 3: 2}
    assert len({r[0] for r in placements[:3]}) == 3


def test_a_replication_factor_below_the_broker_count_spreads_followers() -> None:
    placements = StripedReplicaPlacer(random.Random(7)).place(5, 2, [1, 2, 3, 4, 5])
    assert all(len(set(r)) == 2 for r in placements)
    assert Counter(b for r in placements for b in r) == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}


def test_the_start_is_random() -> None:
    firsts = {
        StripedReplicaPlacer(random.Random(s)).place(1, 1, [1, 2, 3])[0][0] for s in range(30)
    }
    assert firsts == {1, 2, 3}


@pytest.mark.parametrize(
    ("factor", "brokers", "message"),
    [
        (0, [1], "Invalid replication factor 0: the replication factor must be positive."),
        (1, [], "All brokers are currently fenced."),
        (
            4,
            [1, 2, 3],
            "The target replication factor of 4 cannot be reached because only 3 broker(s) are "
            "registered.",
        ),
    ],
)
def test_impossible_replication_factors(factor: int, brokers: list[int], message: str) -> None:
    with pytest.raises(InvalidReplicationFactor) as caught:
        StripedReplicaPlacer(random.Random(0)).place(1, factor, brokers)
    assert caught.value.code == ErrorCode.INVALID_REPLICATION_FACTOR
    assert caught.value.message == message


@pytest.mark.parametrize("seed", range(10))
def test_replicas_land_on_distinct_racks(seed: int) -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    placements = StripedReplicaPlacer(random.Random(seed)).place(12, 3, racks)
    for replicas in placements:
        assert len(set(replicas)) == 3
        assert sorted(racks[b] for b in replicas) == ["a", "b", "c"]
    # Leadership is still spread over every broker.
    assert Counter(r[0] for r in placements) == dict.fromkeys(racks, 2)


def test_more_replicas_than_racks_use_every_rack_first() -> None:
    racks = {1: "a", 2: "a", 3: "a", 4: "b"}
    for replicas in StripedReplicaPlacer(random.Random(3)).place(8, 2, racks):
        assert {racks[b] for b in replicas} == {"a", "b"}


def test_usable_brokers_skip_fenced_and_shutting_down_brokers() -> None:
    image = MetadataImage(
        brokers={
            1: BrokerRegistration(1, "h", 1, "r1", fenced=False),
            2: BrokerRegistration(2, "h", 2, None, fenced=True),
            3: BrokerRegistration(3, "h", 3, "r3", fenced=False, in_controlled_shutdown=True),
            4: BrokerRegistration(4, "h", 4, None, fenced=False),
        }
    )
    assert usable_brokers(image) == {1: "r1", 4: None}
