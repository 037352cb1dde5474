"""Partition: one hosted topic-partition, its log, leadership and high watermark.

Mirrors Kafka's ``Partition``. The leader epoch and replica set come from the metadata image
(``update``). Invariant: ``log_start_offset <= high_watermark <= log_end_offset``. With one
replica in the ISR the high watermark advances to the log end offset on every append; the
replication layer generalises this to the minimum log end offset over the ISR.
"""

from __future__ import annotations

import uuid

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import Log, LogAppendInfo, LogConfig
from pykbroker.log.record_batch import AppendOrigin
from pykbroker.metadata.image import PartitionRegistration


class Partition:
    """A topic-partition hosted on this broker."""

    def __init__(self, tp: tuple[str, int], topic_id: uuid.UUID, log: Log) -> None:
        self.topic, self.index = tp
        self.topic_id = topic_id
        self.log = log
        self.leader_id = -1
        self.leader_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.is_leader = False

    def update(self, registration: PartitionRegistration, node_id: int, config: LogConfig) -> None:
        """Apply the partition's registration from the metadata image."""
        self.leader_id = registration.leader
        self.leader_epoch = registration.leader_epoch
        self.replicas = registration.replicas
        self.isr = registration.isr
        self.is_leader = registration.leader == node_id
        self.log.config = config
        if self.is_leader and self.isr == (node_id,):
            self.log.high_watermark = self.log.log_end_offset

    def check_leader_epoch(self, requested: int) -> None:
        """Kafka's leader-epoch fencing of produce/fetch/list-offsets (KIP-320)."""
        if requested < 0 or requested == self.leader_epoch:
            return
        if requested < self.leader_epoch:
            raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH)
        raise KafkaError(ErrorCode.UNKNOWN_LEADER_EPOCH)

    @property
    def last_stable_offset(self) -> int:
        """Kafka's LSO: the first offset of the oldest open transaction (from the log's
        producer state) when that is below the high watermark, else the high watermark."""
        high_watermark = self.log.high_watermark
        first_unstable = self.log.producer_state.first_unstable_offset()
        if first_unstable is not None and first_unstable < high_watermark:
            return first_unstable
        return high_watermark

    def append_as_leader(
        self,
        records: bytes | memoryview,
        now_ms: int,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        info = self.log.append_as_leader(records, self.leader_epoch, now_ms, origin=origin)
        if self.isr == (self.leader_id,):
            self.log.high_watermark = self.log.log_end_offset
        return info
