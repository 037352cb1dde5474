"""The group coordinator's storage contract: the ``__consumer_offsets`` partitions.

Mirrors what Kafka's coordinator runtime needs from a partition (``PartitionWriter``: append
records, transactional or not, and append a transaction marker) and from loading
(``CoordinatorLoader``: every batch with its producer, markers included, oldest first). The
broker's implementation is ``server.internal_topic.InternalTopicLog``; tests use an in-memory
one. A transactional batch carries the producer id and epoch of the TxnOffsetCommit that
wrote it; a marker batch (``commit`` True/False) ends that producer's transaction there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .result import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record

__all__ = ["CoordinatorBatch", "CoordinatorLog"]


@dataclass(frozen=True, slots=True)
class CoordinatorBatch:
    """One batch of a ``__consumer_offsets`` partition as loading sees it: its records, the
    producer of a transactional batch, or a transaction marker (``commit`` True/False for a
    COMMIT/ABORT control batch, None for a data batch)."""

    records: Sequence[Record]
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    is_transactional: bool = False
    commit: bool | None = None


class CoordinatorLog(Protocol):
    """Where the coordinator's records live: the ``__consumer_offsets`` partitions."""

    async def ensure_topic(self) -> None:
        """Create ``__consumer_offsets`` if missing (compacted, offsets.topic.num.partitions)."""
        ...

    async def append(
        self,
        partition: int,
        records: Sequence[Record],
        *,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> None:
        """Append one batch durably (a transactional batch of the producer when
        ``producer_id`` is given); raise ``KafkaError`` on failure."""
        ...

    async def append_marker(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> None:
        """Append a COMMIT/ABORT transaction marker; raise ``KafkaError`` on failure."""
        ...

    def read_batches(self, partition: int) -> Iterable[CoordinatorBatch]:
        """Every batch of a partition, oldest first ([] if the partition does not exist)."""
        ...
