"""Replica placement for new partitions: Kafka's ``StripedReplicaPlacer`` without racks.

Each placement shuffles the usable brokers (with the controller's ``random.Random``) and starts
at a random offset; partition ``k`` of the request gets ``replication_factor`` consecutive
brokers of that list starting one further than partition ``k - 1``, so leaders (the first
replica) and followers are striped evenly. After as many partitions as there are brokers the
list is shuffled again (as Kafka's placer does, so large topics do not repeat one pattern).

Differences from Kafka, on purpose: racks (``broker.rack``) are ignored, and only unfenced
brokers are usable -- Kafka also places replicas on fenced brokers (after the unfenced ones,
outside the ISR) and counts them for the replication factor check; pykbroker rejects a
replication factor above the number of unfenced brokers. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pykbroker.api.protocol.errors import ErrorCode, KafkaError


class InvalidReplicationFactor(KafkaError):
    """INVALID_REPLICATION_FACTOR with Kafka's message (``InvalidReplicationFactorException``)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_REPLICATION_FACTOR, message)


def check_replication_factor(replication_factor: int, usable_brokers: int) -> None:
    """Raise ``InvalidReplicationFactor`` unless ``replication_factor`` can be placed."""
    if replication_factor <= 0:
        raise InvalidReplicationFactor(
            f"Invalid replication factor {replication_factor}: the replication factor must be "
            "positive."
        )
    if usable_brokers == 0:
        raise InvalidReplicationFactor("All brokers are currently fenced.")
    if replication_factor > usable_brokers:
        raise InvalidReplicationFactor(
            f"The target replication factor of {replication_factor} cannot be reached because "
            f"only {usable_brokers} broker(s) are registered."
        )


class StripedReplicaPlacer:
    """Places the replicas of new partitions (Kafka's ``ReplicaPlacer`` interface)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()

    def place(
        self, num_partitions: int, replication_factor: int, brokers: Sequence[int]
    ) -> list[list[int]]:
        """Replica lists (leader first) for ``num_partitions`` new partitions over ``brokers``
        (the unfenced ones); ``InvalidReplicationFactor`` if that cannot be done."""
        check_replication_factor(replication_factor, len(brokers))
        order = list(brokers)
        self.rng.shuffle(order)
        offset = self.rng.randrange(len(order))
        placements: list[list[int]] = []
        for index in range(num_partitions):
            if index and index % len(order) == 0 and len(order) > 1:
                self.rng.shuffle(order)
                offset = self.rng.randrange(len(order))
            start = offset + index
            placements.append([order[(start + i) % len(order)] for i in range(replication_factor)])
        return placements
