"""StripedReplicaPlacer: replicas spread round-robin from a random start, every broker leads
its share, the replication factor bounded by the usable brokers (Kafka's messages)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.replica_placement import InvalidReplicationFactor, StripedReplicaPlacer


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
