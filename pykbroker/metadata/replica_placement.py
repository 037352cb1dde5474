"""Replica placement for new partitions: Kafka's rack-aware ``StripedReplicaPlacer``.

The usable brokers (registered, unfenced and not in controlled shutdown) are grouped by
``broker.rack`` (brokers without one form one rack); racks and the brokers of each rack are
shuffled with the controller's ``random.Random`` and a rack offset is drawn. Each partition
takes its first replica from the rack at the offset and the next replicas from the following
racks in turn, one broker per rack per round, so replicas land on as many racks as possible;
within a rack, each partition starts one broker further (Kafka's ``BrokerList`` epochs), so
leaders (the first replica) and followers are striped evenly. After as many partitions as
there are brokers, racks and brokers are shuffled again (so large topics do not repeat one
pattern). Without racks this is Kafka's plain striping.

Difference from Kafka, on purpose: only usable brokers are placed on -- Kafka also places
replicas on fenced brokers (after the unfenced ones, outside the ISR) and counts them for the
replication factor check; pykbroker rejects a replication factor above the number of usable
brokers. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from pykbroker.api.protocol.errors import ErrorCode, KafkaError

from .image import MetadataImage


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


class _BrokerList:
    """The brokers of one rack (Kafka's ``StripedReplicaPlacer.BrokerList``)."""

    def __init__(self) -> None:
        self.brokers: list[int] = []
        self._epoch = 0
        self._index = 0
        self._offset = 0

    def next(self, epoch: int) -> int:
        """The next broker of this rack for the partition of ``epoch`` (-1: none left)."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._index = 0
            self._offset = (self._offset + 1) % len(self.brokers)
        if self._index >= len(self.brokers):
            return -1
        broker = self.brokers[(self._index + self._offset) % len(self.brokers)]
        self._index += 1
        return broker

    def shuffle(self, rng: random.Random) -> None:
        rng.shuffle(self.brokers)
        self._offset = rng.randrange(len(self.brokers)) if self.brokers else 0


class _RackList:
    """Every usable broker by rack (Kafka's ``StripedReplicaPlacer.RackList``)."""

    def __init__(self, rng: random.Random, brokers: Mapping[int, str | None]) -> None:
        self.rng = rng
        self.by_rack: dict[str, _BrokerList] = {}
        for broker_id in sorted(brokers):
            self.by_rack.setdefault(brokers[broker_id] or "", _BrokerList()).brokers.append(
                broker_id
            )
        self.racks = sorted(self.by_rack)
        self.num_brokers = len(brokers)
        self._epoch = 0
        self._offset = 0
        self._shuffle()

    def _shuffle(self) -> None:
        self.rng.shuffle(self.racks)
        for rack in self.racks:
            self.by_rack[rack].shuffle(self.rng)
        self._offset = self.rng.randrange(len(self.racks)) if self.racks else 0

    def place(self, replication_factor: int) -> list[int]:
        if self._epoch == self.num_brokers and self.num_brokers > 1:
            self._shuffle()
            self._epoch = 0
        if self._offset == len(self.racks):
            self._offset = 0
        placed: list[int] = []
        first = self._offset
        while True:  # bounded: some rack has a broker for a new epoch
            broker = self.by_rack[self.racks[first]].next(self._epoch)
            if broker >= 0:
                placed.append(broker)
                break
            first = (first + 1) % len(self.racks)
        rack = self._offset
        while len(placed) < replication_factor:  # bounded: replication factor <= brokers
            rack = (rack + 1) % len(self.racks)
            broker = self.by_rack[self.racks[rack]].next(self._epoch)
            if broker >= 0:
                placed.append(broker)
        self._epoch += 1
        self._offset += 1
        return placed


def usable_brokers(image: MetadataImage) -> dict[int, str | None]:
    """Broker id -> rack of the brokers new replicas may be placed on: registered, unfenced
    and not in controlled shutdown (Kafka's ``BrokerHeartbeatManager.usableBrokers``)."""
    return {
        broker_id: reg.rack for broker_id, reg in sorted(image.brokers.items()) if reg.is_active
    }


class StripedReplicaPlacer:
    """Places the replicas of new partitions (Kafka's ``ReplicaPlacer`` interface)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()

    def place(
        self,
        num_partitions: int,
        replication_factor: int,
        brokers: Mapping[int, str | None] | Sequence[int],
    ) -> list[list[int]]:
        """Replica lists (leader first) for ``num_partitions`` new partitions over ``brokers``
        (usable broker id -> rack, or just ids: no racks); ``InvalidReplicationFactor`` if
        that cannot be done."""
        racks: Mapping[int, str | None] = (
            brokers if isinstance(brokers, Mapping) else dict.fromkeys(brokers)
        )
        check_replication_factor(replication_factor, len(racks))
        rack_list = _RackList(self.rng, racks)
        return [rack_list.place(replication_factor) for _ in range(num_partitions)]
